"""Two ``torchrun`` "nodes" on 127.0.0.1 (``num_nodes=2, devices=1``): one launch of ``tests/ddp_scripts/multinode.py``.

The command lines are the ones docs/scaling.md gives for a real 2-node job (there, each on its node).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, SCRIPTS, make_data, script_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def torchrun_command(node_rank: int, port: int) -> list[str]:
    """``torchrun`` for node ``node_rank`` of 2, one process a node, rendezvous at 127.0.0.1:``port``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
            "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
            str(SCRIPTS / "multinode.py")]  # fmt: skip


@pytest.mark.ddp
def test_two_torchrun_nodes(tmp_path: Path) -> None:
    port = _free_port()
    env, pipe = script_env(), subprocess.PIPE
    procs = [
        subprocess.Popen(torchrun_command(r, port), cwd=tmp_path, env=env, stdout=pipe, stderr=pipe, text=True)
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"{out[-3000:]}\n{err[-5000:]}"
    results = [json.loads((tmp_path / f"result_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in results] == [(0, 2), (1, 2)]
    # Cancels raised on global rank 1 only take effect on both nodes: same steps, same weights.
    # 256 items / 2 ranks / bs 32 = 4 batches an epoch, 2 epochs: one batch refused -> 7 steps;
    # epoch 0 cancelled after its first step -> 1 + 4 = 5.
    expected = {"CancelBatchException": 7, "CancelEpochException": 5}
    for name, steps in expected.items():
        a, b = (r["cancels"][name] for r in results)
        assert (a["fired"], b["fired"]) == (False, True)
        assert a["steps"] == b["steps"] == steps and a["weights"] == b["weights"]
    # One writer: global rank 0 (node 0) wrote the model file; node 1 nothing.
    assert [n.split(".pth")[0].lstrip(".") for n in results[0]["writes"]] == ["multinode"]
    assert results[1]["writes"] == []
    saved = torch.load(tmp_path / "models" / "multinode.pth", weights_only=True)
    flat = torch.cat([v.flatten() for v in saved["model"].values()]).tolist()
    assert flat == results[0]["cancels"]["CancelEpochException"]["weights"]
    # get_preds: the whole validation set, gathered from both nodes, in dataset order.
    valid = make_data(n=256, n_valid=64, bs=32).valid_ds
    valid_y = [int(valid[i][1]) for i in range(64)]
    for r in results:
        assert r["targs"] == valid_y and len(r["preds"]) == 64
    assert results[0]["preds"] == results[1]["preds"]
    # The epoch table, once: node 0 prints both fits' tables, node 1 none.
    headers = [out.count("epoch  train_loss  valid_loss") for out, _ in outs]
    assert headers == [2, 0]


@pytest.mark.ddp
def test_ddp_notebook_from_stdin(tmp_path: Path) -> None:
    """``strategy="ddp_notebook"`` from code with no script file (a notebook cell): forked workers train the model."""
    code = (REPO / "tests" / "scripts" / "notebook_fit.py").read_text()
    proc = subprocess.run([sys.executable, "-"], input=code, cwd=tmp_path, env=script_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["changed"] > 1e-3  # the workers' weights came back to this process
    valid = make_data(n=256, n_valid=64, bs=32).valid_ds
    assert result["targs"] == [int(valid[i][1]) for i in range(64)] and result["n_preds"] == 64
    assert result["values"] == 2  # the Recorder's history comes back from the forked workers too
    assert proc.stdout.count("epoch  train_loss  valid_loss") == 1  # rank 0's table, once

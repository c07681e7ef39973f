"""Guarantees 4 and 5 on 2 CPU processes (gloo): rank-consistent cancels, global values, no hang."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, SCRIPTS, run_script


@pytest.mark.ddp
def test_cancel_on_one_rank_takes_effect_on_all(tmp_path: Path) -> None:
    from tests.fastai_reference import ReferenceLoop

    t0 = time.time()
    r0, r1 = run_script("ddp_cancels", tmp_path, timeout=240)
    assert time.time() - t0 < 240
    for name, c1 in r1["cases"].items():
        c0 = r0["cases"][name]
        assert c1["fired"] and not c0["fired"], name
        assert c0["weights"] == c1["weights"], name  # identical weights
        assert c0["steps"] == c1["steps"], name  # the same optimizer steps
        assert c0["epoch"] == c1["epoch"], name  # the same place reached
        level = {"CancelBatchException": "batch", "CancelBackwardException": "backward",
                 "CancelStepException": "step", "CancelTrainException": "train",
                 "CancelValidException": "validate", "CancelEpochException": "epoch",
                 "CancelFitException": "fit"}[name]  # fmt: skip
        assert f"after_cancel_{level}" in c0["events"], name  # the other rank got the matching event
    # the rank that raised sees fastai's exact trace (3 train / 1 valid batches per rank and epoch)
    import bridge.exceptions as E
    from tests.ddp_scripts.ddp_cancels import CASES  # the cases the launch raised, on rank 1

    for exc, ev, epoch, phase, it in CASES:
        events: list[str] = []
        fired = [False]

        def fire(loop: ReferenceLoop, e: str, exc=exc, ev=ev, epoch=epoch, phase=phase, it=it) -> None:
            events.append(e)
            ph = "train" if loop.training else "valid"
            if not fired[0] and e == ev and loop.epoch == epoch and ph == phase and loop.iter == it:
                fired[0] = True
                raise getattr(E, exc)()

        ReferenceLoop(fire, 2, 3, 1).fit()
        assert r1["cases"][exc]["events"] == events, exc


@pytest.mark.ddp
def test_global_values_equal_single_process(tmp_path: Path) -> None:
    import torch
    from torch.nn import functional as F

    from tests.helpers import make_data, make_model

    r0, r1 = run_script("ddp_global_values", tmp_path, timeout=240)
    assert r0["validate"] == r1["validate"] and r0["preds"] == r1["preds"]
    model = make_model()
    model.load_state_dict({k: torch.tensor(v) for k, v in r0["weights"].items()})
    x, y = make_data(n=128, n_valid=75, bs=16).valid_ds.tensors
    with torch.no_grad():
        pred = model.eval()(x)
    acc = (pred.argmax(-1) == y).float().mean().item()
    expected = [F.cross_entropy(pred, y).item(), acc, acc]
    assert r0["validate"] == pytest.approx(expected, abs=1e-6)
    assert r0["record"][1:] == pytest.approx(expected, abs=1e-6)  # the Recorder's epoch values too
    assert torch.allclose(torch.tensor(r0["preds"]), pred, atol=1e-6)  # whole set, dataset order, no padding
    assert torch.equal(torch.tensor(r0["targs"]), y)


@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_failure_on_one_rank_ends_the_job(tmp_path: Path, strategy: str) -> None:
    script = SCRIPTS / "ddp_fail.py"
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script), strategy], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    elapsed = time.time() - t0
    assert proc.returncode != 0
    assert "rank one exploded at batch 3" in proc.stdout + proc.stderr
    assert elapsed < 60, elapsed


@pytest.mark.ddp
def test_ddp_spawn_returns_what_the_user_needs(tmp_path: Path) -> None:
    (r,) = run_script("ddp_spawn", tmp_path, timeout=240)
    assert len(r["values"]) == 3  # the Recorder's history came back to the calling process
    assert r["best_equal"]  # the best model is the one in memory
    assert r["values"][-1][1] == pytest.approx(r["best_epoch_value"])  # best at the last epoch here
    assert r["valley"] is not None and r["valley"] > 0
    assert r["lr_find_losses"] >= 6  # the lr finder's curve came back too
    # 128 items / 2 ranks / bs 16 = 4 steps per epoch: a save every 2 steps, the epoch's last one at its end
    assert r["step_files"] == [f"step={s}.ckpt" for s in (10, 12, 2, 4, 6, 8)]


@pytest.mark.ddp
def test_checkpoint_and_mid_epoch_resume_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script("ddp_resume", tmp_path, timeout=240)
    for r in (r0, r1):
        assert r["default_ckpt_epoch"] == 2  # the default checkpoint is on under DDP, at each epoch end
        assert r["resumed_seen"][0][:2] == [1, 2]  # resumed with epoch 1's batch 2 ...
        start = r["straight_seen"].index(r["resumed_seen"][0])
        assert r["resumed_seen"] == r["straight_seen"][start:]  # ... and this rank's very shard from there
        assert r["resumed_weights"] == r["straight_weights"]  # bit-identical to the run never stopped
        assert r["resumed_values"] == r["straight_values"]
        assert r["files"] == ["last.ckpt"]  # one file, written whole (no temp debris)
    assert r0["resumed_seen"] != r1["resumed_seen"]  # each rank resumed its own shard
    assert r0["resumed_weights"] == r1["resumed_weights"]

"""FSDP2 (``ModelParallelStrategy`` + ``fully_shard``) on 2 CPU processes: every check against the same DDP run.

One launch (``tests/ddp_scripts/fsdp_checks.py``); see docs/scaling.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from bridge import SGD
from tests.helpers import make_learner, make_model, run_script


def _max_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("fsdp")
    return tmp, run_script("fsdp_checks", tmp, timeout=600)


@pytest.mark.ddp
def test_fsdp_fit_equals_ddp(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = fsdp_run
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        ddp, fsdp = r["ddp"], r["fsdp"]
        assert ddp["sharded"] is False and fsdp["sharded"] is True
        assert _max_diff(ddp["weights"], fsdp["weights"]) < 1e-5
        # GradientClip measured the global norm: 256 items / 2 ranks / bs 32 = 4 steps an epoch, 2 epochs.
        assert len(ddp["norms"]) == len(fsdp["norms"]) == 8
        assert all(n > 0.1 for n in ddp["norms"])  # every step was clipped: the norm decides the weights
        assert max(abs(a - b) for a, b in zip(ddp["norms"], fsdp["norms"], strict=True)) < 1e-6
        assert fsdp["weights"] == results[0]["fsdp"]["weights"]  # every rank sees the same full weights


@pytest.mark.ddp
def test_fsdp_save_once_and_load(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    tmp, results = fsdp_run
    # Global rank 0 wrote every file, each once (SaveModelCallback every epoch, then learn.save); rank 1 none.
    names = [n.split(".pth")[0].lstrip(".") for n in results[0]["writes"]]
    assert names == ["best_ddp_0", "best_ddp_1", "final_ddp", "best_fsdp_0", "best_fsdp_1", "final_fsdp"]
    assert results[1]["writes"] == []
    for r in results:
        assert r["fsdp"]["reloaded"] == r["fsdp"]["weights"]  # learn.load into the sharded model
    # The sharded run's file loads into an unsharded model, in this one process.
    state = torch.load(tmp / "models" / "final_fsdp.pth", weights_only=True)
    assert set(state) == {"model", "opt"} and all(isinstance(k, int) for k in state["opt"]["state"])
    learn = make_learner(tmp, model=make_model(seed=1), opt_func=SGD, lr=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the optimizer state loads too (a failure would warn)
        learn.load("final_fsdp")
    plain = {k: v.flatten().tolist() for k, v in learn.model.state_dict().items()}
    assert _max_diff(plain, results[0]["ddp"]["weights"]) < 1e-5
    assert learn.opt is not None and len(learn.opt.param_groups) == len(state["opt"]["param_groups"]) == 2


@pytest.mark.ddp
def test_fsdp_preds_lr_find_refusal(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = fsdp_run
    for r in results:
        ddp, fsdp = r["ddp"], r["fsdp"]
        assert fsdp["targs"] == ddp["targs"] and len(ddp["targs"]) == 64  # gathered, in dataset order
        assert max(abs(a - b) for a, b in zip(ddp["preds"], fsdp["preds"], strict=True)) < 1e-5
        assert ddp["lr_find_restored"] is True and fsdp["lr_find_restored"] is True
        assert "tensor parallelism (tensor_parallel_size=2) is not supported" in r["tp_refused"]
        assert "does not support" in r["fp16_refused"] and "bf16-mixed" in r["fp16_refused"]  # Lightning's message
        assert _max_diff(ddp["bf16"], fsdp["bf16"]) < 1e-5


@pytest.mark.ddp
def test_fsdp_one_rank_cancels(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = fsdp_run
    cases = results[0]["ddp"]["cancels"]
    assert len(cases) == 4
    for r in results:
        for case, ddp in r["ddp"]["cancels"].items():
            fsdp = r["fsdp"]["cancels"][case]
            assert ddp["fired"] is fsdp["fired"] is (r["rank"] == 1)
            assert _max_diff(ddp["weights"], fsdp["weights"]) < 1e-5, case
    # The cancels changed the run: an epoch cancelled after its first step ends far from a whole epoch's.
    epoch = results[0]["fsdp"]["cancels"]["CancelEpochException/after_step/train/0"]["weights"]
    batch = results[0]["fsdp"]["cancels"]["CancelBatchException/before_batch/valid/0"]["weights"]
    assert _max_diff(epoch, batch) > 1e-4


@pytest.mark.ddp
def test_fsdp_accumulation_and_resume(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = fsdp_run
    for r in results:
        ddp, fsdp = r["ddp"], r["fsdp"]
        assert _max_diff(ddp["accumulated"], fsdp["accumulated"]) < 1e-5
        assert _max_diff(ddp["accumulated"], ddp["weights"]) > 1e-4  # accumulation changed the run
        # Stopped after epoch 1, resumed: only epoch 2 runs, and the run ends as the straight one.
        assert ddp["resumed_epochs"] == fsdp["resumed_epochs"] == [2]
        assert ddp["ckpt_is_dir"] is False and fsdp["ckpt_is_dir"] is True  # Lightning's sharded checkpoint
        assert _max_diff(fsdp["straight"], fsdp["resumed"]) < 1e-6
        assert _max_diff(ddp["straight"], fsdp["resumed"]) < 1e-5


@pytest.mark.ddp
def test_fsdp_user_policy(fsdp_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = fsdp_run
    for r in results:
        assert r["policy"]["calls"] == ["Sequential"]  # applied at the first fit only
        assert _max_diff(r["policy"]["weights"], r["policy"]["ddp_weights"]) < 1e-5

"""FSDP2 (``ModelParallelStrategy`` + ``fully_shard``) on 2 CPU processes: every check against the same DDP run.

One launch of checks (``tests/ddp_scripts/fsdp_checks.py``), after one launch of an FSDP2 fit that is
SIGKILLed in its epoch 2 (``fsdp_killed.py``) and that the checks launch resumes; see docs/scaling.md.
FSDP1 (``strategy="fsdp"``) is refused before any Trainer is built (one process, no GPU needed).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributions import Beta

from bridge import SGD
from bridge.sharding import check_strategy
from callbacks.mixup import _RANK_STRIDE
from tests.ddp_scripts.fsdp_checks import MIX_SEED, ONE_CYCLE_LR, RLR_FACTOR, SET_LR
from tests.helpers import kill_at_marker, make_learner, make_model, run_script

Run = tuple[Path, list[dict[str, Any]], dict[str, Any]]


def _max_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The checks launch (results by rank) and what the kill left: the kill launch runs first, the checks resume it."""
    tmp = tmp_path_factory.mktemp("fsdp")
    try:
        killed: dict[str, Any] = kill_at_marker("fsdp_killed", tmp, "killed_at.json", timeout=300)
    except AssertionError as exc:  # reported by test_fsdp_kill_and_resume; the other checks still run
        killed = {"error": str(exc)}
    else:
        ckpt = tmp / "killed" / "checkpoints" / "last.ckpt"  # read now: the resume rewrites it
        killed["ckpt_files"] = sorted(p.name for p in ckpt.iterdir()) if ckpt.is_dir() else []
        meta = torch.load(ckpt / "meta.pt", weights_only=True) if (ckpt / "meta.pt").exists() else {}
        killed["ckpt_epoch"], killed["ckpt_step"] = meta.get("epoch"), meta.get("global_step")
        killed["debris"] = sorted(p.name for p in (tmp / "killed").rglob("*.tmp"))
        killed["ckpt_link"] = os.readlink(ckpt) if ckpt.is_symlink() else None
        killed["ckpt_dir"] = sorted(p.name for p in ckpt.parent.iterdir())
    args = () if "error" in killed else ("killed",)
    return tmp, run_script("fsdp_checks", tmp, *args, timeout=600), killed


@pytest.mark.ddp
def test_fsdp_fit_equals_ddp(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
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
def test_fsdp_save_once_and_load(fsdp_run: Run) -> None:
    tmp, results, _ = fsdp_run
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
def test_fsdp_preds_lr_find_refusal(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
    for r in results:
        ddp, fsdp = r["ddp"], r["fsdp"]
        assert fsdp["targs"] == ddp["targs"] and len(ddp["targs"]) == 64  # gathered, in dataset order
        assert max(abs(a - b) for a, b in zip(ddp["preds"], fsdp["preds"], strict=True)) < 1e-5
        assert ddp["lr_find_restored"] is True and fsdp["lr_find_restored"] is True
        assert "tensor parallelism (tensor_parallel_size=2) is not supported" in r["tp_refused"]
        assert "does not support" in r["fp16_refused"] and "bf16-mixed" in r["fp16_refused"]  # Lightning's message
        assert _max_diff(ddp["bf16"], fsdp["bf16"]) < 1e-5


@pytest.mark.ddp
def test_fsdp_one_rank_cancels(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
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
def test_fsdp_accumulation_and_resume(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
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
def test_fsdp_user_policy(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
    for r in results:
        assert r["policy"]["calls"] == ["Sequential"]  # applied at the first fit only
        assert _max_diff(r["policy"]["weights"], r["policy"]["ddp_weights"]) < 1e-5


def _cos(start: float, end: float, pos: float) -> float:
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def _one_cycle(pos: float, start: float, middle: float, end: float, pct: float = 0.25) -> float:
    """fastai's ``combined_cos(pct, start, middle, end)`` at ``pos``, written out."""
    return _cos(start, middle, pos / pct) if pos < pct else _cos(middle, end, (pos - pct) / (1 - pct))


@pytest.mark.ddp
def test_fsdp_mixup(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
    for r in results:
        ddp, fsdp = r["ddp"]["mixup"], r["fsdp"]["mixup"]
        assert fsdp["lams"] == ddp["lams"] and len(fsdp["lams"]) == 4  # 128 items a rank, bs 32, 1 epoch
        torch.manual_seed(MIX_SEED + _RANK_STRIDE * r["rank"])  # this rank's stream, drawn here independently
        for lams in fsdp["lams"]:
            lam = Beta(torch.tensor(0.4), torch.tensor(0.4)).sample((len(lams),))
            torch.randperm(len(lams))
            assert lams == torch.where(lam > 1 - lam, lam, 1 - lam).tolist()
        assert _max_diff(ddp["weights"], fsdp["weights"]) < 1e-5
        assert fsdp["weights"] == results[0]["fsdp"]["mixup"]["weights"]
    assert results[0]["fsdp"]["mixup"]["lams"][0] != results[1]["fsdp"]["mixup"]["lams"][0]  # ranks mix differently
    # MixUp changed the run: the same 1-epoch fit unmixed (its only cancel is in validation) ends elsewhere.
    plain = results[0]["fsdp"]["cancels"]["CancelBatchException/before_batch/valid/0"]["weights"]
    assert _max_diff(plain, results[0]["fsdp"]["mixup"]["weights"]) > 1e-4


@pytest.mark.ddp
def test_fsdp_one_cycle_on_the_sharded_optimizer(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
    n, lr = 8, ONE_CYCLE_LR  # 2 epochs of 4 steps; fastai's div 25, div_final 1e5, pct_start 0.25
    want_lr = [_one_cycle(i / n, lr / 25, lr, lr / 1e5) for i in range(n)]
    want_mom = [_one_cycle(i / n, 0.95, 0.85, 0.95) for i in range(n)]
    for r in results:
        for kind in ("ddp", "fsdp"):
            oc = r[kind]["one_cycle"]
            assert len(oc["lrs"]) == len(oc["moms"]) == n and all(len(g) == 2 for g in oc["lrs"])
            assert max(abs(x - w) for g, w in zip(oc["lrs"], want_lr, strict=True) for x in g) < 1e-12
            assert max(abs(x - w) for g, w in zip(oc["moms"], want_mom, strict=True) for x in g) < 1e-12
            # Every step: Lightning stepped learn.opt, whose groups hold the model's parameters (DTensors under FSDP2).
            assert oc["ok"] == [True] * n and oc["dtensors"] == [kind == "fsdp"] * n
        assert _max_diff(r["ddp"]["one_cycle"]["weights"], r["fsdp"]["one_cycle"]["weights"]) < 1e-5
        assert r["fsdp"]["one_cycle"]["weights"] == results[0]["fsdp"]["one_cycle"]["weights"]


@pytest.mark.ddp
def test_fsdp_set_hyper_reduce_lr_and_early_stopping(fsdp_run: Run) -> None:
    _, results, _ = fsdp_run
    # valid_loss never improves by min_delta=1e9 after epoch 0: ReduceLROnPlateau (patience 0) divides the rate set
    # by opt.set_hyper at the end of epochs 1 and 2; EarlyStopping (patience 2) stops the 6-epoch fit after epoch 2.
    want = [SET_LR] * 8 + [SET_LR / RLR_FACTOR] * 4
    for r in results:
        for kind in ("ddp", "fsdp"):
            t = r[kind]["trackers"]
            assert t["epochs"] == [0, 1, 2] and t["stopped"] == 2
            assert t["lrs"] == [[w, w] for w in want]
            assert t["final_lrs"] == [SET_LR / RLR_FACTOR / RLR_FACTOR] * 2
            assert t["ok"] == [True] * 12 and t["dtensors"] == [kind == "fsdp"] * 12
        assert _max_diff(r["ddp"]["trackers"]["weights"], r["fsdp"]["trackers"]["weights"]) < 1e-5
        assert r["fsdp"]["trackers"]["weights"] == results[0]["fsdp"]["trackers"]["weights"]


@pytest.mark.ddp
def test_fsdp_kill_and_resume(fsdp_run: Run) -> None:
    tmp, results, killed = fsdp_run
    assert "error" not in killed, killed.get("error")
    # A real SIGKILL of the whole 2-process job, in epoch 2 (after its batch 1); nothing of it left running.
    assert killed["returncode"] == -signal.SIGKILL and killed["escaped"] == killed["left"] == [], killed
    marker = json.loads((tmp / "killed_at.json").read_text())
    assert (marker["epoch"], marker["iter"]) == (2, 1)
    # What it left: the complete epoch-1 sharded checkpoint (2 epochs of 4 steps), one shard per rank.
    assert (killed["ckpt_epoch"], killed["ckpt_step"]) == (1, 8)
    files = killed["ckpt_files"]
    assert {"meta.pt", ".metadata"} <= set(files) and len([f for f in files if f.endswith(".distcp")]) == 2, files
    assert killed["debris"] == []
    # Published atomically (bridge/sharded_checkpoint.py): last.ckpt links to the folder epoch 1 wrote whole,
    # and the folders of epoch 0's save and of any save in progress at the kill are not there.
    assert re.fullmatch(r"\.last\.ckpt\.\d+\.ckptdir", killed["ckpt_link"] or ""), killed["ckpt_link"]
    assert killed["ckpt_dir"] == sorted([killed["ckpt_link"], "last.ckpt"]), killed["ckpt_dir"]
    for r in results:
        after = r["after_kill"]
        assert after["epochs"] == [2]  # resumed from the checkpoint: epoch 2 again, not from the start
        assert _max_diff(r["fsdp"]["straight"], after["weights"]) < 1e-6
        assert after["weights"] == results[0]["after_kill"]["weights"]


FSDP1 = ["fsdp", "FSDP_cpu_offload", FSDPStrategy()]


@pytest.mark.parametrize("given", FSDP1, ids=["fsdp", "fsdp_cpu_offload", "instance"])
def test_fsdp1_refused_before_any_trainer(tmp_path: Path, given: Any) -> None:
    learn = make_learner(tmp_path, strategy=given, accelerator="cpu")
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    calls: dict[str, Callable[[], object]] = {
        "fit": lambda: learn.fit(1),
        "fit_one_cycle": lambda: learn.fit_one_cycle(1),
        "validate": learn.validate,
        "get_preds": learn.get_preds,
        "lr_find": lambda: learn.lr_find(num_it=3, show_plot=False),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        given_text = repr(given) if isinstance(given, str) else "FSDPStrategy(...)"
        assert msg.startswith(f"Learner: `strategy`={given_text} (Lightning's FSDPStrategy, FSDP1) is not supported"), (
            name,
            msg,
        )
        assert "ModelParallelStrategy(data_parallel_size=<number of processes>, tensor_parallel_size=1)" in msg
        assert "requires a GPU accelerator" not in msg  # the Learner's refusal, before Lightning's CPU one
    assert learn.trainer is None  # refused before a Trainer was built: no process launched, nothing ran
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())


def test_check_strategy_refuses_fsdp1_and_deepspeed_by_instance_and_name() -> None:
    # An instance is what LearnerModule.configure_model sees when a user's own Trainer runs it with FSDP1.
    for given in ("fsdp", FSDPStrategy(sharding_strategy="SHARD_GRAD_OP")):
        with pytest.raises(ValueError, match="FSDP1\\) is not supported"):
            check_strategy(given)
    with pytest.raises(ValueError, match="DeepSpeed is not supported"):
        check_strategy("deepspeed_stage_2")
    for fine in ("ddp", "ddp_spawn", "auto", "no_such_name"):
        check_strategy(fine)  # accepted (an unknown name is Lightning's to refuse)

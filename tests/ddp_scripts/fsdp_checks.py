"""``test_fsdp``: one 2-process launch (gloo, CPU) of many FSDP2 checks, each against the same run under DDP.

Every fit here runs once with ``strategy="ddp"`` and once with ``ModelParallelStrategy`` (FSDP2,
the Learner's default sharding policy); the test compares the two. ``fsdp_checks.py DIR`` also
resumes the FSDP2 run that ``fsdp_killed.py`` left in ``DIR`` when the test SIGKILLed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.tensor import DTensor

import bridge
from bridge import SGD, Callback, Learner
from bridge.sharding import fresh_strategy, is_sharded
from callbacks import (
    EarlyStoppingCallback,
    GradientAccumulation,
    GradientClip,
    MixUp,
    ReduceLROnPlateau,
    SaveModelCallback,
)
from tests.ddp_scripts._common import LamLog, dump, run
from tests.helpers import make_data, make_learner

FSDP = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
WRITES: list[str] = []
MIX_SEED = 7  # MixUp's base seed: rank r draws from MIX_SEED + stride * r under either strategy
ONE_CYCLE_LR = 0.1  # fit_one_cycle(2, lr_max=...) with the Learner's default moms (0.95, 0.85, 0.95)
SET_LR, RLR_FACTOR = 0.3, 4.0  # opt.set_hyper("lr", SET_LR) at epoch 0; ReduceLROnPlateau divides by the factor


def strategy(kind: str) -> Any:
    return "ddp" if kind == "ddp" else fresh_strategy(FSDP)


def full_params(model: nn.Module) -> dict[str, list[float]]:
    """Every parameter whole, on every rank (a collective under FSDP)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state: dict[str, Any] = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    else:
        state = model.state_dict()
    return {k: v.detach().flatten().tolist() for k, v in state.items()}


class NormLog(Callback):
    """After GradientClip (order 11): the norm it measured at each step."""

    order = 12

    def __init__(self, clip: GradientClip) -> None:
        self.clip = clip
        self.norms: list[float] = []

    def before_step(self) -> None:
        assert self.clip.total_norm is not None
        self.norms.append(float(self.clip.total_norm))


class CancelOnRank1(Callback):
    """Raise ``exc`` on rank 1 only, once, at ``event`` of the first epoch's batch ``it`` of ``phase``."""

    order = 5

    def __init__(self, exc: str, event: str, phase: str, it: int) -> None:
        self.exc, self.event, self.phase, self.it, self.fired = exc, event, phase, it, False

    def _maybe(self, event: str) -> None:
        phase = "train" if self.training else "valid"
        if (dist.get_rank() == 1 and not self.fired and event == self.event and phase == self.phase
                and self.iter == self.it and self.epoch == 0):  # fmt: skip
            self.fired = True
            raise getattr(bridge, self.exc)()

    def before_batch(self) -> None:
        self._maybe("before_batch")

    def after_pred(self) -> None:
        self._maybe("after_pred")

    def after_step(self) -> None:
        self._maybe("after_step")


class StopAfter(Callback):
    """Cancel the fit after epoch ``epoch`` (its checkpoint written): a killed run, cleanly."""

    def __init__(self, epoch: int) -> None:
        self.stop_epoch = epoch

    def after_epoch(self) -> None:
        if self.epoch == self.stop_epoch:
            raise bridge.CancelFitException()


class Epochs(Callback):
    """The epochs a fit runs."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def before_epoch(self) -> None:
        self.seen.append(self.epoch)


class LrLog(Callback):
    """At each step: every group's lr and momentum in the optimizer Lightning steps, and whether it is the right one.

    ``ok`` is False at a step where the stepped optimizer is not ``learn.opt``, ``learn.opt.hypers`` reads other
    rates, or its groups hold other tensors than the model's parameters.
    """

    order = 90

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.moms: list[list[float]] = []
        self.ok: list[bool] = []
        self.dtensors: list[bool] = []  # every parameter in the stepped groups is a DTensor (sharded)

    def before_step(self) -> None:
        opt, model = self.learn.opt, self.learn.model
        stepped = self.learn.trainer.optimizers[0]  # the optimizer Lightning steps
        self.lrs.append([float(g["lr"]) for g in stepped.param_groups])
        self.moms.append([float(g["momentum"]) for g in stepped.param_groups])
        hypers = [float(h["lr"]) for h in opt.hypers]  # type: ignore[union-attr]
        params = [p for g in stepped.param_groups for p in g["params"]]
        self.dtensors.append(all(isinstance(p, DTensor) for p in params))
        same = sorted(map(id, params)) == sorted(map(id, model.parameters()))
        self.ok.append(stepped is opt and hypers == self.lrs[-1] and same)


class SetLr(Callback):
    """fastai's ``learn.opt.set_hyper("lr", lr)`` on the (sharded) optimizer, before the first epoch."""

    order = 1

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def before_epoch(self) -> None:
        if self.epoch == 0:
            self.learn.opt.set_hyper("lr", self.lr)  # type: ignore[union-attr]


CANCELS = [
    ("CancelBatchException", "before_batch", "train", 1),  # rank 1 never ran the forward
    ("CancelBatchException", "after_pred", "train", 1),  # rank 1 ran the forward, not the backward
    ("CancelEpochException", "after_step", "train", 0),
    ("CancelBatchException", "before_batch", "valid", 0),  # a validation forward skipped on one rank
]


def learner(path: str = ".", **kw: Any) -> Learner:
    return make_learner(path, data=make_data(n=256, n_valid=64, bs=32), opt_func=SGD, lr=0.2, **kw)


def main(argv: list[str]) -> None:
    killed = argv[0] if argv else None  # the folder of the run the test SIGKILLed (fsdp_killed.py)
    real_save = torch.save

    def counting_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        WRITES.append(Path(str(f)).name)
        real_save(obj, f, *args, **kwargs)

    torch.save = counting_save
    out: dict[str, Any] = {}
    opts: dict[str, Any] = {"accelerator": "cpu", "devices": 2, "enable_checkpointing": False}
    for kind in ("ddp", "fsdp"):
        # 1. A fit with GradientClip and SaveModelCallback; learn.save; load back.
        clip = GradientClip(max_norm=0.1)
        log = NormLog(clip)
        learn = learner(cbs=[clip, log])
        learn.fit(2, strategy=strategy(kind), cbs=SaveModelCallback(fname=f"best_{kind}", every_epoch=True), **opts)
        res: dict[str, Any] = {"sharded": is_sharded(learn.model), "norms": list(log.norms)}
        res["weights"] = full_params(learn.model)
        learn.save(f"final_{kind}")
        if kind == "ddp":
            dist.barrier()  # a sharded save is a collective already; DDP's rank 1 must wait for rank 0's file
        with torch.no_grad():
            for p in learn.model.parameters():
                p.zero_()
        learn.load(f"final_{kind}")
        res["reloaded"] = full_params(learn.model)
        # 2. validate and get_preds on the (sharded) model.
        learn.trainer_options.update(strategy=strategy(kind), accelerator="cpu", devices=2)
        preds, targs = learn.get_preds()
        res["preds"], res["targs"] = preds.flatten().tolist(), targs.tolist()
        # 3. lr_find restores the model and optimizer.
        before = full_params(learn.model)
        learn.lr_find(num_it=5, show_plot=False, strategy=strategy(kind), accelerator="cpu", devices=2)
        res["lr_find_restored"] = full_params(learn.model) == before
        # 4. One rank cancels: nobody hangs; both strategies end alike.
        res["cancels"] = {}
        for case in CANCELS:
            learn, cancel = learner(), CancelOnRank1(*case)
            learn.fit(1, strategy=strategy(kind), cbs=cancel, **opts)
            res["cancels"]["/".join(map(str, case))] = {"weights": full_params(learn.model), "fired": cancel.fired}
        # 5. GradientAccumulation (no gradient sync on accumulation-only batches).
        learn = learner()
        learn.fit(2, strategy=strategy(kind), cbs=GradientAccumulation(n_acc=64), **opts)
        res["accumulated"] = full_params(learn.model)
        # 6. Stopped after epoch 1 of 3, then fit(3, resume=True) from the epoch checkpoint, vs a straight run.
        ckpt = {**opts, "enable_checkpointing": True}
        learn = learner(path=f"straight_{kind}")
        learn.fit(3, strategy=strategy(kind), **ckpt)
        res["straight"] = full_params(learn.model)
        learn = learner(path=f"resumed_{kind}")
        learn.fit(3, strategy=strategy(kind), cbs=StopAfter(epoch=1), **ckpt)
        dist.barrier()
        res["ckpt_is_dir"] = Path(f"resumed_{kind}/checkpoints/last.ckpt").is_dir()
        learn, epochs = learner(path=f"resumed_{kind}"), Epochs()
        learn.fit(3, strategy=strategy(kind), resume=True, cbs=epochs, **ckpt)
        res["resumed"], res["resumed_epochs"] = full_params(learn.model), epochs.seen
        # 7. bf16 mixed precision (autocast); fp16 with a GradScaler is refused by Lightning under FSDP2.
        learn = learner()
        learn.fit(1, strategy=strategy(kind), precision="bf16-mixed", **opts)
        res["bf16"] = full_params(learn.model)
        # 8. MixUp, seeded: each rank draws its own stream, the same one under both strategies.
        lams = LamLog()
        learn = learner(cbs=[MixUp(seed=MIX_SEED), lams])
        learn.fit(1, strategy=strategy(kind), **opts)
        res["mixup"] = {"weights": full_params(learn.model), "lams": lams.lams}
        # 9. fit_one_cycle: ParamScheduler sets lr and mom on the sharded optimizer's groups at every step.
        lr_log, learn = LrLog(), learner()
        learn.fit_one_cycle(2, lr_max=ONE_CYCLE_LR, cbs=lr_log, strategy=strategy(kind), **opts)
        res["one_cycle"] = {"weights": full_params(learn.model), "lrs": lr_log.lrs, "moms": lr_log.moms,
                            "ok": lr_log.ok, "dtensors": lr_log.dtensors}  # fmt: skip
        # 10. set_hyper, then ReduceLROnPlateau and EarlyStopping on a valid_loss that never improves by 1e9.
        lr_log, epochs = LrLog(), Epochs()
        es = EarlyStoppingCallback(min_delta=1e9, patience=2)
        rlr = ReduceLROnPlateau(min_delta=1e9, patience=0, factor=RLR_FACTOR)
        learn = learner(cbs=[SetLr(SET_LR), rlr, es, lr_log, epochs])
        learn.fit(6, strategy=strategy(kind), **opts)
        assert learn.opt is not None
        res["trackers"] = {"weights": full_params(learn.model), "lrs": lr_log.lrs, "ok": lr_log.ok,
                           "dtensors": lr_log.dtensors, "epochs": epochs.seen, "stopped": es.stopped_epoch,
                           "final_lrs": [float(g["lr"]) for g in learn.opt.param_groups]}  # fmt: skip
        out[kind] = res
    if killed is not None:  # 11. the FSDP2 run SIGKILLed in its epoch 2 continues from its epoch-1 checkpoint
        learn, epochs = learner(path=killed), Epochs()
        learn.fit(3, strategy=strategy("fsdp"), resume=True, cbs=epochs, **{**opts, "enable_checkpointing": True})
        out["after_kill"] = {"weights": full_params(learn.model), "epochs": epochs.seen}
    # A policy of the user's: only the root sharded; called once for two fits (then already sharded).
    calls: list[str] = []

    def root_only(model: nn.Module, mesh: Any) -> None:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        calls.append(type(model).__name__)
        fully_shard(model, mesh=mesh)
        assert not any(isinstance(m, FSDPModule) for m in model.children())

    learn = learner()
    learn.shard_policy = root_only
    learn.fit(1, strategy=strategy("fsdp"), **opts)
    learn.fit(1, strategy=strategy("fsdp"), **opts)
    out["policy"] = {"calls": calls, "weights": full_params(learn.model)}
    learn = learner()
    learn.fit(1, strategy="ddp", **opts)
    learn.fit(1, strategy="ddp", **opts)
    out["policy"]["ddp_weights"] = full_params(learn.model)
    # Refusals at fit start.
    try:
        learner().fit(1, strategy=strategy("fsdp"), precision="16-mixed", **opts)
        out["fp16_refused"] = ""
    except ValueError as exc:
        out["fp16_refused"] = str(exc)
    try:
        learner().fit(1, strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2), **opts)
        out["tp_refused"] = ""
    except ValueError as exc:
        out["tp_refused"] = str(exc)
    out["writes"] = [name for name in WRITES if ".pth" in name]
    out["rank"] = dist.get_rank()
    dump(out)


if __name__ == "__main__":
    run(main)

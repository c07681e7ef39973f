"""Callbacks of each fastai generation run unchanged, in a Learner and through LightningAdapter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bridge import Callback, LightningAdapter
from bridge.dialects import dialect_of
from tests import dialect_samples as s
from tests.helpers import QUIET, make_data, make_learner, make_model

HOSTS = ["learner", "adapter"]


class PlainModule(pl.LightningModule):
    """An ordinary LightningModule, as found in an existing project (automatic optimization)."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.net = make_model()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("my_train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("my_valid_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def run(host: str, tmp_path: Path, cbs: list[Any], n_epoch: int = 2, metrics: Any = None, **kw: Any) -> Any:
    """Fit with ``cbs`` in the given host; returns the host's loop state (learn)."""
    data = make_data(n=96, n_valid=64, bs=32)
    if host == "learner":
        learn = make_learner(tmp_path, data=data, cbs=cbs, opt_func=_sgd, lr=0.1, metrics=metrics)
        learn.fit(n_epoch)
        return learn
    adapter = LightningAdapter(cbs, loss_func=F.cross_entropy)
    trainer = pl.Trainer(max_epochs=n_epoch, callbacks=[adapter], enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **QUIET, **kw)  # fmt: skip
    trainer.fit(PlainModule(lr=0.1), train_dataloaders=data.train_dl, val_dataloaders=data.valid_dl)
    return adapter.learn


def _sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def test_dialect_detection() -> None:
    assert dialect_of(s.Recorder()) == "course"
    assert dialect_of(s.ZeroFirstFeature()) == "v1"
    assert dialect_of(s.SleepAndCompute()) == "v2"

    class Mixed:
        def before_fit(self) -> None: ...
        def on_epoch_end(self, **kw: Any) -> None: ...

    with pytest.raises(TypeError, match=r"mixes callback dialects.*v1: on_epoch_end.*v2: before_fit"):
        dialect_of(Mixed())


@pytest.mark.parametrize("host", HOSTS)
def test_course_v3_scheduler_recorder_and_stats(tmp_path: Path, host: str) -> None:
    sched = s.combine_scheds([0.3, 0.7], [s.sched_cos(0.3, 0.6), s.sched_cos(0.6, 0.2)])
    rec, stats = s.Recorder(), s.AvgStatsCallback([s.accuracy])
    learn = run(host, tmp_path, [s.ParamScheduler("lr", sched), rec, stats], n_epoch=2)
    n_iter = 3  # 96 items / bs 32
    expected = [float(sched(i / n_iter / 2)) for i in range(2 * n_iter)]  # pos = n_epochs / epochs
    assert rec.lrs == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(g["lr"], float) for g in learn.opt.param_groups)  # tensors made floats
    # AvgStats on the validation set equals the closed form on the final weights
    x, y = learn.dls.valid_ds.tensors if host == "learner" else make_data(n=96, n_valid=64).valid_ds.tensors
    with torch.no_grad():
        pred = learn.model.eval()(x)
    valid_loss, valid_acc = stats.history[-1][1]
    assert valid_loss == pytest.approx(F.cross_entropy(pred, y).item(), rel=1e-5)
    assert valid_acc == pytest.approx(s.accuracy(pred, y).item(), rel=1e-6)
    assert len(stats.history) == 2 and stats.train_stats.count == 96


def test_course_v3_tensor_learning_rates_reach_a_foreach_step_as_floats(tmp_path: Path) -> None:
    # combine_scheds gives tensors; torch's foreach Adam refuses a tensor lr (without capturable).
    sched = s.combine_scheds([0.5, 0.5], [s.sched_lin(0.01, 0.05), s.sched_lin(0.05, 0.01)])
    rec = s.Recorder()

    def adam(params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, foreach=True)

    learn = make_learner(tmp_path, data=make_data(n=96, n_valid=64, bs=32), cbs=[s.ParamScheduler("lr", sched), rec],
                         opt_func=adam, lr=0.1)  # fmt: skip
    learn.fit(2)
    assert rec.lrs == pytest.approx([float(sched(i / 6)) for i in range(6)], rel=1e-6)
    assert all(type(g["lr"]) is float for g in learn.opt.param_groups)

    # Steps that are skipped (GradientAccumulation cancels the batch at before_step) see floats too.
    from callbacks import GradientAccumulation

    learn = make_learner(tmp_path, data=make_data(n=96, n_valid=64, bs=32), opt_func=adam, lr=0.1,
                         cbs=[s.ParamScheduler("lr", sched), GradientAccumulation(n_acc=64)])  # fmt: skip
    learn.fit(2)
    assert len(learn.recorder.lrs) == 6 and all(type(lr) is float for lr in learn.recorder.lrs)
    assert learn.recorder.lrs == pytest.approx([float(sched(i / 6)) for i in range(6)], rel=1e-6)


@pytest.mark.parametrize("host", HOSTS)
def test_course_v3_lr_find_with_its_own_cancel(tmp_path: Path, host: str) -> None:
    rec, finder = s.Recorder(), s.LR_Find(max_iter=7, min_lr=1e-4, max_lr=1.0)
    log: list[str] = []

    class After(Callback):
        def after_cancel_fit(self) -> None:
            log.append("after_cancel_fit")

        def after_fit(self) -> None:
            log.append("after_fit")

    run(host, tmp_path, [rec, finder, After()], n_epoch=10)
    # LR_Find cancels in after_step once n_iter >= max_iter, i.e. in the 8th batch; the fit ends
    # there (v2's CancelFit: that batch's after_batch does not run, unlike the Runner's `finally`).
    assert len(rec.lrs) == 7
    assert rec.lrs == pytest.approx([1e-4 * (1.0 / 1e-4) ** (i / 7) for i in range(7)], rel=1e-9)
    assert log == ["after_cancel_fit", "after_fit"]


@pytest.mark.parametrize("host", HOSTS)
def test_course_v3_truthy_begin_validate_and_cancel_epoch(tmp_path: Path, host: str) -> None:
    seen: list[str] = []

    class Probe(Callback):
        def after_batch(self) -> None:
            seen.append("train" if self.training else "valid")

    run(host, tmp_path, [s.SkipValidation(), s.StopAfterBatches(2), Probe()], n_epoch=2)
    # The cancel comes in the 2nd batch's after_batch, before Probe's (added later): one probe
    # per epoch, then no more training batches, and no validation at all.
    assert seen == ["train"] * 2
    # Without SkipValidation: the course's CancelEpochException ends the training pass only (fastai
    # v2's class of that name would skip the epoch's validation too): both validation batches run.
    seen.clear()
    run(host, tmp_path, [s.StopAfterBatches(2), Probe()], n_epoch=2)
    assert seen == ["train", "valid", "valid"] * 2


@pytest.mark.parametrize("host", HOSTS)
def test_v1_input_rebinding_early_stop_and_metric(tmp_path: Path, host: str) -> None:
    inputs: list[float] = []

    class Probe(Callback):
        order = 10

        def after_pred(self) -> None:
            if self.training:
                inputs.append(float(self.xb[0][:, 0].abs().sum()))

    stop = s.V1EarlyStop(stop_epoch=1)
    metrics = [s.AverageAccuracy()] if host == "learner" else None
    learn = run(host, tmp_path, [s.ZeroFirstFeature(), stop, Probe()], n_epoch=5, metrics=metrics)
    assert inputs and all(v == 0.0 for v in inputs)  # the model saw the returned last_input
    assert len(stop.seen_metrics) == 2  # stopped after epoch 1 of 5
    assert stop.iterations == list(range(6))  # v1's iteration at on_batch_end: 0, 1, 2, ...
    assert stop.exception is False
    if host == "learner":
        assert learn.recorder.metric_names[3] == "v1_accuracy"
        for row, seen in zip(learn.recorder.values, stop.seen_metrics, strict=True):
            assert row[1:] == pytest.approx(seen, rel=1e-6)  # on_epoch_end got [valid_loss, *metrics]
        x, y = learn.dls.valid_ds.tensors
        with torch.no_grad():
            acc = s.accuracy(learn.model.eval()(x), y).item()
        assert learn.recorder.values[-1][2] == pytest.approx(acc, rel=1e-6)


def test_v1_gets_the_exception_and_bad_keys_are_named(tmp_path: Path) -> None:
    stop = s.V1EarlyStop(stop_epoch=99)

    class Boom(Callback):
        def after_batch(self) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run("learner", tmp_path, [stop, Boom()], n_epoch=1)
    assert isinstance(stop.exception, RuntimeError)
    with pytest.raises(KeyError, match="last_inptu"):
        run("learner", tmp_path, [s.BadKey()], n_epoch=1)


@pytest.mark.parametrize("host", HOSTS)
def test_v2_loss_replacement_changes_training(tmp_path: Path, host: str) -> None:
    class NoLearning(Callback):
        def after_loss(self) -> None:
            if self.training:
                self.learn.loss_grad = self.loss_grad * 0

    torch.manual_seed(0)
    learn = run(host, tmp_path, [NoLearning()], n_epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(learn.model.state_dict().values(), _initial_state(host).values()))


def _initial_state(host: str) -> dict[str, torch.Tensor]:
    return make_model().state_dict() if host == "learner" else PlainModule().state_dict()


@pytest.mark.parametrize("host", HOSTS)
def test_duck_typed_sleep_and_compute(tmp_path: Path, host: str) -> None:
    cb = s.SleepAndCompute()
    learn = run(host, tmp_path, [cb], n_epoch=2)
    with torch.no_grad():
        final = float(sum(p.norm() ** 2 for p in learn.model.parameters()) ** 0.5)
    assert len(cb.norms) == 2 and cb.norms[-1] == pytest.approx(final, rel=1e-6)


def test_aliases_for_every_dialect(tmp_path: Path) -> None:
    rec, stop = s.Recorder(), s.V1EarlyStop(3)
    learn = make_learner(tmp_path, cbs=[rec, stop, s.SleepAndCompute()])
    assert learn.v1_early_stop is stop and learn.sleep_and_compute.norms == []
    assert learn.recorder is not rec  # the Learner's own Recorder keeps learn.recorder
    assert rec in learn.cbs and stop in learn.cbs
    learn.remove_cb(stop)
    assert stop not in learn.cbs and not hasattr(learn, "v1_early_stop")


def test_adapter_batch_rebinding_reaches_the_users_step(tmp_path: Path) -> None:
    seen: list[float] = []

    class Spy(PlainModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(float(batch[0].abs().sum()))
            return super().training_step(batch, batch_idx)

    class ZeroInputs(Callback):
        def before_batch(self) -> None:
            if self.training:
                self.learn.xb = (self.xb[0] * 0,)

    data = make_data(n=96, n_valid=64, bs=32)
    module = Spy()
    trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([ZeroInputs()])], enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **QUIET)  # fmt: skip
    trainer.fit(module, data.train_dl, data.valid_dl)
    assert seen == [0.0, 0.0, 0.0]
    assert "training_step" not in module.__dict__ and "forward" not in module.__dict__  # restored


def test_adapter_needs_forward_for_after_pred(tmp_path: Path) -> None:
    class NoForward(PlainModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

    class WantsPred(Callback):
        def after_pred(self) -> None: ...

    data = make_data(n=96, n_valid=64, bs=32)
    trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([WantsPred()])], default_root_dir=tmp_path,
                         enable_checkpointing=False, **QUIET)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"NoForward.training_step never called the module.*self\(x\)"):
        trainer.fit(NoForward(), data.train_dl, data.valid_dl)


def test_adapter_bad_arguments() -> None:
    with pytest.raises(TypeError, match="loss_func"):
        LightningAdapter([], loss_func="ce")
    with pytest.raises(ValueError, match="n_inp"):
        LightningAdapter([], n_inp=0)
    with pytest.raises(TypeError, match="no known event"):
        LightningAdapter([object()])


def test_cos_reference() -> None:
    assert s.sched_cos(1.0, 0.0)(0.5) == pytest.approx(0.5) and math.isclose(
        s.sched_cos(1.0, 0.0)(1.0), 0.0, abs_tol=1e-12
    )


def test_mixup_through_the_adapter_changes_training(tmp_path: Path) -> None:
    from callbacks import MixUp

    data = make_data(n=96, n_valid=64, bs=32)
    mix = MixUp(0.4, seed=0)
    adapter = LightningAdapter([mix], loss_func=nn.CrossEntropyLoss())
    trainer = pl.Trainer(max_epochs=1, callbacks=[adapter], enable_checkpointing=False, default_root_dir=tmp_path,
                         **QUIET)  # fmt: skip
    trainer.fit(PlainModule(), data.train_dl, data.valid_dl)
    # the last batch was mixed: the loss the module trained on is MixUp's per-sample mix
    learn = adapter.learn
    assert learn.loss_func is adapter.learn.loss_func and mix.lam is not None
    assert mix.lam.shape[0] == 32 and bool((mix.lam >= 0.5).all())


def test_mixup_without_loss_func_fails_at_setup_naming_the_fix(tmp_path: Path) -> None:
    from callbacks import MixUp

    data = make_data(n=96, n_valid=64, bs=32)
    trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([MixUp()])], default_root_dir=tmp_path,
                         enable_checkpointing=False, **QUIET)  # fmt: skip
    with pytest.raises(TypeError, match="loss_func"):
        trainer.fit(PlainModule(), data.train_dl, data.valid_dl)


def test_adapter_makes_the_default_profiler_free_for_the_fit_and_leaves_others(tmp_path: Path) -> None:
    from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

    from bridge.profiler import NoProfiler

    seen: list[Any] = []

    class Look(Callback):
        def after_batch(self) -> None:
            seen.append(self.learn.trainer.profiler)

    data = make_data(n=64, n_valid=32, bs=32)
    for given in (None, SimpleProfiler()):
        seen.clear()
        trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([Look()])], profiler=given,
                             enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                             **QUIET)  # fmt: skip
        trainer.fit(PlainModule(), train_dataloaders=data.train_dl, val_dataloaders=data.valid_dl)
        if given is None:
            assert seen and all(type(p) is NoProfiler for p in seen)
            assert type(trainer.profiler) is PassThroughProfiler  # the Trainer's own, back after the fit
        else:
            assert seen and all(p is given for p in seen) and trainer.profiler is given
            assert any("LightningAdapter" in name for name in given.recorded_durations)  # it profiled the adapter

    class Boom(Callback):
        def after_batch(self) -> None:
            raise RuntimeError("boom")

    trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([Boom()])], enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, **QUIET)  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(PlainModule(), train_dataloaders=data.train_dl)
    assert type(trainer.profiler) is PassThroughProfiler  # restored on the way out of a failed fit too

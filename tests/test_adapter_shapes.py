"""LightningAdapter on module shapes real projects use (issue 17 grows this file)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from bridge import (
    Callback,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
    DataBunch,
    LightningAdapter,
)
from bridge.events import EVENT_NAMES
from callbacks import GradientClip, MixUp
from tests.adapter_modules import (
    BatchOnly,
    DictSteps,
    LoggedMetrics,
    NoForward,
    SkipsBatches,
    TwoValLoaders,
    WorldSizeData,
    flat,
)
from tests.helpers import make_data


class NoValidationStep(pl.LightningModule):
    """A module with a training_step only, trained on a datamodule that has a validation loader."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_module_without_validation_step_and_a_loss_func(tmp_path: Any) -> None:
    class Seen(Callback):
        def before_fit(self) -> None:
            self.train = self.valid = 0

        def after_batch(self) -> None:
            if self.training:
                self.train += 1
            else:
                self.valid += 1

    torch.manual_seed(0)
    x = torch.randn(32, 2)
    ds = TensorDataset(x, (x[:, 0] > 0).long())
    seen = Seen()
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[LightningAdapter([MixUp(), seen], loss_func=F.cross_entropy)],
    )
    module = NoValidationStep()
    trainer.fit(module, datamodule=DataBunch.from_datasets(ds, ds, bs=8))
    assert (seen.train, seen.valid) == (8, 0)  # Lightning skips validation: the module has no step for it
    assert "validation_step" not in module.__dict__  # nothing left patched on the module


# -- every step signature and return Lightning accepts ----------------------------------------------
EVENTS = [e for e in EVENT_NAMES if e != "after_create"]
SHAPES = [LoggedMetrics, DictSteps, BatchOnly, SkipsBatches, TwoValLoaders]


class Trace(Callback):
    """Records every event; raises ``cancel`` at ``event`` when ``when(epoch, iter, training)`` holds."""

    def __init__(
        self, cancel: type[Exception] | None = None, event: str = "", when: Callable[[int, int, bool], bool] = any
    ) -> None:
        self.events: list[str] = []
        self.cancel, self.event, self.when = cancel, event, when

    def _on(self, event: str) -> None:
        self.events.append(event)
        learn = self.learn
        if self.cancel is not None and event == self.event and self.when(learn.epoch, learn.iter, learn.training):
            raise self.cancel()


def _recorder_of(event: str) -> Callable[[Trace], None]:
    def method(self: Trace) -> None:
        self._on(event)

    return method


for _event in EVENTS:
    setattr(Trace, _event, _recorder_of(_event))


def fit_shape(
    tmp_path: Path, module: pl.LightningModule, cbs: list[Any] | None, epochs: int = 2, **kw: Any
) -> tuple[LightningAdapter | None, pl.Trainer]:
    """3 training and 2 validation batches an epoch (two validation loaders for TwoValLoaders)."""
    data = make_data(n=96, n_valid=64, bs=32)
    adapter_kw = {k: kw.pop(k) for k in ("loss_func",) if k in kw}
    adapter = None if cbs is None else LightningAdapter(cbs, **adapter_kw)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[adapter] if adapter else [], enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                         enable_progress_bar=False, logger=False, **kw)  # fmt: skip
    valid = [data.valid_dl, data.valid_dl] if isinstance(module, TwoValLoaders) else data.valid_dl
    torch.manual_seed(1)
    trainer.fit(module, data.train_dl, valid)
    return adapter, trainer


@pytest.mark.parametrize("make", SHAPES)
def test_bit_identical_without_callbacks(tmp_path: Path, make: type[pl.LightningModule]) -> None:
    plain, adapted = make(), make()
    _, t0 = fit_shape(tmp_path / "p", plain, None)
    _, t1 = fit_shape(tmp_path / "a", adapted, [])
    assert torch.equal(flat(plain), flat(adapted))
    assert t0.global_step == t1.global_step
    assert {k: float(v) for k, v in t0.callback_metrics.items()} == {
        k: float(v) for k, v in t1.callback_metrics.items()
    }


@pytest.mark.parametrize("make", SHAPES)
def test_each_shape_fires_every_batch(tmp_path: Path, make: type[pl.LightningModule]) -> None:
    trace = Trace()
    module = make()
    _, trainer = fit_shape(tmp_path, module, [trace])
    n_valid = 4 if make is TwoValLoaders else (0 if make is SkipsBatches else 2)
    assert trace.events.count("before_batch") == 2 * (3 + n_valid)
    # a step returning None (SkipsBatches: batch 1 of each epoch) has no loss: no backward, no step
    n_steps = 2 * (2 if make is SkipsBatches else 3)
    assert trace.events.count("before_backward") == trace.events.count("before_step") == n_steps
    # every batch runs to after_loss (a skipped one with pred and loss None), then after_batch
    assert trace.events.count("after_pred") == trace.events.count("after_loss") == trace.events.count("after_batch")
    if make is TwoValLoaders:
        assert sorted(set(module.seen)) == [0, 1]  # dataloader_idx reached the module's step


def test_event_trace_on_a_step_without_batch_idx(tmp_path: Path) -> None:
    trace = Trace()
    fit_shape(tmp_path, BatchOnly(), [trace], epochs=1, limit_train_batches=1, limit_val_batches=1)
    train = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
             "after_step", "after_batch"]  # fmt: skip
    valid = ["before_batch", "after_pred", "after_loss", "after_batch"]
    assert trace.events == [
        "before_fit", "before_epoch", "before_train", *train, "after_train",
        "before_validate", *valid, "after_validate", "after_epoch", "after_fit",
    ]  # fmt: skip


def test_a_dict_returning_step_uses_the_loss_callbacks_leave(tmp_path: Path) -> None:
    class NoGrad(Callback):
        def after_loss(self) -> None:
            if self.training:
                self.learn.loss_grad = self.learn.loss_grad * 0.0

    module = DictSteps()
    start = flat(module).clone()
    fit_shape(tmp_path, module, [NoGrad()])
    assert torch.equal(flat(module), start)  # SGD without momentum: zero gradients, no change


@pytest.mark.parametrize("make", [LoggedMetrics, DictSteps, BatchOnly])
def test_gradient_clip_equals_lightnings_own_clipping(tmp_path: Path, make: type[pl.LightningModule]) -> None:
    ours, theirs = make(), make()
    fit_shape(tmp_path / "a", ours, [GradientClip(max_norm=0.05)])
    fit_shape(tmp_path / "b", theirs, None, gradient_clip_val=0.05, gradient_clip_algorithm="norm")
    unclipped = make()
    fit_shape(tmp_path / "c", unclipped, None)
    assert torch.allclose(flat(ours), flat(theirs), atol=1e-7, rtol=0)
    assert not torch.allclose(flat(ours), flat(unclipped), atol=1e-4)  # clipping acted


@pytest.mark.parametrize("make", [LoggedMetrics, DictSteps, BatchOnly])
def test_mixup_trains_on_mixed_batches(tmp_path: Path, make: type[pl.LightningModule]) -> None:
    class Inputs(Callback):
        order = 100  # after MixUp's before_batch

        def before_fit(self) -> None:
            self.mixed: list[torch.Tensor] = []

        def before_batch(self) -> None:
            if self.training:
                self.mixed.append(self.learn.xb[0].clone())

    seen, mixed, plain = Inputs(), make(), make()
    adapter, _ = fit_shape(tmp_path / "m", mixed, [MixUp(seed=0), seen], loss_func=F.cross_entropy)
    fit_shape(tmp_path / "p", plain, None)
    data = make_data(n=96, n_valid=64, bs=32)
    all_x = torch.cat([x for x, _ in data.train_dl])
    assert len(seen.mixed) == 6
    assert not any(any(torch.equal(row, r) for r in all_x) for row in seen.mixed[0])  # no sample left unmixed
    assert not torch.equal(flat(mixed), flat(plain))
    assert adapter is not None and all(math.isfinite(v) for v in adapter.learn.recorder.losses)


def _first_epoch_train_batch(i: int) -> Callable[[int, int, bool], bool]:
    return lambda epoch, it, training: epoch == 0 and it == i and training


CANCELS = [
        (CancelBatchException, "before_batch", _first_epoch_train_batch(1),
         {"after_cancel_batch": 1, "before_backward": 5, "after_batch": 6 + 4}),
        (CancelBackwardException, "before_backward", lambda e, i, t: True,
         {"after_cancel_backward": 6, "before_step": 0, "unchanged": True}),
        (CancelStepException, "before_step", lambda e, i, t: True,
         {"after_cancel_step": 6, "after_step": 6, "global_step": 6, "unchanged": True}),
        (CancelTrainException, "before_batch", _first_epoch_train_batch(1),
         {"after_cancel_train": 1, "before_step": 4, "before_validate": 2, "after_batch": 4 + 4}),
        (CancelValidException, "before_validate", lambda e, i, t: e == 0,
         {"after_cancel_validate": 1, "after_validate": 2, "after_batch": 6 + 2}),
        (CancelEpochException, "before_batch", _first_epoch_train_batch(1),
         {"after_cancel_epoch": 1, "after_epoch": 2, "before_validate": 1, "after_batch": 4 + 2}),
        (CancelFitException, "after_epoch", lambda e, i, t: e == 0,
         {"after_cancel_fit": 1, "before_epoch": 1, "after_fit": 1, "global_step": 3}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "cancel", "event", "when", "expect"),
    # LoggedMetrics' plateau scheduler needs the val_loss of a validation a cancelled epoch skips (below)
    [(m, *c) for m in (LoggedMetrics, DictSteps, BatchOnly) for c in CANCELS
     if (m, c[0]) != (LoggedMetrics, CancelEpochException)],
)  # fmt: skip
def test_a_cancel_per_level(
    tmp_path: Path, make: type[pl.LightningModule], cancel: type[Exception], event: str, when: Any, expect: Any
) -> None:
    trace, module = Trace(cancel, event, when), make()
    start = flat(module).clone()
    _, trainer = fit_shape(tmp_path, module, [trace])
    counts = {k: trace.events.count(k) for k in expect if k not in ("global_step", "unchanged")}
    assert counts == {k: v for k, v in expect.items() if k in counts}
    if "global_step" in expect:
        assert trainer.global_step == expect["global_step"]
    assert torch.equal(flat(module), start) == expect.get("unchanged", False)


def test_a_cancelled_epoch_skips_the_validation_a_plateau_scheduler_needs(tmp_path: Path) -> None:
    # Lightning's own rule (the module's scheduler dict is strict): the adapter skips validation as fastai does.
    trace = Trace(CancelEpochException, "before_batch", _first_epoch_train_batch(1))
    with pytest.raises(Exception, match=r"ReduceLROnPlateau conditioned on metric val_loss which is not available"):
        fit_shape(tmp_path, LoggedMetrics(), [trace])


def test_after_pred_on_a_module_without_forward_fails_at_setup_naming_callback_and_event(tmp_path: Path) -> None:
    class WantsPred(Callback):
        def after_pred(self) -> None: ...

    trace = Trace()
    with pytest.raises(
        TypeError, match=r"WantsPred.after_pred, Trace.after_pred cannot be honoured: NoForward defines no"
    ):
        fit_shape(tmp_path, NoForward(), [WantsPred(), trace])
    assert trace.events == []  # refused before anything ran


def test_a_datamodule_reading_the_trainers_world_size(tmp_path: Path) -> None:
    class Count(Callback):
        def before_fit(self) -> None:
            self.sizes: list[int] = []

        def after_batch(self) -> None:
            self.sizes.append(len(self.learn.xb[0]))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    data, count = WorldSizeData(x, (x[:, 0] > 0).long()), Count()
    trainer = pl.Trainer(max_epochs=1, callbacks=[LightningAdapter([count])], enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         logger=False)  # fmt: skip
    trainer.fit(BatchOnly(), datamodule=data)
    assert count.sizes == [32, 32, 32]  # 32 // world_size 1
    assert count.learn.dls is data


def test_lightnings_weight_averaging_copies_the_module_not_the_adapter(tmp_path: Path) -> None:
    # Lightning's WeightAveraging (EMA/SWA) deep-copies the module at setup, after the adapter patched it.
    from lightning.pytorch.callbacks import WeightAveraging

    def run(with_adapter: bool) -> tuple[WeightAveraging, LightningAdapter | None, pl.LightningModule, Trace]:
        trace, averaging = Trace(), WeightAveraging()
        adapter = LightningAdapter([trace]) if with_adapter else None
        data = make_data(n=96, n_valid=64, bs=32)
        trainer = pl.Trainer(max_epochs=2, callbacks=[*([adapter] if adapter else []), averaging],
                             enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                             default_root_dir=tmp_path, enable_progress_bar=False, logger=False)  # fmt: skip
        torch.manual_seed(1)
        module = LoggedMetrics()
        trainer.fit(module, data.train_dl, data.valid_dl)
        return averaging, adapter, module, trace

    plain_avg, _, plain, _ = run(False)
    avg, adapter, module, trace = run(True)
    assert adapter is not None
    assert torch.equal(flat(module), flat(plain))  # the averaged weights, loaded at fit end: the same
    copy = avg._average_model.module  # type: ignore[union-attr]
    assert torch.equal(flat(copy), flat(plain_avg._average_model.module))  # type: ignore[union-attr]
    n = len(trace.events)
    x = torch.randn(4, 8)
    assert torch.equal(copy(x), type(copy).forward(copy, x))  # the copy runs its class's forward
    assert len(trace.events) == n  # and fires no event on the fit's callbacks
    assert not any(isinstance(v, LightningAdapter) for v in vars(copy).values())


def test_a_compiled_module_stays_compiled_under_the_adapter(tmp_path: Path) -> None:
    # trainer.fit(torch.compile(module)): Lightning sets compiled methods on the module's instance.
    from torch._dynamo.utils import counters

    class Unlogged(BatchOnly):  # Dynamo cannot compile a step that calls self.log, adapter or not
        def validation_step(self, batch: Any) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

    class AfterPred(Callback):
        n = 0

        def after_pred(self) -> None:
            self.n += 1

    def run(cbs: list[Any] | None) -> tuple[pl.LightningModule, dict[str, int]]:
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(1)
        module = Unlogged()
        fit_shape(tmp_path, torch.compile(module), cbs, epochs=1)  # type: ignore[arg-type]
        return module, dict(counters["stats"])

    plain, plain_stats = run(None)
    spy = AfterPred()
    module, stats = run([spy])
    assert plain_stats["calls_captured"] > 0 and stats["calls_captured"] > 0  # dynamo ran in both
    assert torch.equal(flat(module), flat(plain))
    assert spy.n == 3 + 2  # after_pred at each training and validation batch
    own = ("forward", "training_step", "validation_step")
    assert all(name in vars(module) for name in own) and all(name in vars(plain) for name in own)
    assert [n for n in vars(module) if n.startswith("_fastlight")] == []  # the compiled methods are back

"""Lightning's loop options that fastai has no word for, under both hosts (Learner and LightningAdapter).

- ``val_check_interval``: a validation inside the epoch, after which training goes on: fastai's
  phases are ``after_train``, ``before_validate`` ... and ``before_train`` again, and
  ``pct_train`` carries on from where the validation came.
- ``limit_train_batches`` / ``limit_val_batches``: ``n_iter`` is the number of batches Lightning
  runs, so ``pct_train`` and schedules span them.
- ``max_steps``: when it ends an automatically optimized fit (the adapter's) before its epochs do,
  ``pct_train`` spans the batches up to that step (``n_train_total``), so a schedule ends where the
  fit ends and never runs past 1; the Learner keeps ``fit(n)``'s schedule and stops early.

The expected values are closed forms (``i / total``) and, for weights, the same fit without the
option that changes nothing about training (validation) or without the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from bridge import Callback, LightningAdapter
from callbacks import ParamScheduler, SchedLin
from tests.adapter_modules import LoggedMetrics, flat
from tests.helpers import make_data, make_learner


class PhaseLog(Callback):
    """The phase events, ``pct_train`` and the lr at each training batch, ``n_iter`` per phase."""

    order = 100  # after ParamScheduler: the lr the step uses

    def __init__(self) -> None:
        self.events: list[str] = []
        self.pcts: list[float] = []
        self.lrs: list[float] = []
        self.n_iters: dict[str, set[int]] = {"train": set(), "valid": set()}

    def before_train(self) -> None:
        self.events.append("before_train")

    def after_train(self) -> None:
        self.events.append("after_train")

    def before_validate(self) -> None:
        self.events.append("before_validate")

    def after_epoch(self) -> None:
        self.events.append("after_epoch")

    def before_batch(self) -> None:
        self.n_iters["train" if self.training else "valid"].add(self.learn.n_iter)
        if self.training:
            self.pcts.append(self.learn.pct_train)
            self.lrs.append(self.learn.opt.param_groups[0]["lr"])


# One epoch of 6 training batches validated after batches 3 and 6 (val_check_interval=0.5).
MID_EPOCH = ["before_train", "after_train", "before_validate"] * 2 + ["after_epoch"]
DATA = {"n": 192, "n_valid": 64, "bs": 32}  # 6 training and 2 validation batches an epoch


def adapter_fit(tmp_path: Path, cbs: list[Any] | None, **options: Any) -> tuple[pl.LightningModule, pl.Trainer]:
    data = make_data(**DATA)
    callbacks = [LightningAdapter(cbs)] if cbs is not None else []
    trainer = pl.Trainer(callbacks=callbacks, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
                         **{"max_epochs": 2, **options})  # fmt: skip
    torch.manual_seed(1)
    module = LoggedMetrics()
    trainer.fit(module, data.train_dl, data.valid_dl)
    return module, trainer


def learner_fit(tmp_path: Path, cbs: list[Any], n_epoch: int = 2, **options: Any) -> Any:
    torch.manual_seed(1)
    learn = make_learner(tmp_path, data=make_data(**DATA), cbs=cbs, enable_checkpointing=False)
    learn.fit(n_epoch, **options)
    return learn


def test_adapter_validation_inside_the_epoch_resumes_training_where_it_was(tmp_path: Path) -> None:
    plain, t0 = adapter_fit(tmp_path / "plain", None, val_check_interval=0.5)
    log = PhaseLog()
    adapted, t1 = adapter_fit(tmp_path / "adapted", [log], val_check_interval=0.5)
    assert torch.equal(flat(adapted), flat(plain))  # every batch trained, as without the adapter
    assert t1.global_step == t0.global_step == 12
    assert log.events == MID_EPOCH * 2
    assert log.pcts == pytest.approx([i / 12 for i in range(12)])


def test_learner_validation_inside_the_epoch_trains_as_without_it(tmp_path: Path) -> None:
    once, twice = PhaseLog(), PhaseLog()
    a = learner_fit(tmp_path / "a", [once])
    b = learner_fit(tmp_path / "b", [twice], val_check_interval=0.5)
    assert torch.equal(flat(b.model), flat(a.model))  # validating changes no weight
    assert twice.events == MID_EPOCH * 2
    assert once.events == ["before_train", "after_train", "before_validate", "after_epoch"] * 2
    assert twice.pcts == once.pcts == pytest.approx([i / 12 for i in range(12)])
    assert b.recorder.values == a.recorder.values  # the epoch's last validation is the epoch's row


@pytest.mark.parametrize("host", ["learner", "adapter"])
def test_limit_batches_is_what_n_iter_and_pct_train_count(tmp_path: Path, host: str) -> None:
    log = PhaseLog()
    options = {"limit_train_batches": 2, "limit_val_batches": 1}
    if host == "learner":
        learner_fit(tmp_path, [log], **options)
    else:
        adapter_fit(tmp_path, [log], **options)
    assert log.n_iters == {"train": {2}, "valid": {1}}
    assert log.pcts == pytest.approx([0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize(
    ("options", "batches"),
    [
        ({"max_epochs": -1, "max_steps": 8}, 8),  # no epoch limit: the steps are the fit's length
        ({"max_epochs": 3, "max_steps": 8}, 8),  # the steps end it before its 3 epochs (18 batches)
        ({"max_epochs": 3, "max_steps": 4, "accumulate_grad_batches": 2}, 8),  # 4 steps of 2 batches
        ({"max_epochs": 3, "max_steps": 4, "accumulate_grad_batches": 4}, 12),  # 2 steps an epoch (4 + 2 batches)
    ],
)
def test_adapter_max_steps_is_the_span_of_pct_train_and_of_a_schedule(
    tmp_path: Path, options: dict[str, Any], batches: int
) -> None:
    log = PhaseLog()
    _, trainer = adapter_fit(tmp_path, [ParamScheduler({"lr": SchedLin(0.1, 0.0)}), log], **options)
    assert trainer.global_step == options["max_steps"]
    assert log.pcts == pytest.approx([i / batches for i in range(batches)])
    assert log.lrs == pytest.approx([0.1 * (1 - i / batches) for i in range(batches)])  # never below 0


def test_learner_fit_with_max_steps_stops_early_on_fits_schedule(tmp_path: Path) -> None:
    # Manual optimization (the Learner's module): the batches to max_steps are not known beforehand
    # (GradientAccumulation skips steps), so fit(3)'s schedule stands and max_steps ends it early.
    log = PhaseLog()
    learn = learner_fit(tmp_path, [log], n_epoch=3, max_steps=8)
    assert learn.trainer.global_step == 8
    assert log.pcts == pytest.approx([i / 18 for i in range(8)])
    assert learn.n_epoch == 3


def test_an_endless_fit_warns_that_pct_train_has_no_span(tmp_path: Path) -> None:
    class StopAfter(Callback):
        def after_batch(self) -> None:
            if self.learn.trainer.global_step >= 3:
                self.learn.trainer.should_stop = True

    with pytest.warns(UserWarning, match=r"this fit has no end \(max_epochs=-1 and max_steps=-1\)"):
        adapter_fit(tmp_path, [StopAfter()], max_epochs=-1)


def test_adapter_max_steps_on_a_loader_without_length(tmp_path: Path) -> None:
    class Stream(torch.utils.data.IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
        def __iter__(self) -> Any:
            g = torch.Generator().manual_seed(0)
            while True:
                x = torch.randn(8, generator=g)
                yield x, (x[0] > 0).long()

    log = PhaseLog()
    trainer = pl.Trainer(max_steps=5, callbacks=[LightningAdapter([ParamScheduler({"lr": SchedLin(0.1, 0.0)}), log])],
                         limit_val_batches=0, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, enable_progress_bar=False, logger=False)  # fmt: skip
    trainer.fit(LoggedMetrics(), torch.utils.data.DataLoader(Stream(), batch_size=16))
    assert trainer.global_step == 5
    assert log.pcts == pytest.approx([i / 5 for i in range(5)])

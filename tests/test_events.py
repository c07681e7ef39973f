"""Guarantee 1: the Learner fires fastai v2's events in fastai's order, cancels included."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bridge import (
    Callback,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from bridge.events import EVENT_NAMES, INNER_LOOP
from tests.fastai_reference import ReferenceLoop
from tests.helpers import make_data, make_learner

N_EPOCH, N_TRAIN, N_VALID = 2, 3, 2
LOOP_EVENTS = [e for e in EVENT_NAMES if e != "after_create"]


class Injector:
    """Records (event, epoch, phase, iter) and raises ``exc`` once at the matching point."""

    def __init__(self, exc: type[Exception] | None, at: tuple[str, int, str | None, int | None] | None) -> None:
        self.exc, self.at, self.trace, self.fired = exc, at, [], False

    def record(self, event: str, epoch: int, training: bool, it: int) -> None:
        inner = event in BATCH_EVENTS
        phase = ("train" if training else "valid") if inner else None
        key = (event, epoch, phase, it if inner else None)
        self.trace.append(key)
        if self.exc is not None and not self.fired and self.at == key:
            self.fired = True
            raise self.exc()


BATCH_EVENTS = INNER_LOOP


def _trace_cb(inj: Injector) -> Callback:
    class Trace(Callback):
        order = 5

    def make(event: str) -> Any:
        def method(self: Callback) -> None:
            learn = self.learn
            inj.record(event, learn.epoch, learn.training, learn.iter)

        return method

    for event in LOOP_EVENTS:
        setattr(Trace, event, make(event))
    return Trace()


def _reference(exc: type[Exception] | None, at: Any) -> list[Any]:
    inj = Injector(exc, at)
    # The reference has no before_batch before after_pred inside _do_one_batch: fastai fires it in
    # _with_events('batch'), which our reference reproduces; record events with the loop's state.
    ReferenceLoop(lambda loop, e: inj.record(e, loop.epoch, loop.training, loop.iter), N_EPOCH, N_TRAIN, N_VALID).fit()
    return inj.trace


def _ours(tmp_path: Any, exc: type[Exception] | None, at: Any) -> list[Any]:
    inj = Injector(exc, at)
    learn = make_learner(tmp_path, data=make_data(n=96, n_valid=64, bs=32), cbs=[_trace_cb(inj)])
    learn.fit(N_EPOCH)
    return inj.trace


CASES = [
    (None, None),
    (CancelFitException, ("before_fit", 0, None, None)),
    (CancelFitException, ("after_loss", 1, "train", 0)),
    (CancelFitException, ("after_batch", 0, "valid", 1)),
    (CancelFitException, ("after_epoch", 0, None, None)),
    (CancelEpochException, ("before_epoch", 0, None, None)),
    (CancelEpochException, ("after_pred", 0, "train", 1)),
    (CancelEpochException, ("after_batch", 0, "train", 2)),  # last train batch: validation muted
    (CancelEpochException, ("before_validate", 1, None, None)),
    (CancelEpochException, ("after_loss", 0, "valid", 0)),
    (CancelTrainException, ("before_train", 0, None, None)),
    (CancelTrainException, ("after_batch", 0, "train", 0)),
    (CancelTrainException, ("before_step", 1, "train", 2)),  # last batch: validation still runs
    (CancelValidException, ("before_validate", 0, None, None)),
    (CancelValidException, ("before_batch", 1, "valid", 1)),
    (CancelBatchException, ("before_batch", 0, "train", 0)),
    (CancelBatchException, ("after_loss", 0, "train", 1)),
    (CancelBatchException, ("before_step", 1, "train", 1)),
    (CancelBatchException, ("after_pred", 0, "valid", 0)),
    (CancelBackwardException, ("before_backward", 0, "train", 1)),
    (CancelBackwardException, ("before_backward", 1, "train", 2)),
    (CancelStepException, ("before_step", 0, "train", 0)),
    (CancelStepException, ("before_step", 1, "train", 2)),
]


@pytest.mark.parametrize("exc,at", CASES, ids=[f"{e.__name__ if e else 'none'}@{a[0] if a else ''}" for e, a in CASES])
def test_trace_matches_fastai(tmp_path: Any, exc: Any, at: Any) -> None:
    expected = _reference(exc, at)
    got = _ours(tmp_path, exc, at)
    if exc is not None:  # the case must really cancel something
        assert any(t[0] == f"after_cancel_{exc.level}" for t in expected)
    assert got == expected


def test_full_trace_shape(tmp_path: Any) -> None:
    trace = [t[0] for t in _ours(tmp_path, None, None)]
    one_train = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
                 "before_step", "after_step", "after_batch"]  # fmt: skip
    one_valid = ["before_batch", "after_pred", "after_loss", "after_batch"]
    epoch = ["before_epoch", "before_train", *one_train * N_TRAIN, "after_train", "before_validate",
             *one_valid * N_VALID, "after_validate", "after_epoch"]  # fmt: skip
    assert trace == ["before_fit", *epoch * N_EPOCH, "after_fit"]


def test_misplaced_cancel_escapes_like_fastai(tmp_path: Any) -> None:
    class Bad(Callback):
        def before_epoch(self) -> None:
            raise CancelBatchException()

    learn = make_learner(tmp_path, cbs=[Bad()])
    with pytest.raises(CancelBatchException) as info:
        learn.fit(1)
    assert any("outside the `batch`" in n for n in info.value.__notes__)


def test_cancel_step_skips_only_the_step(tmp_path: Any) -> None:
    class NoStep(Callback):
        def before_fit(self) -> None:
            self.w0 = [p.detach().clone() for p in self.learn.model.parameters()]

        def before_step(self) -> None:
            self.grads_seen = all(p.grad is not None for p in self.learn.model.parameters())
            raise CancelStepException()

    cb = NoStep()
    learn = make_learner(tmp_path, cbs=[cb])
    learn.fit(1)
    assert cb.grads_seen
    for p0, p in zip(cb.w0, learn.model.parameters(), strict=True):
        assert torch.equal(p0, p.detach())


def test_callbacks_sorted_by_order_stable(tmp_path: Any) -> None:
    seen: list[str] = []

    def cb(name: str, order: int) -> Callback:
        c = type(name, (Callback,), {"order": order, "before_fit": lambda self: seen.append(name)})
        return c()

    learn = make_learner(tmp_path, cbs=[cb("B", 1), cb("A", 0), cb("C", 1), cb("D", -20)])
    learn.fit(1)
    assert seen == ["D", "A", "B", "C"]


def test_run_flags(tmp_path: Any) -> None:
    class Muted(Callback):
        def __init__(self) -> None:
            self.batches = 0
            self.valid_batches = 0
            self.epochs = 0

        def before_fit(self) -> None:
            self.run = False  # muted until after_fit; after_fit itself is muted too

        def after_batch(self) -> None:
            self.batches += 1

    class TrainOnly(Callback):
        run_valid = False

        def __init__(self) -> None:
            self.phases: list[bool] = []

        def after_batch(self) -> None:
            self.phases.append(self.training)

    muted, train_only = Muted(), TrainOnly()
    learn = make_learner(tmp_path, data=make_data(n=96, n_valid=64, bs=32), cbs=[muted, train_only])
    learn.fit(2)
    assert muted.batches == 0 and muted.run is True  # reset after fit, as in fastai
    assert train_only.phases == [True] * (2 * 3)

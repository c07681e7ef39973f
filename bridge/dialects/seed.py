"""The seed dialect: the article's callbacks (course-v3 ``04_callbacks``, first half), on the v2 loop.

The article's loop, and how each falsy return maps onto fastai v2's cancels::

    fit(epochs, learn, cb):
        if not cb.begin_fit(learn): return            before_fit: CancelFit, and no after_fit at all
        for epoch in range(epochs):
            if not cb.begin_epoch(epoch): continue    before_epoch: CancelEpoch, and no after_epoch
            all_batches(train_dl)                     each batch, then `if cb.do_stop(): return`
            if cb.begin_validate():                   before_validate: CancelValid
                all_batches(valid_dl)
            if cb.do_stop() or not cb.after_epoch():  after_validate: CancelFit (no after_epoch);
                break                                 after_epoch: CancelFit
        cb.after_fit()

    one_batch(xb, yb):
        if not cb.begin_batch(xb, yb): return         before_batch: CancelBatch
        loss = loss_func(model(xb), yb)
        if not cb.after_loss(loss): return            after_loss (training only): CancelBatch
        loss.backward()
        if cb.after_backward(): opt.step()            after_backward: the step is cancelled (CancelStep)
        if cb.after_step(): opt.zero_grad()           after_step: CancelBatch (no zero_grad)

``learn.stop = True`` ends the current pass after that batch and is reset (``do_stop``); a
callback object with its own ``do_stop()`` (the article's ``CallbackHandler``, typed by the
user) is asked instead. Like every cancel, these decisions are agreed across ranks under DDP.

Example:
    >>> class Counter:
    ...     def begin_fit(self, learn): self.n = 0; return True
    ...     def after_step(self): self.n += 1; return True
    >>> is_seed(Counter())
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..exceptions import (
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from .common import LoopHelper, _defined, _Wrapped

__all__ = ["SEED_EVENTS", "SeedCallback", "SeedFlags", "is_seed"]

#: The article's method -> the v2 event that calls it.
SEED_EVENTS: dict[str, str] = {
    "begin_fit": "before_fit",
    "begin_epoch": "before_epoch",
    "begin_validate": "before_validate",
    "begin_batch": "before_batch",
    "after_loss": "after_loss",
    "after_backward": "after_backward",
    "after_step": "after_step",
    "after_epoch": "after_epoch",
    "after_fit": "after_fit",
}
#: Methods whose arguments tell the article's callbacks from course-v3's (which take none).
_WITH_ARGS = ("begin_fit", "begin_epoch", "begin_batch", "after_loss")


def _takes_args(fn: Any) -> bool:
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) > 1  # self, then the event's argument


def is_seed(cb: object) -> bool:
    """True for the article's callbacks: ``begin_fit(learn)`` (or another event taking its argument), no ``set_runner``.

    Example:
        >>> class CourseV3:
        ...     def begin_fit(self): ...
        >>> is_seed(CourseV3())
        False
    """
    if callable(inspect.getattr_static(cb, "set_runner", None)):
        return False
    return any(_takes_args(inspect.getattr_static(cb, n, None)) for n in _defined(cb, _WITH_ARGS))


class SeedFlags(LoopHelper):
    """Shared state of the article's callbacks on one learner, and the last-running callback acting on it.

    Example:
        >>> SeedFlags(learn=None).order
        1000000000
    """

    def __init__(self, learn: Any) -> None:
        super().__init__(learn)
        self.fit_refused = False  # a begin_fit answered falsy: no after_fit
        self.epoch_refused = False  # a begin_epoch answered falsy: no after_epoch
        self.skip_step = False  # an after_backward answered falsy: no opt.step()

    @property
    def name(self) -> str:
        return "_seed_flags"

    def before_step(self) -> None:
        if self.skip_step:
            self.skip_step = False
            raise CancelStepException()

    def after_batch(self) -> None:
        learn = self.learn
        if learn.stop:
            learn.stop = False
            raise CancelTrainException() if learn.training else CancelValidException()

    def after_validate(self) -> None:
        learn = self.learn
        if learn.stop:
            learn.stop = False
            raise CancelFitException()

    def after_epoch(self) -> None:
        self.epoch_refused = False

    def after_fit(self) -> None:
        self.fit_refused = self.skip_step = False
        self.learn.stop = False


class SeedCallback(_Wrapped):
    """One of the article's callbacks presented as a v2 one (see the module's loop)."""

    dialect = "seed"

    def __init__(self, cb: Any, learn: Any) -> None:
        super().__init__(cb, learn)
        self.flags: SeedFlags = learn._seed_flags()
        self._bind(SEED_EVENTS)
        if callable(inspect.getattr_static(cb, "do_stop", None)):
            self.after_batch = self._stop_pass(cb.do_stop)
            self.after_validate = self._stop_fit(cb.do_stop)

    def _make(self, bound: Callable[..., Any], method: str) -> Callable[[], None]:
        learn, flags = self.learn, self.flags
        if method == "begin_fit":

            def call() -> None:
                if not bound(learn):
                    flags.fit_refused = True
                    raise CancelFitException()

        elif method == "after_fit":

            def call() -> None:
                if not flags.fit_refused:
                    bound()

        elif method == "begin_epoch":

            def call() -> None:
                if not bound(learn.epoch):
                    flags.epoch_refused = True
                    raise CancelEpochException()

        elif method == "after_epoch":

            def call() -> None:
                if not flags.epoch_refused and not bound():
                    raise CancelFitException()

        elif method == "begin_validate":

            def call() -> None:
                if not bound():
                    raise CancelValidException()

        elif method == "begin_batch":

            def call() -> None:
                if not bound(learn.x, learn.y):
                    raise CancelBatchException()

        elif method == "after_loss":

            def call() -> None:
                # The article's handler starts after_loss from `in_train`: never asked in validation.
                if learn.training and not bound(learn.loss):
                    raise CancelBatchException()

        elif method == "after_backward":

            def call() -> None:
                if not bound():
                    flags.skip_step = True

        else:  # after_step

            def call() -> None:
                if not bound():
                    raise CancelBatchException()

        return call

    def _stop_pass(self, do_stop: Callable[[], Any]) -> Callable[[], None]:
        learn = self.learn

        def call() -> None:
            if do_stop():
                raise CancelTrainException() if learn.training else CancelValidException()

        return call

    def _stop_fit(self, do_stop: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            if do_stop():
                raise CancelFitException()

        return call

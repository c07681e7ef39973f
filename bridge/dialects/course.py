"""course-v3 (the 2019 ``Runner``): the runner view and the callback wrapper."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..exceptions import (
    CancelBatchException,
    CancelException,
    CancelFitException,
    CancelTrainException,
    CancelValidException,
)
from .common import COURSE_EVENTS, LoopHelper, _defined, _detuple, _float_lrs, _tuple, _Wrapped

__all__ = ["CourseCallback", "FloatLrs", "RunnerView"]


class FloatLrs(LoopHelper):
    """Learning rates that course-v3 callbacks left as tensors become floats before anything reads them.

    The course's schedules compute with tensors (``combine_scheds``) and its ``ParamScheduler``
    writes them into ``param_groups`` at ``begin_batch``; torch's foreach and fused steps refuse
    tensors. This runs last in ``before_step`` (the step reads them) and, for a batch whose step is
    skipped, in the cancel event that skips it (before the Recorder records the rate at
    ``after_batch``), and at ``after_fit``: once a batch, rather than after every course callback
    call.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> opt.param_groups[0]["lr"] = torch.tensor(0.5)
        >>> learn = type("L", (), {"opt": opt})()
        >>> FloatLrs(learn).before_step(); opt.param_groups[0]["lr"]
        0.5
    """

    @property
    def name(self) -> str:
        return "_float_lrs"

    def before_step(self) -> None:
        _float_lrs(self.learn.opt)

    after_cancel_backward = after_cancel_step = after_cancel_batch = after_fit = before_step


class RunnerView:
    """What a course-v3 callback sees as ``self.run``: the 2019 ``Runner``'s names on the learner.

    Reads of ``xb``/``yb`` give plain tensors for single-input/single-target batches;
    writes of ``xb``, ``yb``, ``pred``, ``loss``, ``loss_func``, ``model``, ``epochs``
    land on the learner. Other attributes a callback writes (``n_epochs``, ``n_iter``,
    ``in_train``, ...) live on the view, shared by all course callbacks, as on the Runner.

    Example:
        >>> class L:  # a learner stand-in
        ...     xb, yb, n_epoch, training, pct_train, train_iter, n_iter = (1,), (2,), 3, True, 0.5, 7, 4
        >>> run = RunnerView(L())
        >>> run.xb, run.epochs, run.n_epochs, run.iters, run.in_train
        (1, 3, 1.5, 4, True)
    """

    _TO_LEARNER = {
        "pred": "pred",
        "loss": "loss",
        "loss_func": "loss_func",
        "model": "model",
        "epochs": "n_epoch",
        "stop": "stop",  # the Runner's stop: ends the current pass (bridge.dialects.seed.SeedFlags)
    }

    def __init__(self, learn: Any) -> None:
        object.__setattr__(self, "learn", learn)
        object.__setattr__(self, "_own", {})

    def __getattr__(self, name: str) -> Any:
        own = self.__dict__["_own"]
        if name in own:
            return own[name]
        learn = self.__dict__["learn"]
        if name == "xb":
            return _detuple(learn.xb)
        if name == "yb":
            return _detuple(learn.yb)
        if name == "epochs":
            return learn.n_epoch
        if name == "n_epochs":
            return learn.pct_train * learn.n_epoch
        if name == "n_iter":
            return learn.train_iter
        if name == "iters":
            return learn.n_iter
        if name == "in_train":
            return learn.training
        if name == "data":
            return learn.dls
        return getattr(learn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        learn = self.__dict__["learn"]
        if name == "xb":
            learn.xb = _tuple(value)
        elif name == "yb":
            learn.yb = _tuple(value)
        elif name in self._TO_LEARNER:
            setattr(learn, self._TO_LEARNER[name], value)
        else:
            self.__dict__["_own"][name] = value


_COURSE_CANCELS: dict[str, Callable[[bool], CancelException]] = {
    "CancelTrainException": lambda training: CancelFitException(),
    "CancelEpochException": lambda training: CancelTrainException() if training else CancelValidException(),
    "CancelBatchException": lambda training: CancelBatchException(),
}


class CourseCallback(_Wrapped):
    """A course-v3 callback presented as a v2 one (see the module table)."""

    dialect = "course-v3"

    def __init__(self, cb: Any, learn: Any) -> None:
        super().__init__(cb, learn)
        self.view = learn._runner_view()  # with the FloatLrs helper
        learn._seed_flags()  # acts on `run.stop = True` as the Runner's all_batches does
        if callable(inspect.getattr_static(cb, "set_runner", None)):
            cb.set_runner(self.view)
        else:
            cb.run = self.view
        self._skipping = False
        for method in _defined(cb, COURSE_EVENTS):
            bound = getattr(cb, method)
            for event in COURSE_EVENTS[method]:
                setattr(self, event, self._make(bound, method, event))

    def _make(self, bound: Callable[[], Any], method: str, event: str) -> Callable[[], Any]:
        skippable = method == "after_cancel_epoch"
        may_skip = method in ("begin_epoch", "begin_validate")
        if not skippable and not may_skip:
            # Called as it is (the Runner ignored these methods' returns); a course cancel it raises
            # reaches the handler, which asks translate_error for its meaning.
            return bound
        translate = self.translate_error

        def call() -> None:
            if skippable and self._skipping:
                self._skipping = False
                return  # a truthy begin_epoch/begin_validate skips silently, as in the Runner
            try:
                result = bound()
            except CancelException:
                raise
            except Exception as exc:
                cancel = translate(exc)
                if cancel is None:
                    raise
                raise cancel from exc
            if may_skip and result:
                self._skipping = True
                raise CancelTrainException() if method == "begin_epoch" else CancelValidException()

        return call

    def translate_error(self, exc: Exception) -> CancelException | None:
        """The v2 cancel for a course-v3 one (by class name, with the Runner's meaning), else ``None``.

        Example:
            >>> class CancelEpochException(Exception): ...  # as the course notebook defines it
            >>> wrapper = type("W", (), {"learn": type("L", (), {"training": True})()})()  # training: the train pass
            >>> type(CourseCallback.translate_error(wrapper, CancelEpochException())).__name__
            'CancelTrainException'
        """
        make = _COURSE_CANCELS.get(type(exc).__name__)
        return None if make is None else make(self.learn.training)

"""The article's ``fit(epochs, learn, cb)`` and course-v3's ``Runner``: their entry points, on the Learner.

Both run through ``Learner.fit`` (Lightning's Trainer, the one batch engine); the callbacks keep
the semantics of their dialect (:mod:`bridge.dialects.seed`, :mod:`bridge.dialects.course`).

Example:
    >>> class Count:  # one of the article's callbacks
    ...     def begin_fit(self, learn): self.n = 0; return True
    ...     def after_step(self): self.n += 1; return True
    >>> counter = Count()
    >>> with learn.no_logging():
    ...     fit(1, learn, cb=[counter])
    >>> counter.n
    2
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .callback import callback_name
from .handler import CallbackHandler

if TYPE_CHECKING:
    from .protocol import LearnerState

__all__ = ["Runner", "fit"]

CbFuncs = Callable[[], Any] | Iterable[Callable[[], Any]] | None


def _listify(o: Any) -> list[Any]:
    if o is None:
        return []
    if isinstance(o, list):
        return o
    if isinstance(o, (str, bytes)) or not isinstance(o, Iterable):
        return [o]
    return list(o)


def _check_learn(learn: object, where: str) -> None:
    if not callable(getattr(learn, "fit", None)) or not hasattr(learn, "cb_handler"):
        raise TypeError(f"{where}: `learn` must be a bridge.Learner, got {type(learn).__name__}")


def fit(epochs: int, learn: LearnerState, cb: Any = None) -> None:
    """The article's ``fit(epochs, learn, cb)``: train ``learn`` for ``epochs`` with ``cb``'s callbacks.

    ``cb`` is a :class:`~bridge.CallbackHandler` (its callbacks run), a list of callbacks, one
    callback, or the user's own handler object with the article's methods (``begin_fit(learn)``
    ... ``do_stop()``), which then runs as one callback. The callbacks are added for this fit
    only; the optimizer's learning rates stay as they are.

    Example:
        >>> fit(0, learn)
        Traceback (most recent call last):
        ...
        ValueError: fit: `n_epoch` must be an int >= 1, got 0
    """
    _check_learn(learn, "fit")
    cbs = [c for c in cb.cbs] if isinstance(cb, CallbackHandler) else _listify(cb)
    learn.fit(epochs, cbs=cbs)


class Runner:
    """course-v3's ``Runner(cbs, cb_funcs)``: ``run.fit(epochs, learn)`` on the Learner.

    ``cb_funcs`` are called (``partial(AvgStatsCallback, accuracy)``) and each callback they make
    is ``run.<name>`` (``run.avg_stats``); the Learner's own ``TrainEvalCallback`` keeps
    ``in_train``, ``n_iter``, ``n_epochs`` and the model's mode. ``run.stop = True`` (in a
    callback: ``self.run.stop = True``) ends the current pass.

    Example:
        >>> class Spy:  # a course-v3 callback
        ...     _order = 0
        ...     def set_runner(self, run): self.run = run
        ...     def after_epoch(self): self.seen = self.run.epoch
        >>> run = Runner(cb_funcs=Spy)
        >>> with learn.no_logging():
        ...     run.fit(2, learn)
        >>> run.spy.seen, run.learn is None
        (1, True)
    """

    def __init__(
        self, cbs: Any = None, cb_funcs: Callable[[], Any] | Iterable[Callable[[], Any]] | None = None
    ) -> None:
        self.cbs = _listify(cbs)
        for cbf in _listify(cb_funcs):
            if not callable(cbf):
                raise TypeError(f"Runner: `cb_funcs` must be callables returning callbacks, got {cbf!r}")
            cb = cbf()
            setattr(self, _name(cb), cb)
            self.cbs.append(cb)
        self.learn: LearnerState | None = None
        self.epochs = 0

    @property
    def stop(self) -> bool:
        """The Runner's stop flag (the learner's ``stop`` during a fit)."""
        return bool(self.learn.stop) if self.learn is not None else False

    @stop.setter
    def stop(self, value: bool) -> None:
        if self.learn is not None:
            self.learn.stop = value

    def fit(self, epochs: int, learn: LearnerState) -> None:
        """Train ``learn`` for ``epochs`` with this runner's callbacks (course-v3's ``run.fit``)."""
        _check_learn(learn, "Runner.fit")
        self.epochs, self.learn = epochs, learn
        try:
            learn.fit(epochs, cbs=self.cbs)
        finally:
            self.learn = None

    def __getattr__(self, name: str) -> Any:
        # run.opt / run.model / run.loss_func / run.data, as course-v3's Runner forwards them.
        if name in ("opt", "model", "loss_func", "data") and self.__dict__.get("learn") is not None:
            return getattr(self.__dict__["learn"], "dls" if name == "data" else name)
        raise AttributeError(f"Runner has no attribute {name!r}")


def _name(cb: Any) -> str:
    prop = inspect.getattr_static(cb, "name", None)
    if isinstance(prop, property):
        try:
            return str(cb.name)
        except Exception:  # course-v3's name forwards to its runner before set_runner
            pass
    return callback_name(cb)

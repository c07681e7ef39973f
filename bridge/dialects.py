"""Run callbacks written for fastai v1 and for the 2019 course (course-v3) unchanged.

Detection is by the methods a callback defines; one table per dialect maps its methods to
the canonical (fastai v2) events. A wrapper object presents the old callback to the
:class:`~bridge.CallbackHandler` as a v2 callback:

===================  ======================  =================================
fastai v2 event      course-v3 (``Runner``)  fastai v1 (``CallbackHandler``)
===================  ======================  =================================
before_fit           begin_fit               on_train_begin
before_epoch         —                       on_epoch_begin
before_train         begin_epoch             —
before_batch         begin_batch             on_batch_begin (train and valid)
after_pred           after_pred              on_loss_begin
after_loss           after_loss              —
before_backward      —                       on_backward_begin
after_backward       after_backward          on_backward_end
after_step           after_step              on_step_end
after_batch          after_batch             on_batch_end
before_validate      begin_validate          —
after_epoch          after_epoch             on_epoch_end (gets last_metrics)
after_fit            after_fit               on_train_end (gets exception)
after_cancel_fit     after_cancel_train      —
after_cancel_train   after_cancel_epoch      —
after_cancel_valid.  after_cancel_epoch      —
after_cancel_batch   after_cancel_batch      —
===================  ======================  =================================

course-v3 callbacks get ``set_runner(run)`` with a :class:`RunnerView`; their own
``CancelTrainException`` / ``CancelEpochException`` / ``CancelBatchException`` (defined in
the user's notebook) are recognised by class name, with the course Runner's meaning. v1
callbacks get the loop state as keyword arguments and may return a dict that updates it.

Example:
    >>> class OldStyle:
    ...     def on_batch_begin(self, last_input, **kwargs):
    ...         return {"last_input": last_input * 2}
    >>> dialect_of(OldStyle())
    'v1'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .callback import callback_name
from .events import EVENT_NAMES
from .exceptions import (
    CancelBackwardException,
    CancelBatchException,
    CancelException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)

__all__ = [
    "COURSE_EVENTS",
    "V1_EVENTS",
    "V1_STATE_KEYS",
    "RunnerView",
    "V1Metric",
    "dialect_of",
    "is_v1_metric",
    "unwrap",
    "wrap_callback",
]

#: course-v3 method -> the v2 events that call it.
COURSE_EVENTS: dict[str, tuple[str, ...]] = {
    "begin_fit": ("before_fit",),
    "begin_epoch": ("before_train",),
    "begin_batch": ("before_batch",),
    "after_pred": ("after_pred",),
    "after_loss": ("after_loss",),
    "after_backward": ("after_backward",),
    "after_step": ("after_step",),
    "after_batch": ("after_batch",),
    "begin_validate": ("before_validate",),
    "after_epoch": ("after_epoch",),
    "after_fit": ("after_fit",),
    "after_cancel_train": ("after_cancel_fit",),
    "after_cancel_epoch": ("after_cancel_train", "after_cancel_validate"),
    "after_cancel_batch": ("after_cancel_batch",),
}
_COURSE_ONLY = frozenset({"begin_fit", "begin_epoch", "begin_batch", "begin_validate"})

#: fastai v1 method -> the v2 event that calls it.
V1_EVENTS: dict[str, str] = {
    "on_train_begin": "before_fit",
    "on_epoch_begin": "before_epoch",
    "on_batch_begin": "before_batch",
    "on_loss_begin": "after_pred",
    "on_backward_begin": "before_backward",
    "on_backward_end": "after_backward",
    "on_step_end": "after_step",
    "on_batch_end": "after_batch",
    "on_epoch_end": "after_epoch",
    "on_train_end": "after_fit",
}

#: Keys a v1 callback may return to update the loop state.
V1_STATE_KEYS = frozenset(
    {
        "last_input",
        "last_target",
        "last_output",
        "last_loss",
        "stop_epoch",
        "stop_training",
        "skip_step",
        "skip_zero",
        "skip_bwd",
        "skip_validate",
        "last_metrics",
    }
)


def _defined(cb: object, names: Any) -> list[str]:
    return [n for n in names if callable(inspect.getattr_static(cb, n, None))]


def dialect_of(cb: object) -> str:
    """``'v2'``, ``'course'`` or ``'v1'`` for a callback, by the methods it defines.

    Raises ``TypeError`` for a callback mixing dialects (naming the methods) or defining
    no known event.

    Example:
        >>> class Sched:
        ...     def begin_batch(self): ...
        >>> dialect_of(Sched())
        'course'
    """
    v1 = _defined(cb, V1_EVENTS)
    course_only = _defined(cb, _COURSE_ONLY)
    has_runner = callable(inspect.getattr_static(cb, "set_runner", None))
    v2_only = [n for n in _defined(cb, EVENT_NAMES) if n not in COURSE_EVENTS]
    kinds = {
        "v1": v1,
        "course": course_only + (["set_runner"] if has_runner else []),
        "v2": v2_only,
    }
    present = {k: v for k, v in kinds.items() if v}
    if len(present) > 1:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in present.items())
        raise TypeError(
            f"add_cb: {type(cb).__name__} mixes callback dialects ({detail}); "
            "use one generation's method names per class"
        )
    if present:
        return next(iter(present))
    if _defined(cb, COURSE_EVENTS) or _defined(cb, EVENT_NAMES):
        return "v2"  # only names shared by v2 and course-v3 (after_batch, ...): v2 semantics
    raise TypeError(
        f"`cbs`: {type(cb).__name__} defines no known event method; a callback needs at least one fastai v2 "
        f"event ({', '.join(e for e in EVENT_NAMES if e != 'after_create')}), course-v3 method "
        f"({', '.join(COURSE_EVENTS)}) or fastai v1 method ({', '.join(V1_EVENTS)})"
    )


def _detuple(t: tuple[Any, ...]) -> Any:
    return t[0] if len(t) == 1 else t


def _tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _float_lrs(opt: Any) -> None:
    # course-v3 schedulers store tensors in param_groups; torch's foreach/fused steps refuse them.
    if opt is None:
        return
    for group in opt.param_groups:
        lr = group.get("lr")
        if type(lr) is not float and isinstance(lr, Tensor):  # isinstance(x, Tensor) is slow: floats first
            group["lr"] = float(lr)


# --------------------------------------------------------------------------------------- course
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

    _TO_LEARNER = {"pred": "pred", "loss": "loss", "loss_func": "loss_func", "model": "model", "epochs": "n_epoch"}

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


class _Wrapped:
    """Common part of the dialect wrappers: order, run flags, identity of the original."""

    run_train = True
    run_valid = True

    def __init__(self, cb: Any, learn: Any) -> None:
        self.wrapped = cb
        self.learn = learn
        self.run = True
        order = inspect.getattr_static(cb, "_order", None)
        if order is None:
            order = inspect.getattr_static(cb, "order", 0)
        self.order = int(order) if isinstance(order, (int, float)) and not isinstance(order, bool) else 0

    @property
    def name(self) -> str:
        return callback_name(self.wrapped)

    def __repr__(self) -> str:
        return f"{type(self.wrapped).__name__}({self.dialect})"

    dialect = ""


class CourseCallback(_Wrapped):
    """A course-v3 callback presented as a v2 one (see the module table)."""

    dialect = "course-v3"

    def __init__(self, cb: Any, learn: Any) -> None:
        super().__init__(cb, learn)
        self.view = learn._runner_view()
        if callable(inspect.getattr_static(cb, "set_runner", None)):
            cb.set_runner(self.view)
        else:
            cb.run = self.view
        self._skipping = False
        for method in _defined(cb, COURSE_EVENTS):
            bound = getattr(cb, method)
            for event in COURSE_EVENTS[method]:
                setattr(self, event, self._make(bound, method, event))

    def _make(self, bound: Callable[[], Any], method: str, event: str) -> Callable[[], None]:
        learn = self.learn
        skippable = method == "after_cancel_epoch"
        may_skip = method in ("begin_epoch", "begin_validate")
        cancels = _COURSE_CANCELS

        def call() -> None:
            if skippable and self._skipping:
                return  # a truthy begin_epoch/begin_validate skips silently, as in the Runner
            try:
                result = bound()
            except CancelException:
                raise
            except Exception as exc:
                make = cancels.get(type(exc).__name__)
                if make is None:
                    raise
                raise make(learn.training) from exc
            finally:
                _float_lrs(learn.opt)
            if may_skip and result:
                self._skipping = True
                raise CancelTrainException() if method == "begin_epoch" else CancelValidException()
            if self._skipping:
                self._skipping = False

        return call


# ------------------------------------------------------------------------------------------- v1
class V1Flags:
    """Shared v1 loop state for a learner, and the last-running callback that acts on its flags.

    v1 callbacks return flags (``stop_epoch``, ``skip_step``, ...); fastai v1 acted on
    them after *all* callbacks of an event ran, so this callback runs last (huge order)
    and raises the matching v2 cancel.

    The keyword state is built once per event, at the first v1 callback that runs in it
    (as fastai v1's handler set it once before calling its callbacks); later v1 callbacks
    of the event get it with the updates earlier ones returned. Batch values that another
    callback rebound in between (``xb``, ``yb``, ``pred``, ``loss``, ``smooth_loss``) are
    read again. Running last in every v1 event, this callback marks the state stale.
    """

    order = 10**9
    run = True
    run_train = True
    run_valid = True

    def __init__(self, learn: Any) -> None:
        self.learn = learn
        self.state: dict[str, Any] = {"last_metrics": None, "stop_training": False, "skip_validate": False}
        self._reset_batch()
        self._fresh: str | None = None  # the event the state was built for; None: stale
        self._seen: tuple[Any, ...] = ()  # (xb, yb, pred, loss, smooth_loss) it was built from

    @property
    def name(self) -> str:
        return "_v1_flags"

    def _reset_batch(self) -> None:
        state = self.state
        state["stop_epoch"] = state["skip_step"] = state["skip_zero"] = state["skip_bwd"] = False

    def kwargs(self, event: str) -> dict[str, Any]:
        """The v1 state passed as keyword arguments at ``event``."""
        learn = self.learn
        if self._fresh != event:
            self._fresh = event
            training = learn.training
            state = self.state
            state["epoch"] = learn.epoch
            state["n_epochs"] = learn.n_epoch
            # TrainEvalCallback (order -10) already counted this batch at after_batch.
            state["iteration"] = learn.train_iter - (1 if event == "after_batch" and training else 0)
            state["num_batch"] = learn.iter
            state["train"] = training
            state["pbar"] = None
            state["metrics"] = learn.metrics
            self._batch_values(event)
            return state
        seen = self._seen
        if (
            learn.xb is not seen[0]
            or learn.yb is not seen[1]
            or learn.pred is not seen[2]
            or learn.loss is not seen[3]
            or learn.smooth_loss is not seen[4]
        ):
            self._batch_values(event)
        return self.state

    def _batch_values(self, event: str) -> None:
        learn, state = self.learn, self.state
        xb, yb, pred, loss, smooth = learn.xb, learn.yb, learn.pred, learn.loss, learn.smooth_loss
        self._seen = (xb, yb, pred, loss, smooth)
        state["last_input"] = xb[0] if len(xb) == 1 else xb
        state["last_target"] = yb[0] if len(yb) == 1 else yb
        state["last_output"] = pred
        state["last_loss"] = loss.detach() if event == "after_batch" and isinstance(loss, Tensor) else loss
        state["smooth_loss"] = smooth

    def update(self, source: str, new: Any) -> None:
        if new is None:
            return
        if not isinstance(new, dict):
            return  # v1 ignored non-dict returns too (e.g. True from old callbacks)
        for key, value in new.items():
            if key not in V1_STATE_KEYS:
                raise KeyError(
                    f"{source} returned `{key}`, which isn't a valid key in the state of the callbacks; "
                    f"accepted: {', '.join(sorted(V1_STATE_KEYS))}"
                )
            self.state[key] = value
            learn = self.learn
            if key == "last_input":
                learn.xb = _tuple(value)
            elif key == "last_target":
                learn.yb = _tuple(value)
            elif key == "last_output":
                learn.pred = value
            elif key == "last_loss":
                learn.loss = value

    # Acting on the flags, after every other callback of the event ran; each event with a
    # v1 method ends here, so the keyword state is rebuilt at the next one.
    def before_fit(self) -> None:
        self._fresh = None

    def before_epoch(self) -> None:
        self._fresh = None
        self.state["stop_training"] = False

    def before_batch(self) -> None:
        self._fresh = None
        self._reset_batch()

    def after_pred(self) -> None:
        self._fresh = None

    def before_validate(self) -> None:
        if self.state.get("skip_validate"):
            raise CancelValidException()

    def before_backward(self) -> None:
        self._fresh = None
        if self.state["skip_bwd"]:
            raise CancelBackwardException()

    def after_backward(self) -> None:
        self._fresh = None

    def before_step(self) -> None:
        if self.state["skip_step"]:
            raise CancelStepException()

    def after_step(self) -> None:
        self._fresh = None
        if self.state["skip_zero"]:
            raise CancelBatchException()  # keeps the gradients: no zero_grad

    def after_batch(self) -> None:
        self._fresh = None
        if self.state["stop_epoch"]:
            self.state["stop_epoch"] = False
            raise CancelTrainException() if self.learn.training else CancelValidException()

    def after_validate(self) -> None:
        record = getattr(self.learn, "last_metrics", None)
        self.state["last_metrics"] = list(record) if record is not None else None

    def after_epoch(self) -> None:
        self._fresh = None
        if self.state["stop_training"]:
            raise CancelFitException()

    def after_fit(self) -> None:
        self._fresh = None


class V1Callback(_Wrapped):
    """A fastai v1 callback presented as a v2 one (see the module table)."""

    dialect = "v1"

    def __init__(self, cb: Any, learn: Any) -> None:
        super().__init__(cb, learn)
        self.flags: V1Flags = learn._v1_flags()
        for method in _defined(cb, V1_EVENTS):
            setattr(self, V1_EVENTS[method], self._make(getattr(cb, method), method))

    def _make(self, bound: Callable[..., Any], method: str) -> Callable[[], None]:
        flags = self.flags
        kwargs, update = flags.kwargs, flags.update
        event = V1_EVENTS[method]
        source = f"{type(self.wrapped).__name__}.{method}"
        learn = self.learn

        if method == "on_train_begin":

            def call() -> None:
                names = [getattr(m, "name", type(m).__name__) for m in learn.metrics]
                update(source, bound(**kwargs(event), metrics_names=names))

        elif method == "on_train_end":

            def call() -> None:
                exception = learn.exception if learn.exception is not None else False
                update(source, bound(**kwargs(event), exception=exception))

        else:

            def call() -> None:
                result = bound(**kwargs(event))
                if result is not None:
                    update(source, result)

        return call


# ------------------------------------------------------------------------------------ v1 metrics
def is_v1_metric(obj: object) -> bool:
    """A fastai v1 metric callback: defines ``on_epoch_end`` and ``on_batch_end``.

    Example:
        >>> class AverageAcc:
        ...     def on_batch_end(self, **kw): ...
        ...     def on_epoch_end(self, last_metrics, **kw): ...
        >>> is_v1_metric(AverageAcc())
        True
    """
    return bool(_defined(obj, ("on_epoch_end",))) and bool(_defined(obj, ("on_batch_end",)))


def _v1_metric_class() -> type:
    from torchmetrics import Metric

    class V1MetricImpl(Metric):
        """A fastai v1 metric callback as a torchmetrics ``Metric`` (computed per process)."""

        full_state_update = True

        def __init__(self, cb: Any) -> None:
            super().__init__(sync_on_compute=False)
            self.cb = cb
            self.name = getattr(cb, "name", None) or callback_name(cb)
            self._started = False

        def _call(self, method: str, **kwargs: Any) -> Any:
            fn = getattr(self.cb, method, None)
            if fn is None:
                return None
            base = dict(train=False, epoch=0, iteration=0, num_batch=0, last_metrics=[], smooth_loss=None)
            base.update(kwargs)
            return fn(**base)

        def update(self, pred: Any, *yb: Any) -> None:
            if not self._started:
                self._call("on_epoch_begin")
                self._started = True
            target = _detuple(tuple(yb))
            self._call("on_batch_begin", last_input=None, last_target=target)
            self._call("on_batch_end", last_output=pred, last_target=target, last_loss=None)

        def compute(self) -> Tensor:
            out = self._call("on_epoch_end", last_metrics=[])
            if isinstance(out, dict) and out.get("last_metrics"):
                value = out["last_metrics"][-1]
            else:
                value = float("nan")
            return torch.as_tensor(value, dtype=torch.float64)

        def reset(self) -> None:
            super().reset()
            self._started = False

    return V1MetricImpl


def V1Metric(cb: Any) -> Any:
    """Wrap a fastai v1 metric callback (``on_epoch_end`` returning ``{'last_metrics': ...}``).

    Example:
        >>> class Count:
        ...     def on_epoch_begin(self, **kw): self.n = 0
        ...     def on_batch_end(self, last_target, **kw): self.n += len(last_target)
        ...     def on_epoch_end(self, last_metrics, **kw): return {"last_metrics": last_metrics + [self.n]}
        >>> m = V1Metric(Count())
        >>> m.update(torch.zeros(3, 2), torch.zeros(3)); float(m.compute())
        3.0
    """
    return _v1_metric_class()(cb)


def unwrap(handle: Any) -> Any:
    """The user's callback behind a handler entry: the original for a dialect wrapper, else ``handle``.

    A type check rather than ``getattr(handle, "wrapped", handle)``, which on a v2
    ``Callback`` falls through ``__getattr__`` to the learner (an exception raised and
    caught per callback: ~1 us each).

    Example:
        >>> class V2:
        ...     def after_batch(self): ...
        >>> cb = V2(); unwrap(cb) is cb
        True
    """
    return handle.wrapped if isinstance(handle, _Wrapped) else handle


def wrap_callback(cb: Any, learn: Any) -> Any:
    """The object the handler runs for ``cb``: ``cb`` itself (v2) or a dialect wrapper.

    Example:
        >>> class V2:
        ...     def after_batch(self): ...
        >>> cb = V2(); wrap_callback(cb, learn=None) is cb
        True
    """
    dialect = dialect_of(cb)
    if dialect == "course":
        return CourseCallback(cb, learn)
    if dialect == "v1":
        return V1Callback(cb, learn)
    return cb

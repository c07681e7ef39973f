"""fastai v1 (``CallbackHandler`` with keyword state and dict returns): flags, wrapper, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..callback import callback_name
from ..exceptions import (
    CancelBackwardException,
    CancelBatchException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from .common import V1_ARGUMENTS, V1_EVENTS, V1_STATE_KEYS, LoopHelper, _defined, _detuple, _tuple, _Wrapped
from .reads import keywords_read, narrow_call

__all__ = ["V1Callback", "V1Flags", "V1Metric", "V1Prelude", "is_v1_metric"]


class V1Prelude(LoopHelper):
    """What fastai v1's ``CallbackHandler`` did at an event *before* calling its callbacks.

    Runs first (order ``-10**9``): at ``on_epoch_begin`` it cleared ``stop_training``, at
    ``on_batch_begin`` the batch's flags (``stop_epoch``, ``skip_step``, ``skip_zero``,
    ``skip_bwd``), so a flag a callback returns from those methods holds for that epoch or batch;
    at ``on_backward_begin`` it added the loss to its debiased moving average (``beta`` 0.98), so
    from then on a v1 callback's ``smooth_loss`` includes the current batch (fastai v2's Recorder
    updates its own at ``after_batch``). The average is kept only once some v1 method can read
    ``smooth_loss`` (``needed``), in new tensors each batch (a callback may keep what it was
    given); before the first backward of a fit it is 0 (fastai v1 passed no ``smooth_loss`` yet).
    With manual optimization, each backward adds its loss.

    Example:
        >>> state = {"stop_training": True}
        >>> learn = type("L", (), {"loss": torch.tensor(2.0)})()
        >>> prelude = V1Prelude(learn, state); prelude.needed = True
        >>> prelude.before_epoch(); prelude.before_backward(); state["stop_training"], prelude.smooth
        (False, tensor(2.))
    """

    order = -(10**9)  # first, not last

    def __init__(self, learn: Any, state: dict[str, Any], beta: float = 0.98) -> None:
        super().__init__(learn)
        self.state, self.beta = state, beta
        self.needed = False
        self.before_fit()

    @property
    def name(self) -> str:
        return "_v1_prelude"

    def before_fit(self) -> None:
        self._avg: Tensor | None = None
        self._n = 0
        self._smooth: Tensor | None = torch.tensor(0.0)

    def before_epoch(self) -> None:
        self.state["stop_training"] = False

    def before_batch(self) -> None:
        state = self.state
        state["stop_epoch"] = state["skip_step"] = state["skip_zero"] = state["skip_bwd"] = False

    def before_backward(self) -> None:
        loss = self.learn.loss
        if not self.needed or not isinstance(loss, Tensor):
            return
        loss = loss.detach().float()
        self._n += 1
        self._avg = loss * (1 - self.beta) if self._avg is None else torch.lerp(self._avg, loss, 1 - self.beta)
        self._smooth = None

    @property
    def smooth(self) -> Tensor:
        """The debiased average (computed when first read after a batch)."""
        if self._smooth is None:
            assert self._avg is not None
            self._smooth = self._avg / (1 - self.beta**self._n)
        return self._smooth


class V1Flags(LoopHelper):
    """Shared v1 loop state for a learner, and the last-running callback that acts on its flags.

    v1 callbacks return flags (``stop_epoch``, ``skip_step``, ...); fastai v1 acted on
    them after *all* callbacks of an event ran, so this callback runs last (huge order)
    and raises the matching v2 cancel.

    The keyword state is built once per event, at the first v1 callback that runs in it
    (as fastai v1's handler set it once before calling its callbacks); later v1 callbacks
    of the event get it with the updates earlier ones returned. Batch values that another
    callback rebound in between (``xb``, ``yb``, ``pred``, ``loss``) are read again;
    ``smooth_loss`` is fastai v1's own (:class:`V1Prelude`). Running last in every v1 event,
    this callback marks the state stale.
    """

    def __init__(self, learn: Any) -> None:
        super().__init__(learn)
        self.state: dict[str, Any] = {"last_metrics": None, "stop_training": False, "skip_validate": False}
        self.prelude = V1Prelude(learn, self.state)
        self.prelude.before_batch()
        self._fresh: str | None = None  # the event the state was built for; None: stale
        self._seen: tuple[Any, ...] = ()  # (xb, yb, pred, loss) it was built from

    @property
    def name(self) -> str:
        return "_v1_flags"

    def kwargs(self, event: str) -> dict[str, Any]:
        """The v1 state passed as keyword arguments at ``event``, brought up to date.

        The wrappers' calls test first whether the state is current (built for this event, from
        the batch values the learner holds now) and call this only when it is not.
        """
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
        return self.state

    def _batch_values(self, event: str) -> None:
        learn, state = self.learn, self.state
        xb, yb, pred, loss = learn.xb, learn.yb, learn.pred, learn.loss
        self._seen = (xb, yb, pred, loss)
        state["last_input"] = xb[0] if len(xb) == 1 else xb
        state["last_target"] = yb[0] if len(yb) == 1 else yb
        state["last_output"] = pred
        state["last_loss"] = loss.detach() if event == "after_batch" and isinstance(loss, Tensor) else loss
        state["smooth_loss"] = self.prelude.smooth if self.prelude.needed else None

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

    def before_batch(self) -> None:
        self._fresh = None

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
        self._bind(V1_EVENTS)

    def _make(self, bound: Callable[..., Any], method: str) -> Callable[[], None]:
        flags = self.flags
        kwargs, update = flags.kwargs, flags.update
        event = V1_EVENTS[method]
        source = f"{type(self.wrapped).__name__}.{method}"
        learn = self.learn
        reads = keywords_read(bound, V1_ARGUMENTS)
        if reads is None or "smooth_loss" in reads[0]:
            flags.prelude.needed = True

        if method == "on_train_begin":

            def call() -> None:
                names = [getattr(m, "name", type(m).__name__) for m in learn.metrics]
                update(source, bound(**kwargs(event), metrics_names=names))

        elif method == "on_train_end":

            def call() -> None:
                exception = learn.exception if learn.exception is not None else False
                update(source, bound(**kwargs(event), exception=exception))

        else:
            if reads is not None and not reads[0]:

                def call() -> None:  # reads none of the state: nothing to bring up to date, nothing to bind
                    result = bound()
                    if result is not None:
                        update(source, result)

                return call
            narrow = None if reads is None else narrow_call(bound, *reads)

            def call() -> None:
                # Current (built for this event from the batch values held now)? Tested inline, not
                # in a method: this runs for every v1 callback at every event.
                seen = flags._seen
                if (
                    flags._fresh == event
                    and learn.xb is seen[0]
                    and learn.yb is seen[1]
                    and learn.pred is seen[2]
                    and learn.loss is seen[3]
                ):
                    state = flags.state
                else:
                    state = kwargs(event)
                result = bound(**state) if narrow is None else narrow(state)
                if result is not None:
                    update(source, result)

        return call


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

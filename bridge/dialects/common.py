"""What every dialect shares: the method tables, signature helpers and the wrapper base."""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from ..callback import RunFlag, callback_name

__all__ = ["COURSE_EVENTS", "V1_ARGUMENTS", "V1_EVENTS", "V1_STATE_KEYS", "LoopHelper"]

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

#: The keyword arguments every v1 method is called with (fastai v1's ``CallbackHandler.state_dict``).
V1_ARGUMENTS = V1_STATE_KEYS | {
    "epoch",
    "n_epochs",
    "iteration",
    "num_batch",
    "train",
    "pbar",
    "metrics",
    "smooth_loss",
}


def _defined(cb: object, names: Any) -> list[str]:
    return [n for n in names if callable(inspect.getattr_static(cb, n, None))]


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


class LoopHelper:
    """A dialect's own callback in the handler: last in every event it has, training and validation alike.

    Not one of the user's callbacks (``loop_helper``: left out of ``learn.cbs``, the summaries
    and ``show_training_loop``; see :func:`bridge.handler.is_loop_helper`).

    Example:
        >>> LoopHelper(learn=None).order, LoopHelper.loop_helper
        (1000000000, True)
    """

    order = 10**9
    loop_helper = True
    run, run_train, run_valid = RunFlag(), RunFlag(), RunFlag()  # writes reported: flags read once per phase

    def __init__(self, learn: Any) -> None:
        self.learn = learn


class _Wrapped:
    """Common part of the dialect wrappers: order, run flags, identity of the original."""

    run, run_train, run_valid = RunFlag(), RunFlag(), RunFlag()  # writes reported: flags read once per phase

    def __init__(self, cb: Any, learn: Any) -> None:
        self.wrapped = cb
        self.learn = learn
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

    def _bind(self, table: dict[str, str]) -> None:
        """For each dialect method the callback defines, the v2 event ``table`` names calls ``self._make(...)``."""
        cb = self.wrapped
        for method in _defined(cb, table):
            setattr(self, table[method], self._make(getattr(cb, method), method))  # type: ignore[attr-defined]

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
from typing import Any

from ..events import EVENT_NAMES
from .common import _COURSE_ONLY, COURSE_EVENTS, V1_EVENTS, V1_STATE_KEYS, _defined, _Wrapped
from .course import CourseCallback, FloatLrs, RunnerView
from .seed import SEED_EVENTS, SeedCallback, SeedFlags, is_seed
from .v1 import V1Callback, V1Flags, V1Metric, V1Prelude, is_v1_metric

__all__ = [
    "COURSE_EVENTS",
    "V1_EVENTS",
    "V1_STATE_KEYS",
    "CourseCallback",
    "FloatLrs",
    "RunnerView",
    "SeedCallback",
    "SeedFlags",
    "V1Callback",
    "V1Flags",
    "V1Metric",
    "V1Prelude",
    "dialect_of",
    "is_v1_metric",
    "unwrap",
    "wrap_callback",
]


def dialect_of(cb: object) -> str:
    """``'v2'``, ``'seed'``, ``'course'`` or ``'v1'`` for a callback, by the methods it defines.

    The article's (seed) callbacks and course-v3's share ``begin_*`` names; the seed's take
    their event's argument (``begin_fit(self, learn)``) and have no ``set_runner``. A
    ``Callback`` subclass (bridge's or fastai's) that defines no event yet is a v2 callback that
    holds state. Raises ``TypeError`` for a callback mixing dialects (naming the methods) or
    another object defining no known event.

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
    seed = is_seed(cb)
    kinds = {
        "v1": v1,
        "seed" if seed else "course": _defined(cb, SEED_EVENTS)
        if seed
        else course_only + (["set_runner"] * has_runner),
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
    if any(k.__name__ == "Callback" for k in type(cb).__mro__[:-1]):
        return "v2"  # a Callback subclass with no event (yet): it holds state, as in fastai
    raise TypeError(
        f"`cbs`: {type(cb).__name__} defines no known event method; a callback needs at least one fastai v2 "
        f"event ({', '.join(e for e in EVENT_NAMES if e != 'after_create')}), course-v3 method "
        f"({', '.join(COURSE_EVENTS)}), the article's method ({', '.join(SEED_EVENTS)}, taking their "
        f"arguments) or fastai v1 method ({', '.join(V1_EVENTS)})"
    )


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
    if dialect == "seed":
        return SeedCallback(cb, learn)
    return cb

"""The events of the fastai v2 training loop, in the order ``Learner.fit`` fires them.

::

    after_create                      once, when the Learner is built
    before_fit
      for each epoch:
        before_epoch
          before_train
            for each batch:
              before_batch
              after_pred
              after_loss
              before_backward
              after_backward          (after_cancel_backward first if cancelled)
              before_step
              after_step              (after_cancel_step first if cancelled)
              after_batch             (after_cancel_batch first if cancelled)
          after_train                 (after_cancel_train first if cancelled)
          before_validate
            for each batch: before_batch, after_pred, after_loss, after_batch
          after_validate              (after_cancel_validate first if cancelled)
        after_epoch                   (after_cancel_epoch first if cancelled)
    after_fit                         (after_cancel_fit first if cancelled)

An outer cancel skips the inner ``after_*`` events: ``CancelFitException`` raised in
``after_loss`` gives ``after_pred, after_cancel_fit, after_fit`` with no ``after_batch``.

Example:
    >>> Event.before_fit.value
    'before_fit'
    >>> Event.after_batch in INNER_LOOP
    True
"""

from __future__ import annotations

from enum import Enum

__all__ = ["EVENT_NAMES", "INNER_LOOP", "LEVELS", "Event"]

#: Levels of the loop, outermost first; each has before_/after_/after_cancel_ events.
LEVELS: tuple[str, ...] = ("fit", "epoch", "train", "validate", "batch", "backward", "step")


class Event(str, Enum):
    """One point of the loop where callbacks run; the value is the method name.

    Example:
        >>> Event("after_loss") is Event.after_loss
        True
    """

    after_create = "after_create"
    before_fit = "before_fit"
    before_epoch = "before_epoch"
    before_train = "before_train"
    before_batch = "before_batch"
    after_pred = "after_pred"
    after_loss = "after_loss"
    before_backward = "before_backward"
    after_cancel_backward = "after_cancel_backward"
    after_backward = "after_backward"
    before_step = "before_step"
    after_cancel_step = "after_cancel_step"
    after_step = "after_step"
    after_cancel_batch = "after_cancel_batch"
    after_batch = "after_batch"
    after_cancel_train = "after_cancel_train"
    after_train = "after_train"
    before_validate = "before_validate"
    after_cancel_validate = "after_cancel_validate"
    after_validate = "after_validate"
    after_cancel_epoch = "after_cancel_epoch"
    after_epoch = "after_epoch"
    after_cancel_fit = "after_cancel_fit"
    after_fit = "after_fit"


#: Every event name, in loop order.
EVENT_NAMES: tuple[str, ...] = tuple(e.value for e in Event)

#: Batch-level events: gated by a callback's ``run_train`` / ``run_valid``.
INNER_LOOP: frozenset[str] = frozenset(
    {
        "before_batch",
        "after_pred",
        "after_loss",
        "before_backward",
        "after_cancel_backward",
        "after_backward",
        "before_step",
        "after_cancel_step",
        "after_step",
        "after_cancel_batch",
        "after_batch",
    }
)

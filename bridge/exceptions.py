"""The seven control-flow exceptions of fastai v2.

A callback raises one to skip part of the loop; the loop catches it at the level it
names, fires ``after_cancel_<level>`` and then ``after_<level>``, and goes on:

========================  ======================  =============================================
raised                    then fires               skips
========================  ======================  =============================================
CancelBatchException      after_cancel_batch       rest of the batch, step and zero_grad
CancelBackwardException   after_cancel_backward    backward only
CancelStepException       after_cancel_step        the optimizer step only
CancelTrainException      after_cancel_train       remaining train batches (validation runs)
CancelValidException      after_cancel_validate    remaining validation
CancelEpochException      after_cancel_epoch       rest of the epoch, validation included
CancelFitException        after_cancel_fit         everything left
========================  ======================  =============================================

Example:
    >>> from bridge import Callback, CancelFitException
    >>> class StopAfter(Callback):
    ...     def __init__(self, n: int) -> None:
    ...         self.n = n
    ...     def after_batch(self) -> None:
    ...         if self.train_iter >= self.n:
    ...             raise CancelFitException()
"""

from __future__ import annotations

__all__ = [
    "LEVEL_OF",
    "CancelBackwardException",
    "CancelBatchException",
    "CancelEpochException",
    "CancelException",
    "CancelFitException",
    "CancelStepException",
    "CancelTrainException",
    "CancelValidException",
]


class CancelException(Exception):
    """Base of the cancel exceptions; ``level`` names the loop level it cancels.

    Example:
        >>> issubclass(CancelFitException, CancelException)
        True
    """

    level: str = ""


class CancelBatchException(CancelException):
    """Skip the rest of this batch (no step, no zero_grad); fires ``after_cancel_batch``.

    Example:
        >>> CancelBatchException.level  # in a callback: raise CancelBatchException()
        'batch'
    """

    level = "batch"


class CancelBackwardException(CancelException):
    """Skip the backward pass of this batch; fires ``after_cancel_backward``.

    Example:
        >>> CancelBackwardException.level  # in a callback: raise CancelBackwardException()
        'backward'
    """

    level = "backward"


class CancelStepException(CancelException):
    """Skip the optimizer step of this batch; fires ``after_cancel_step``.

    Example:
        >>> CancelStepException.level  # in a callback: raise CancelStepException()
        'step'
    """

    level = "step"


class CancelTrainException(CancelException):
    """Skip the remaining training batches of this epoch (validation still runs).

    Example:
        >>> CancelTrainException.level  # in a callback: raise CancelTrainException()
        'train'
    """

    level = "train"


class CancelValidException(CancelException):
    """Skip the remaining validation batches of this epoch.

    Example:
        >>> CancelValidException.level  # in a callback: raise CancelValidException()
        'validate'
    """

    level = "validate"


class CancelEpochException(CancelException):
    """Skip the rest of this epoch, validation included.

    Example:
        >>> CancelEpochException.level  # in a callback: raise CancelEpochException()
        'epoch'
    """

    level = "epoch"


class CancelFitException(CancelException):
    """Stop training now; fires ``after_cancel_fit`` and ``after_fit``.

    Example:
        >>> CancelFitException.level  # in a callback: raise CancelFitException()
        'fit'
    """

    level = "fit"


#: The loop level each cancel exception ends.
LEVEL_OF: dict[type[CancelException], str] = {
    cls: cls.level
    for cls in (
        CancelBatchException,
        CancelBackwardException,
        CancelStepException,
        CancelTrainException,
        CancelValidException,
        CancelEpochException,
        CancelFitException,
    )
}

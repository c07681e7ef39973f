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
        >>> raise CancelBatchException()  # doctest: +SKIP
    """

    level = "batch"


class CancelBackwardException(CancelException):
    """Skip the backward pass of this batch; fires ``after_cancel_backward``.

    Example:
        >>> raise CancelBackwardException()  # doctest: +SKIP
    """

    level = "backward"


class CancelStepException(CancelException):
    """Skip the optimizer step of this batch; fires ``after_cancel_step``.

    Example:
        >>> raise CancelStepException()  # doctest: +SKIP
    """

    level = "step"


class CancelTrainException(CancelException):
    """Skip the remaining training batches of this epoch (validation still runs).

    Example:
        >>> raise CancelTrainException()  # doctest: +SKIP
    """

    level = "train"


class CancelValidException(CancelException):
    """Skip the remaining validation batches of this epoch.

    Example:
        >>> raise CancelValidException()  # doctest: +SKIP
    """

    level = "validate"


class CancelEpochException(CancelException):
    """Skip the rest of this epoch, validation included.

    Example:
        >>> raise CancelEpochException()  # doctest: +SKIP
    """

    level = "epoch"


class CancelFitException(CancelException):
    """Stop training now; fires ``after_cancel_fit`` and ``after_fit``.

    Example:
        >>> raise CancelFitException()  # doctest: +SKIP
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

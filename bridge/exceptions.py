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
    "as_cancel",
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


_BY_NAME: dict[str, type[CancelException]] = {cls.__name__: cls for cls in LEVEL_OF}
_FOREIGN: dict[type, type[CancelException] | None] = {}


def as_cancel(exc: BaseException) -> CancelException | None:
    """fastlight's cancel for another library's (fastai's) ``Cancel*Exception``, or None.

    Recognised by class name along the MRO, so fastai's own seven classes and user subclasses of
    them keep fastai's meaning without importing fastai. (course-v3 notebooks define classes of the
    same names with the Runner's meaning; their dialect translates those before this point.)

    Example:
        >>> class CancelBatchException(Exception): ...  # fastai's, as fastai.callback.core defines it
        >>> class SkipThis(CancelBatchException): ...
        >>> type(as_cancel(SkipThis())).__name__, as_cancel(ValueError())
        ('CancelBatchException', None)
    """
    if isinstance(exc, CancelException):
        return exc
    kind = type(exc)
    if kind not in _FOREIGN:
        _FOREIGN[kind] = next((_BY_NAME[k.__name__] for k in kind.__mro__ if k.__name__ in _BY_NAME), None)
    cls = _FOREIGN[kind]
    return cls() if cls is not None else None

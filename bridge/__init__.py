"""fastlight's adapter layer: fastai's DataBunch, Learner and callbacks on Lightning's Trainer.

Example:
    >>> from bridge import DataBunch, Learner, Callback
    >>> issubclass(Learner, object) and issubclass(Callback, object)
    True
"""

from .adapter import LightningAdapter
from .callback import Callback
from .data import DataBunch
from .events import Event
from .exceptions import (
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from .export import load_learner
from .handler import CallbackHandler
from .interpret import ClassificationInterpretation
from .learner import Learner
from .loaders import EvalDataLoader, ResumableDataLoader
from .metrics import AvgMetric
from .module import LearnerModule
from .optim import SGD, Adam
from .runner import Runner, fit

__all__ = [
    "SGD",
    "Adam",
    "AvgMetric",
    "Callback",
    "CallbackHandler",
    "CancelBackwardException",
    "CancelBatchException",
    "CancelEpochException",
    "CancelException",
    "CancelFitException",
    "CancelStepException",
    "CancelTrainException",
    "CancelValidException",
    "ClassificationInterpretation",
    "DataBunch",
    "EvalDataLoader",
    "Event",
    "Learner",
    "LearnerModule",
    "LightningAdapter",
    "ResumableDataLoader",
    "Runner",
    "fit",
    "load_learner",
]

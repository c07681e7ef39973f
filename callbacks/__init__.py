"""fastlight's callback library: fastai's callbacks, correct under DDP and mixed precision.

Example:
    >>> from callbacks import Recorder
    >>> Recorder().order
    50
"""

from .csv_logger import CSVLogger
from .mixup import CutMix, MixHandler, MixUp
from .recorder import Recorder
from .tensorboard import TensorBoardCallback
from .terminate import TerminateOnNaNCallback
from .tracker import EarlyStoppingCallback, ReduceLROnPlateau, SaveModelCallback, TrackerCallback

__all__ = [
    "CSVLogger",
    "CutMix",
    "EarlyStoppingCallback",
    "MixHandler",
    "MixUp",
    "Recorder",
    "ReduceLROnPlateau",
    "SaveModelCallback",
    "TensorBoardCallback",
    "TerminateOnNaNCallback",
    "TrackerCallback",
]

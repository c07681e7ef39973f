"""fastlight's callback library: fastai's callbacks, correct under DDP and mixed precision.

Example:
    >>> from callbacks import Recorder
    >>> Recorder().order
    50
"""

from .csv_logger import CSVLogger
from .grad import GradientAccumulation, GradientClip
from .lr_finder import LRFinder, SuggestionMethod, lr_find, minimum, plot_lr_find, slide, steep, valley
from .mixup import CutMix, MixHandler, MixUp
from .recorder import Recorder
from .schedule import (
    ParamScheduler,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    combine_scheds,
    combined_cos,
    fine_tune,
    fit_flat_cos,
    fit_one_cycle,
    fit_sgdr,
)
from .tensorboard import TensorBoardCallback
from .terminate import TerminateOnNaNCallback
from .tracker import EarlyStoppingCallback, ReduceLROnPlateau, SaveModelCallback, TrackerCallback

__all__ = [
    "CSVLogger",
    "CutMix",
    "EarlyStoppingCallback",
    "GradientAccumulation",
    "GradientClip",
    "LRFinder",
    "MixHandler",
    "MixUp",
    "ParamScheduler",
    "Recorder",
    "ReduceLROnPlateau",
    "SaveModelCallback",
    "SchedCos",
    "SchedExp",
    "SchedLin",
    "SchedNo",
    "SchedPoly",
    "SuggestionMethod",
    "TensorBoardCallback",
    "TerminateOnNaNCallback",
    "TrackerCallback",
    "combine_scheds",
    "combined_cos",
    "fine_tune",
    "fit_flat_cos",
    "fit_one_cycle",
    "fit_sgdr",
    "lr_find",
    "minimum",
    "plot_lr_find",
    "slide",
    "steep",
    "valley",
]

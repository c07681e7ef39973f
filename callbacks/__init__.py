"""fastlight's callback library: fastai's callbacks, correct under DDP and mixed precision.

Example:
    >>> from callbacks import Recorder
    >>> Recorder().order
    50
"""

from .recorder import Recorder

__all__ = ["Recorder"]

# -- schedules, lr finder, gradient tools (issue 5) --
from .grad import GradientAccumulation, GradientClip
from .lr_finder import LRFinder, SuggestionMethod, lr_find, minimum, plot_lr_find, slide, steep, valley
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

__all__ += [
    "GradientAccumulation",
    "GradientClip",
    "LRFinder",
    "ParamScheduler",
    "SchedCos",
    "SchedExp",
    "SchedLin",
    "SchedNo",
    "SchedPoly",
    "SuggestionMethod",
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

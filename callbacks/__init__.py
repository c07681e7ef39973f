"""fastlight's callback library: fastai's callbacks, correct under DDP and mixed precision.

Example:
    >>> from callbacks import Recorder
    >>> Recorder().order
    50
"""

from .recorder import Recorder

__all__ = ["Recorder"]

# MixUp / CutMix (issue 6)
from .mixup import CutMix, MixHandler, MixUp

__all__ += ["CutMix", "MixHandler", "MixUp"]

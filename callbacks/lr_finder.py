"""The learning-rate finder (re-exported from :mod:`bridge.lr_finder`).

They live in ``bridge`` because the Learner's own methods use them; this module keeps
``callbacks.lr_finder`` imports working.

Example:
    >>> from callbacks.lr_finder import LRFinder
    >>> callable(LRFinder)
    True
"""

from bridge.lr_finder import (
    LRFinder,
    SuggestionMethod,
    lr_find,
    minimum,
    plot_lr_find,
    slide,
    steep,
    valley,
)

__all__ = [
    "LRFinder",
    "SuggestionMethod",
    "lr_find",
    "minimum",
    "plot_lr_find",
    "slide",
    "steep",
    "valley",
]

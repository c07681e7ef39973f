"""``Recorder``: fastai's history and epoch table (re-exported from :mod:`bridge.recorder`).

It lives in ``bridge`` because every Learner adds one; this module keeps ``callbacks.recorder``
imports working.

Example:
    >>> from callbacks.recorder import Recorder
    >>> Recorder().order
    50
"""

from bridge.recorder import Recorder, format_time

__all__ = ["Recorder", "format_time"]

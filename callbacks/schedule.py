"""Schedules, ``ParamScheduler`` and the ``fit_one_cycle`` family (re-exported from :mod:`bridge`).

They live in ``bridge.schedule`` and ``bridge.recipes`` because the Learner's own methods use
them; this module keeps ``callbacks.schedule`` imports working.

Example:
    >>> from callbacks.schedule import SchedLin
    >>> float(SchedLin(0.0, 1.0)(0.5))
    0.5
"""

from bridge.recipes import fine_tune, fit_flat_cos, fit_one_cycle, fit_sgdr
from bridge.schedule import (
    ParamScheduler,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    combine_scheds,
    combined_cos,
    sched_cos,
    sched_exp,
    sched_lin,
    sched_no,
)

__all__ = [
    "ParamScheduler",
    "SchedCos",
    "SchedExp",
    "SchedLin",
    "SchedNo",
    "SchedPoly",
    "combine_scheds",
    "combined_cos",
    "fine_tune",
    "fit_flat_cos",
    "fit_one_cycle",
    "fit_sgdr",
    "sched_cos",
    "sched_exp",
    "sched_lin",
    "sched_no",
]

"""Argument checks of the tracker callbacks (``monitor``, ``min_delta``, ``patience``, ``comp``, ``fname``).

Example:
    >>> _check_patience("EarlyStoppingCallback", 2)
    2
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from typing import Any

import numpy as np

Comp = Callable[[Any, Any], Any]


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_monitor(where: str, monitor: object) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"{where}: `monitor` must be a non-empty metric name (str), got {monitor!r}")
    return monitor


def _check_min_delta(where: str, min_delta: object) -> float:
    if not _is_number(min_delta) or not math.isfinite(float(min_delta)) or float(min_delta) < 0:  # type: ignore[arg-type]
        raise ValueError(f"{where}: `min_delta` must be a finite number >= 0, got {min_delta!r}")
    return float(min_delta)  # type: ignore[arg-type]


def _check_patience(where: str, patience: object) -> int:
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
        raise ValueError(f"{where}: `patience` must be an int >= 0 (epochs without improvement), got {patience!r}")
    return int(patience)


def _infer_less(where: str, comp: Comp) -> bool:
    """Whether ``comp`` means "smaller is better" (``np.less``, ``operator.lt``, ...)."""
    if comp in (np.less, np.less_equal, operator.lt, operator.le):
        return True
    if comp in (np.greater, np.greater_equal, operator.gt, operator.ge):
        return False
    try:
        # A custom comparison is probed once, as the tracker will call it: comp(value, best).
        return bool(comp(0.0, 1.0))
    except Exception as exc:
        raise TypeError(
            f"{where}: `comp` must compare two floats, as comp(value, best) -> bool (e.g. np.less or "
            f"np.greater), got {comp!r}; comp(0.0, 1.0) raised {type(exc).__name__}: {exc}"
        ) from exc


def _check_fname(where: str, fname: object) -> str:
    name = str(fname) if isinstance(fname, (str, os.PathLike)) else ""
    if not name or name.endswith(("/", os.sep)) or os.path.basename(name) in ("", ".", "..") or "\x00" in name:
        raise TypeError(
            f"{where}: `fname` must be a non-empty file name (str, no NUL character, not a folder), got {fname!r}"
        )
    return name

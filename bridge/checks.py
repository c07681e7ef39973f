"""Argument checks shared by the Learner, its recipes and the callbacks.

Each check raises as early as possible with a message that names where the call came
from, the argument, the value given and what is accepted.

Example:
    >>> check_epochs(3, "fit")
    3
    >>> check_positive(0, "div", "fit_one_cycle")
    Traceback (most recent call last):
    ...
    ValueError: fit_one_cycle: `div` must be a positive finite number, got 0
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = [
    "check_epochs",
    "check_lr",
    "check_moms",
    "check_path",
    "check_pct",
    "check_positive",
    "check_wd",
    "number",
]


def number(value: object) -> float | None:
    """``value`` as a float when it is a real number (numpy's included, bools not), else None.

    Example:
        >>> number(np.float32(0.5)), number(True), number("1")
        (0.5, None, None)
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    return None


def check_epochs(n: object, where: str, name: str = "n_epoch", minimum: int = 1) -> int:
    """``n`` as an int >= ``minimum``.

    Example:
        >>> check_epochs(0, "fit_sgdr", "n_cycles")
        Traceback (most recent call last):
        ...
        ValueError: fit_sgdr: `n_cycles` must be an int >= 1, got 0
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{where}: `{name}` must be an int >= {minimum}, got {n!r}")
    return n


def check_positive(value: object, name: str, where: str) -> float:
    """``value`` as a positive finite float.

    Example:
        >>> check_positive(2, "div", "fit_one_cycle")
        2.0
    """
    v = number(value)
    if v is None or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: `{name}` must be a positive finite number, got {value!r}")
    return v


def check_pct(pct: object, where: str, name: str = "pct_start") -> float:
    """``pct`` as a float in [0, 1].

    Example:
        >>> check_pct(0.25, "fit_one_cycle")
        0.25
    """
    v = number(pct)
    if v is None or not 0.0 <= v <= 1.0:
        raise ValueError(f"{where}: `{name}` must be a number in [0, 1], got {pct!r}")
    return v


def check_wd(wd: object, where: str) -> None:
    """Weight decay: a finite number >= 0, or None (the optimizer's default).

    Example:
        >>> check_wd(None, "fit"); check_wd(0.01, "fit")
    """
    if wd is None:
        return
    v = number(wd)
    if v is None or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}: `wd` must be a finite number >= 0 or None, got {wd!r}")


def check_moms(moms: object, where: str, optional: bool = False) -> None:
    """Three momentums in [0, 1] (start, middle, end); None too when ``optional``.

    Example:
        >>> check_moms((0.95, 0.85, 0.95), "Learner")
    """
    if optional and moms is None:
        return
    vals = [number(m) for m in moms] if isinstance(moms, (list, tuple)) and len(moms) == 3 else [None]
    if not all(v is not None and 0.0 <= v <= 1.0 for v in vals):
        also = " or None" if optional else ""
        raise ValueError(f"{where}: `moms` must be 3 numbers in [0, 1] (start, middle, end){also}, got {moms!r}")


def check_lr(lr: object, where: str, name: str = "lr", groups: bool = False, allow_zero: bool = False) -> None:
    """A learning rate: a positive finite number; with ``groups``, also None, a slice or one value per group.

    ``allow_zero`` accepts 0 too (a valid SGD rate: a run that checks the pipeline without updates).

    Example:
        >>> check_lr(slice(1e-4, 1e-2), "fit_one_cycle", "lr_max", groups=True)
        >>> check_lr(slice(1e-4, 1e-2), "fit")
        Traceback (most recent call last):
        ...
        TypeError: fit: `lr` as a slice (discriminative learning rates) needs fit_one_cycle with a splitter
    """
    if groups and lr is None:
        return
    if isinstance(lr, slice):
        if not groups:
            raise TypeError(
                f"{where}: `{name}` as a slice (discriminative learning rates) needs fit_one_cycle with a splitter"
            )
        if lr.stop is None or lr.step is not None:
            raise ValueError(f"{where}: `{name}` as a slice must be slice(stop) or slice(start, stop), got {lr!r}")
        values: list[object] = [v for v in (lr.start, lr.stop) if v is not None]
    elif groups and isinstance(lr, (list, tuple, np.ndarray)):
        values = list(lr)
        if not values:
            raise ValueError(f"{where}: `{name}` must be a number, a slice or one number per param group, got {lr!r}")
    else:
        values = [lr]
    for v in values:
        if allow_zero:
            x = number(v)
            if x is None or not math.isfinite(x) or x < 0:
                raise ValueError(f"{where}: `{name}` must be a finite number >= 0, got {v!r}")
        else:
            check_positive(v, name, where)


def check_path(value: object, name: str, where: str) -> str:
    """A path (str or os.PathLike) without NUL characters, as text.

    Example:
        >>> check_path("models", "model_dir", "Learner")
        'models'
    """
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(f"{where}: `{name}` must be a path (str or os.PathLike), got {type(value).__name__}")
    if "\x00" in text:
        raise ValueError(f"{where}: `{name}` must be a path without NUL characters, got {value!r}")
    return text

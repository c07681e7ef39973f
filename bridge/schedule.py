"""fastai's hyper-parameter schedules: ``ParamScheduler``, one-cycle, flat-cos, SGDR, ``fine_tune``.

A schedule is a function ``f(pos) -> value`` of the training progress ``pos`` in [0, 1]
(``learn.pct_train``). The functions here have fastai's names, signatures and formulas
(fastai/callback/schedule.py); values may be numbers or numpy arrays (one per param group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .callback import Callback
from .checks import check_pct, number
from .lr_ranges import expand_to_groups
from .optim import get_hypers, set_hyper

__all__ = [
    "ParamScheduler",
    "SchedCos",
    "SchedExp",
    "SchedLin",
    "SchedNo",
    "SchedPoly",
    "combine_scheds",
    "combined_cos",
    "sched_cos",
    "sched_exp",
    "sched_lin",
    "sched_no",
]

Sched = Callable[[float], Any]


def sched_lin(start: Any, end: Any, pos: float) -> Any:
    """Linear from ``start`` to ``end``.

    Example:
        >>> sched_lin(1.0, 3.0, 0.5)
        2.0
    """
    return start + pos * (end - start)


def sched_cos(start: Any, end: Any, pos: float) -> Any:
    """Half-cosine from ``start`` to ``end``.

    Example:
        >>> round(sched_cos(0.0, 2.0, 0.5), 6)
        1.0
    """
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def sched_no(start: Any, end: Any, pos: float) -> Any:
    """Constant ``start``.

    Example:
        >>> sched_no(1.0, 3.0, 0.5)
        1.0
    """
    return start


def sched_exp(start: Any, end: Any, pos: float) -> Any:
    """Exponential from ``start`` to ``end``.

    Example:
        >>> round(sched_exp(1.0, 100.0, 0.5), 6)
        10.0
    """
    return start * (end / start) ** pos


def _check_value(value: object, name: str, where: str) -> Any:
    """A schedule end point: a number, a numpy array/number or a tensor (one value per param group)."""
    kinds = (int, float, np.number, np.ndarray, torch.Tensor)
    ok = isinstance(value, kinds) and not isinstance(value, (bool, np.bool_))
    if ok and isinstance(value, (np.ndarray, torch.Tensor)):
        ok = value.dtype.is_floating_point if isinstance(value, torch.Tensor) else np.issubdtype(value.dtype, np.number)
        ok = ok and (value.ndim <= 1 and (value.ndim == 0 or len(value) > 0))
    if not ok:
        raise TypeError(
            f"{where}: `{name}` must be a number, or a 1-d numpy array / tensor of numbers (one per param "
            f"group; not a list), got {value!r}"
        )
    return value


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return np.asarray(value.detach().cpu().double().numpy())
    return np.asarray(value, dtype=np.float64)


class _Annealer:
    """``f(start, end, pos)`` with ``start`` and ``end`` bound (picklable, unlike a closure)."""

    def __init__(self, f: Callable[[Any, Any, float], Any], start: Any, end: Any) -> None:
        self.f, self.start, self.end = f, start, end

    def __call__(self, pos: float) -> Any:
        return self.f(self.start, self.end, pos)

    def __repr__(self) -> str:
        return f"{self.f.__name__}({self.start!r}, {self.end!r})"


def SchedLin(start: Any, end: Any) -> Sched:
    """Linear schedule function from ``start`` to ``end``.

    Example:
        >>> SchedLin(0.0, 1.0)(0.25)
        0.25
    """
    _check_value(start, "start", "SchedLin")
    _check_value(end, "end", "SchedLin")
    return _Annealer(sched_lin, start, end)


def SchedCos(start: Any, end: Any) -> Sched:
    """Cosine schedule function from ``start`` to ``end``.

    Example:
        >>> SchedCos(1.0, 0.0)(1.0)
        0.0
    """
    _check_value(start, "start", "SchedCos")
    _check_value(end, "end", "SchedCos")
    return _Annealer(sched_cos, start, end)


def SchedNo(start: Any, end: Any) -> Sched:
    """Constant schedule function with ``start`` value.

    Example:
        >>> SchedNo(0.1, 1.0)(0.7)
        0.1
    """
    _check_value(start, "start", "SchedNo")
    return _Annealer(sched_no, start, end)


def SchedExp(start: Any, end: Any) -> Sched:
    """Exponential schedule function from ``start`` to ``end``.

    Example:
        >>> round(SchedExp(1e-3, 1e-1)(0.5), 9)
        0.01
    """
    _check_value(start, "start", "SchedExp")
    _check_value(end, "end", "SchedExp")
    a, b = _as_array(start), _as_array(end)
    if a.shape != b.shape and a.ndim and b.ndim:
        raise ValueError(f"SchedExp: `start` and `end` differ in length, got {start!r} and {end!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = b / a
    if np.any(a == 0) or not np.all(ratio > 0):
        raise ValueError(
            f"SchedExp: `start` must be non-zero with `end` of the same sign (start * (end/start)**pos), "
            f"got start={start!r}, end={end!r}"
        )
    return _Annealer(sched_exp, start, end)


class _Poly:
    def __init__(self, start: Any, end: Any, power: float) -> None:
        self.start, self.end, self.power = start, end, power

    def __call__(self, pos: float) -> Any:
        return self.start + (self.end - self.start) * pos**self.power


def SchedPoly(start: Any, end: Any, power: float) -> Sched:
    """Polynomial schedule (of ``power``) function from ``start`` to ``end``.

    Example:
        >>> SchedPoly(0.0, 1.0, 2)(0.5)
        0.25
    """
    _check_value(start, "start", "SchedPoly")
    _check_value(end, "end", "SchedPoly")
    p = number(power)
    if p is None or not math.isfinite(p) or p < 0:
        raise ValueError(f"SchedPoly: `power` must be a finite number >= 0, got {power!r}")
    return _Poly(start, end, power)


class _Combined:
    def __init__(self, pcts: Sequence[float], scheds: Sequence[Sched]) -> None:
        self.bounds = [0.0]
        for p in pcts:
            self.bounds.append(self.bounds[-1] + float(p))
        self.scheds = list(scheds)

    def __call__(self, pos: float) -> Any:
        bounds = self.bounds
        idx = max((i for i, b in enumerate(bounds) if pos >= b), default=0)
        idx = min(idx, len(bounds) - 2)
        width = bounds[idx + 1] - bounds[idx]
        actual = (pos - bounds[idx]) / width if width > 0 else 1.0
        return self.scheds[idx](actual)


def _floats_or(x: Any) -> list[Any]:
    return x.tolist() if isinstance(x, (np.ndarray, torch.Tensor)) else list(x)


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Sched]) -> Sched:
    """Combine ``scheds`` according to ``pcts`` (fractions of training summing to 1) in one function.

    Each schedule runs over its own share of training, from its position 0 to 1.

    Example:
        >>> f = combine_scheds([0.5, 0.5], [SchedLin(0.0, 1.0), SchedLin(1.0, 0.0)])
        >>> f(0.25), f(0.5), f(0.75)
        (0.5, 1.0, 0.5)
    """
    if not isinstance(pcts, (list, tuple, np.ndarray, torch.Tensor)) or getattr(pcts, "ndim", 1) != 1:
        raise TypeError(f"combine_scheds: `pcts` must be a list of fractions summing to 1, got {pcts!r}")
    if not isinstance(scheds, (list, tuple)):
        raise TypeError(f"combine_scheds: `scheds` must be a list of schedules f(pos), got {scheds!r}")
    if not all(isinstance(p, (int, float, np.number)) and not isinstance(p, bool) for p in _floats_or(pcts)):
        raise TypeError(f"combine_scheds: `pcts` must hold numbers (fractions summing to 1), got {pcts!r}")
    pcts = [float(p) for p in _floats_or(pcts)]
    scheds = list(scheds)
    if len(pcts) != len(scheds) or not pcts:
        raise ValueError(
            f"combine_scheds: `pcts` and `scheds` must be non-empty and of the same length, "
            f"got {len(pcts)} and {len(scheds)}"
        )
    if not all(math.isfinite(p) and p >= 0 for p in pcts) or not abs(sum(pcts) - 1.0) <= 1e-6:
        raise ValueError(f"combine_scheds: `pcts` must be >= 0 and sum to 1, got {pcts}")
    if not all(callable(s) for s in scheds):
        raise TypeError(f"combine_scheds: every entry of `scheds` must be callable as f(pos), got {scheds!r}")
    return _Combined(pcts, scheds)


def combined_cos(pct: float, start: Any, middle: Any, end: Any) -> Sched:
    """Cosine annealing from ``start`` to ``middle`` over ``pct`` of training, then to ``end``.

    Example:
        >>> f = combined_cos(0.25, 1.0, 10.0, 0.0)
        >>> f(0.0), f(0.25), round(f(1.0), 9)
        (1.0, 10.0, 0.0)
    """
    check_pct(pct, "combined_cos", "pct")
    for name, v in (("start", start), ("middle", middle), ("end", end)):
        _check_value(v, name, "combined_cos")
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


def _values(v: Any) -> Any:
    """A schedule's output as a float or a list of floats (numpy arrays and tensors included)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().tolist()
    elif isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return float(v)


class ParamScheduler(Callback):
    """Schedule hyper-parameters according to ``scheds`` (fastai's ``ParamScheduler``).

    ``scheds`` maps a fastai hyper-parameter name (``lr``, ``mom``, ``sqr_mom``, ``wd``,
    ``eps``) to a schedule ``f(pos)`` or a list of schedules, one per param group (the
    splitter's groups, or torch's). Before each training batch every group gets
    ``f(learn.pct_train)``; after it the last group's values are appended to ``hps``, which
    becomes ``learn.recorder.hps`` at the end of fit.

    Example:
        >>> sched = ParamScheduler({"lr": SchedLin(1e-3, 1e-2)})
        >>> learn.fit(2, cbs=sched)  # doctest: +ELLIPSIS
        epoch ...
        >>> [round(lr, 5) for lr in learn.recorder.hps["lr"]]  # 1e-3 + 9e-3 * pos, pos = 0, 1/4, 2/4, 3/4
        [0.001, 0.00325, 0.0055, 0.00775]
    """

    order = 60
    run_valid = False

    def __init__(self, scheds: Mapping[str, Any]) -> None:
        if not isinstance(scheds, dict) or not scheds:
            raise TypeError(f"ParamScheduler: `scheds` must be a non-empty dict name -> schedule, got {scheds!r}")
        for name, f in scheds.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"ParamScheduler: the keys of `scheds` must be hyper-parameter names (str: lr, mom, sqr_mom, "
                    f"wd, eps), got {name!r}"
                )
            fs = f if isinstance(f, (list, tuple)) else [f]
            if not fs or not all(callable(g) for g in fs):
                raise TypeError(
                    f"ParamScheduler: `scheds[{name!r}]` must be callable as f(pos) (e.g. SchedCos(1e-3, 1e-5)) "
                    f"or a list of such, one per param group; got {f!r}"
                )
        self.scheds: dict[str, Any] = dict(scheds)
        self.hps: dict[str, list[float]] = {p: [] for p in scheds}

    @property
    def _in_fit(self) -> bool:
        return self.learn is not None and self.learn.stage == "fit"

    def before_fit(self) -> None:
        if not self._in_fit:
            return
        self.hps = {p: [] for p in self.scheds}
        self._update_val(self.learn.pct_train, check=True)

    def before_batch(self) -> None:
        self._update_val(self.learn.pct_train)

    def _update_val(self, pct: float, check: bool = False) -> None:
        learn = self.learn
        assert learn.opt is not None
        for name, f in self.scheds.items():
            if not check:
                self._set(name, f, pct)
                continue
            # At before_fit: a schedule that cannot drive this optimizer fails here, naming it.
            try:
                self._set(name, f, pct)
            except (KeyError, ValueError, TypeError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(
                    f"{type(self).__name__}: cannot apply `scheds[{name!r}]` ({f!r}) to this optimizer: {exc}. "
                    "Accepted: a fastai hyper-parameter name the optimizer has (lr, mom, sqr_mom, wd, eps) and a "
                    "schedule f(pos) returning a number or one number per param group"
                ) from exc

    def _set(self, name: str, f: Any, pct: float) -> None:
        learn = self.learn
        assert learn.opt is not None
        v = [_values(g(pct)) for g in f] if isinstance(f, (list, tuple)) else _values(f(pct))
        if isinstance(v, list):
            v = expand_to_groups(learn, v)
        set_hyper(learn.opt, name, v)

    def after_batch(self) -> None:
        learn = self.learn
        assert learn.opt is not None
        last = get_hypers(learn.opt)[-1]
        for p in self.scheds:
            self.hps[p].append(float(last[p]) if p in last else float(learn.opt.param_groups[-1][p]))

    def after_fit(self) -> None:
        if self._in_fit and getattr(self.learn, "recorder", None) is not None:
            self.learn.recorder.hps = self.hps  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """Recorded values, for Lightning checkpoints (the position is ``pct_train``)."""
        return {"hps": {k: [float(x) for x in v] for k, v in self.hps.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.hps = {k: list(v) for k, v in state["hps"].items()}

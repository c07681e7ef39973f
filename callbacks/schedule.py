"""fastai's hyper-parameter schedules: ``ParamScheduler``, one-cycle, flat-cos, SGDR, ``fine_tune``.

A schedule is a function ``f(pos) -> value`` of the training progress ``pos`` in [0, 1]
(``learn.pct_train``). The functions here have fastai's names, signatures and formulas
(fastai/callback/schedule.py); values may be numbers or numpy arrays (one per param group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bridge.callback import Callback
from bridge.freeze import expand_to_groups, lr_range
from bridge.optim import get_hypers, set_hyper

if TYPE_CHECKING:
    from bridge.learner import Learner


def _check_trainer_options(where: str, options: dict[str, Any]) -> None:
    from bridge.learner import _check_trainer_options as check

    check(where, options)


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
    p = _number(power)
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
    _check_pct(pct, "combined_cos", "pct")
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
        >>> # learn.fit(2, cbs=sched); learn.recorder.hps["lr"]
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
        self._update_val(self.learn.pct_train, check=True)  # type: ignore[union-attr]

    def before_batch(self) -> None:
        self._update_val(self.learn.pct_train)  # type: ignore[union-attr]

    def _update_val(self, pct: float, check: bool = False) -> None:
        learn = self.learn
        assert learn is not None and learn.opt is not None
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
        assert learn is not None and learn.opt is not None
        v = [_values(g(pct)) for g in f] if isinstance(f, (list, tuple)) else _values(f(pct))
        if isinstance(v, list):
            v = expand_to_groups(learn, v)
        set_hyper(learn.opt, name, v)

    def after_batch(self) -> None:
        learn = self.learn
        assert learn is not None and learn.opt is not None
        last = get_hypers(learn.opt)[-1]
        for p in self.scheds:
            self.hps[p].append(float(last[p]) if p in last else float(learn.opt.param_groups[-1][p]))

    def after_fit(self) -> None:
        if self._in_fit and getattr(self.learn, "recorder", None) is not None:
            self.learn.recorder.hps = self.hps  # type: ignore[union-attr]

    def state_dict(self) -> dict[str, Any]:
        """Recorded values, for Lightning checkpoints (the position is ``pct_train``)."""
        return {"hps": {k: [float(x) for x in v] for k, v in self.hps.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.hps = {k: list(v) for k, v in state["hps"].items()}


# -- recipes ---------------------------------------------------------------------------------------
def _number(value: object) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    return None


def _check_pct(pct_start: object, where: str, name: str = "pct_start") -> float:
    v = _number(pct_start)
    if v is None or not 0.0 <= v <= 1.0:
        raise ValueError(f"{where}: `{name}` must be a number in [0, 1], got {pct_start!r}")
    return v


def _check_positive(value: object, name: str, where: str) -> float:
    v = _number(value)
    if v is None or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: `{name}` must be a positive finite number, got {value!r}")
    return v


def _check_epochs(n: object, name: str, where: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{where}: `{name}` must be an int >= {minimum}, got {n!r}")
    return n


def _check_wd(wd: object, where: str) -> None:
    if wd is None:
        return
    v = _number(wd)
    if v is None or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}: `wd` must be a finite number >= 0 or None, got {wd!r}")


def _check_moms(moms: object, where: str) -> None:
    vals = [_number(m) for m in moms] if isinstance(moms, (list, tuple)) and len(moms) == 3 else [None]
    if not all(v is not None and 0.0 <= v <= 1.0 for v in vals):
        raise ValueError(f"{where}: `moms` must be 3 numbers in [0, 1] (start, middle, end) or None, got {moms!r}")


def _check_lr(lr: object, name: str, where: str) -> None:
    if lr is None:
        return
    if isinstance(lr, slice):
        vals = [v for v in (lr.start, lr.stop) if v is not None]
        if lr.stop is None or lr.step is not None:
            raise ValueError(f"{where}: `{name}` as a slice must be slice(stop) or slice(start, stop), got {lr!r}")
    else:
        vals = list(lr) if isinstance(lr, (list, tuple, np.ndarray)) else [lr]
        if isinstance(lr, (list, tuple, np.ndarray)) and not vals:
            raise ValueError(f"{where}: `{name}` must be a number, a slice or one number per param group, got {lr!r}")
    for v in vals:
        _check_positive(v, name, where)


def _set_lr(learn: Learner, lr: Any, name: str = "lr", where: str = "fit") -> np.ndarray:
    """fastai's ``opt.set_hyper('lr', lr)`` then ``np.array([h['lr'] for h in opt.hypers])``."""
    if learn.opt is None:
        learn.create_opt()
    assert learn.opt is not None
    v = lr_range(learn, learn.lr if lr is None else lr)
    if isinstance(v, (list, tuple, np.ndarray)):
        try:
            v = expand_to_groups(learn, [float(x) for x in v])
        except ValueError as exc:
            raise ValueError(f"{where}: `{name}`={lr!r}: {exc}") from exc
    set_hyper(learn.opt, "lr", v)
    return np.array([h["lr"] for h in get_hypers(learn.opt)], dtype=np.float64)


def _with(sched: ParamScheduler, cbs: Iterable[Any] | Any | None) -> list[Any]:
    if cbs is None:
        return [sched]
    return [sched, *(cbs if isinstance(cbs, (list, tuple)) else [cbs])]


def fit_one_cycle(
    learn: Learner,
    n_epoch: int,
    lr_max: float | slice | None = None,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    wd: float | None = None,
    moms: tuple[float, float, float] | None = None,
    cbs: Iterable[Any] | Any | None = None,
    reset_opt: bool = False,
    **trainer_options: Any,
) -> None:
    """Fit for ``n_epoch`` with fastai's 1cycle policy (``Learner.fit_one_cycle``).

    ``lr = combined_cos(pct_start, lr_max/div, lr_max, lr_max/div_final)`` and
    ``mom = combined_cos(pct_start, *moms)`` (``moms`` defaults to ``learn.moms``).
    ``lr_max`` defaults to ``learn.lr``; a ``slice`` gives discriminative rates.

    Example:
        >>> # learn.fit_one_cycle(3, lr_max=slice(1e-4, 1e-2))
    """
    where = "fit_one_cycle"
    _check_epochs(n_epoch, "n_epoch", where)
    pct_start = _check_pct(pct_start, where)
    _check_positive(div, "div", where)
    _check_positive(div_final, "div_final", where)
    _check_lr(lr_max, "lr_max", where)
    _check_wd(wd, where)
    moms = learn.moms if moms is None else moms
    _check_moms(moms, where)
    lrs = _set_lr(learn, lr_max, "lr_max", where)
    scheds: dict[str, Any] = {"lr": combined_cos(pct_start, lrs / div, lrs, lrs / div_final)}
    assert learn.opt is not None
    if "mom" in get_hypers(learn.opt)[0]:
        scheds["mom"] = combined_cos(pct_start, *moms)
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fit_flat_cos(
    learn: Learner,
    n_epoch: int,
    lr: float | slice | None = None,
    div_final: float = 1e5,
    pct_start: float = 0.75,
    wd: float | None = None,
    cbs: Iterable[Any] | Any | None = None,
    reset_opt: bool = False,
    **trainer_options: Any,
) -> None:
    """Fit for ``n_epoch`` at flat ``lr`` before a cosine annealing to ``lr/div_final`` (fastai's).

    Example:
        >>> # learn.fit_flat_cos(3, lr=1e-2)
    """
    where = "fit_flat_cos"
    _check_epochs(n_epoch, "n_epoch", where)
    pct_start = _check_pct(pct_start, where)
    _check_positive(div_final, "div_final", where)
    _check_lr(lr, "lr", where)
    _check_wd(wd, where)
    lrs = _set_lr(learn, lr, "lr", where)
    scheds = {"lr": combined_cos(pct_start, lrs, lrs, lrs / div_final)}
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fit_sgdr(
    learn: Learner,
    n_cycles: int,
    cycle_len: int,
    lr_max: float | slice | None = None,
    cycle_mult: int = 2,
    cbs: Iterable[Any] | Any | None = None,
    reset_opt: bool = False,
    wd: float | None = None,
    **trainer_options: Any,
) -> None:
    """fastai's SGDR: ``n_cycles`` cosine cycles from ``lr_max`` to 0, each ``cycle_mult`` times longer.

    Trains ``cycle_len * (cycle_mult**n_cycles - 1) // (cycle_mult - 1)`` epochs.

    Example:
        >>> # learn.fit_sgdr(3, 1, lr_max=1e-2)  # 1 + 2 + 4 = 7 epochs
    """
    where = "fit_sgdr"
    for name, v in (("n_cycles", n_cycles), ("cycle_len", cycle_len), ("cycle_mult", cycle_mult)):
        _check_epochs(v, name, where)
    _check_lr(lr_max, "lr_max", where)
    _check_wd(wd, where)
    lrs = _set_lr(learn, lr_max, "lr_max", where)
    if cycle_mult == 1:
        n_epoch = cycle_len * n_cycles
    else:
        n_epoch = cycle_len * (cycle_mult**n_cycles - 1) // (cycle_mult - 1)
    pcts = [cycle_len * cycle_mult**i / n_epoch for i in range(n_cycles)]
    scheds = {"lr": combine_scheds(pcts, [SchedCos(lrs, 0) for _ in range(n_cycles)])}
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fine_tune(
    learn: Learner,
    epochs: int,
    base_lr: float = 2e-3,
    freeze_epochs: int = 1,
    lr_mult: float = 100,
    pct_start: float = 0.3,
    div: float = 5.0,
    **kwargs: Any,
) -> None:
    """fastai's ``fine_tune``: ``freeze``, one cycle; ``unfreeze``, one cycle with discriminative rates.

    ``freeze_epochs`` at ``slice(base_lr)`` (pct_start 0.99), then ``epochs`` at
    ``slice(base_lr/2/lr_mult, base_lr/2)``. ``kwargs`` go to ``fit_one_cycle``.

    Example:
        >>> # learn.fine_tune(3, base_lr=1e-3)
    """
    where = "fine_tune"
    _check_epochs(epochs, "epochs", where)
    _check_positive(base_lr, "base_lr", where)
    _check_positive(lr_mult, "lr_mult", where)
    _check_positive(div, "div", where)
    _check_pct(pct_start, where)
    _check_epochs(freeze_epochs, "freeze_epochs", where, minimum=0)
    # Everything fit_one_cycle would reject later is rejected now, before the frozen phase trains.
    for key in ("lr_max", "pct_start", "div", "n_epoch"):
        if key in kwargs:
            raise TypeError(f"{where}: `{key}` is set by fine_tune itself; it cannot be passed in **kwargs")
    _check_positive(kwargs.get("div_final", 1e5), "div_final", where)
    _check_wd(kwargs.get("wd"), where)
    if kwargs.get("moms") is not None:
        _check_moms(kwargs["moms"], where)
    _check_trainer_options(
        where, {k: v for k, v in kwargs.items() if k not in ("div_final", "wd", "moms", "cbs", "reset_opt")}
    )
    learn.freeze()
    if freeze_epochs > 0:
        fit_one_cycle(learn, freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
    base_lr /= 2
    learn.unfreeze()
    fit_one_cycle(learn, epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

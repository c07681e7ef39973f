"""fastai's training recipes: ``fit_one_cycle``, ``fit_flat_cos``, ``fit_sgdr``, ``fine_tune``.

Each is a function of the learner, bound as a Learner method (``learn.fit_one_cycle(...)``);
they set the learning rates (``slice`` rules of :mod:`bridge.lr_ranges`) and fit with a
:class:`~bridge.schedule.ParamScheduler`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checks import check_epochs, check_lr, check_moms, check_pct, check_positive, check_wd
from .lr_ranges import set_lr
from .optim import get_hypers
from .schedule import ParamScheduler, SchedCos, combine_scheds, combined_cos
from .trainer import check_trainer_options

if TYPE_CHECKING:
    from .protocol import LearnerState

__all__ = ["fine_tune", "fit_flat_cos", "fit_one_cycle", "fit_sgdr"]

_F32_MAX = float(torch.finfo(torch.float32).max)


def _with(sched: ParamScheduler, cbs: Iterable[Any] | Any | None) -> list[Any]:
    if cbs is None:
        return [sched]
    return [sched, *(cbs if isinstance(cbs, (list, tuple)) else [cbs])]


def fit_one_cycle(
    learn: LearnerState,
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
        >>> learn.fit_one_cycle(2, lr_max=1e-2)  # doctest: +ELLIPSIS
        epoch ...
        >>> lrs = learn.recorder.lrs  # 4 steps: from lr_max / div (25) up to lr_max, then down
        >>> round(lrs[0], 6), max(lrs) <= 1e-2, len(lrs)
        (0.0004, True, 4)
    """
    where = "fit_one_cycle"
    check_epochs(n_epoch, where, "n_epoch")
    pct_start = check_pct(pct_start, where)
    check_positive(div, "div", where)
    check_positive(div_final, "div_final", where)
    check_lr(lr_max, where, "lr_max", groups=True)
    check_wd(wd, where)
    moms = learn.moms if moms is None else moms
    check_moms(moms, where, optional=True)
    lrs = set_lr(learn, lr_max, "lr_max", where)
    for name, d in (("div", div), ("div_final", div_final)):
        if not np.all(np.abs(np.asarray(lrs, dtype=np.float64) / float(d)) < _F32_MAX):
            raise ValueError(
                f"{where}: `{name}`={d!r} makes lr_max/{name} = {lrs / d!r}, beyond float32 (the optimizer's); "
                f"give a {name} that keeps it below {_F32_MAX:.3g}"
            )
    scheds: dict[str, Any] = {"lr": combined_cos(pct_start, lrs / div, lrs, lrs / div_final)}
    assert learn.opt is not None
    if "mom" in get_hypers(learn.opt)[0]:
        scheds["mom"] = combined_cos(pct_start, *moms)
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fit_flat_cos(
    learn: LearnerState,
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
        >>> learn.fit_flat_cos(2, lr=1e-2, pct_start=0.5)  # doctest: +ELLIPSIS
        epoch ...
        >>> lrs = learn.recorder.lrs  # 4 steps: flat up to pct_start (step 2), then cosine
        >>> lrs[:3] == [1e-2] * 3, lrs[3] < 1e-2
        (True, True)
    """
    where = "fit_flat_cos"
    check_epochs(n_epoch, where, "n_epoch")
    pct_start = check_pct(pct_start, where)
    check_positive(div_final, "div_final", where)
    check_lr(lr, where, "lr", groups=True)
    check_wd(wd, where)
    lrs = set_lr(learn, lr, "lr", where)
    scheds = {"lr": combined_cos(pct_start, lrs, lrs, lrs / div_final)}
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fit_sgdr(
    learn: LearnerState,
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
        >>> with learn.no_logging():
        ...     learn.fit_sgdr(2, 1, lr_max=1e-2)  # 1 + 2 = 3 epochs
        >>> len(learn.recorder.values)
        3
    """
    where = "fit_sgdr"
    for name, v in (("n_cycles", n_cycles), ("cycle_len", cycle_len), ("cycle_mult", cycle_mult)):
        check_epochs(v, where, name)
    check_lr(lr_max, where, "lr_max", groups=True)
    check_wd(wd, where)
    lrs = set_lr(learn, lr_max, "lr_max", where)
    if cycle_mult == 1:
        n_epoch = cycle_len * n_cycles
    else:
        n_epoch = cycle_len * (cycle_mult**n_cycles - 1) // (cycle_mult - 1)
    pcts = [cycle_len * cycle_mult**i / n_epoch for i in range(n_cycles)]
    scheds = {"lr": combine_scheds(pcts, [SchedCos(lrs, 0) for _ in range(n_cycles)])}
    learn.fit(n_epoch, cbs=_with(ParamScheduler(scheds), cbs), reset_opt=reset_opt, wd=wd, **trainer_options)


def fine_tune(
    learn: LearnerState,
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
        >>> with learn.no_logging():
        ...     learn.fine_tune(1, base_lr=1e-3)  # 1 frozen epoch, then 1 epoch with every group trainable
        >>> len(learn.recorder.values), all(p.requires_grad for p in learn.model.parameters())
        (1, True)
    """
    where = "fine_tune"
    check_epochs(epochs, where, "epochs")
    check_positive(base_lr, "base_lr", where)
    check_positive(lr_mult, "lr_mult", where)
    check_positive(div, "div", where)
    check_pct(pct_start, where)
    check_epochs(freeze_epochs, where, "freeze_epochs", minimum=0)
    # Everything fit_one_cycle would reject later is rejected now, before the frozen phase trains.
    for key in ("lr_max", "pct_start", "div", "n_epoch"):
        if key in kwargs:
            raise TypeError(f"{where}: `{key}` is set by fine_tune itself; it cannot be passed in **kwargs")
    check_positive(kwargs.get("div_final", 1e5), "div_final", where)
    check_wd(kwargs.get("wd"), where)
    if kwargs.get("moms") is not None:
        check_moms(kwargs["moms"], where, optional=True)
    check_trainer_options(
        where, {k: v for k, v in kwargs.items() if k not in ("div_final", "wd", "moms", "cbs", "reset_opt")}
    )
    learn.freeze()
    if freeze_epochs > 0:
        fit_one_cycle(learn, freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
    base_lr /= 2
    learn.unfreeze()
    fit_one_cycle(learn, epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

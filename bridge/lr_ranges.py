"""fastai's freezing and discriminative learning rates over the splitter's groups.

fastai's optimizer keeps one param group per splitter group. The Learner builds torch
param groups instead, and splits each splitter group in two when it holds bias or
normalisation parameters (decayed params, then the ``NO_WD`` ones; see
:func:`bridge.optim.param_groups`). :func:`group_splits` maps each torch group back to its
splitter group, so per-splitter-group values (``slice`` learning rates, ``freeze_to(n)``)
mean what they mean in fastai.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .optim import NO_WD, NORM_TYPES, get_hypers, set_hyper

if TYPE_CHECKING:
    import torch

    from .protocol import LearnerState, LoopState

__all__ = [
    "SPLIT_KEY",
    "even_mults",
    "expand_to_groups",
    "freeze",
    "freeze_to",
    "group_splits",
    "lr_range",
    "n_splits",
    "set_lr",
    "unfreeze",
]

#: Param-group key holding the index of the splitter group a torch param group belongs to.
SPLIT_KEY = "fastlight_split"


def _opt(learn: LoopState) -> torch.optim.Optimizer:
    if learn.opt is None:
        learn.create_opt()
    assert learn.opt is not None
    return learn.opt


def _structural(groups: Sequence[dict[str, Any]]) -> list[int]:
    # param_groups() emits [decay][no-decay] per split: a NO_WD group right after a decayed
    # group belongs to the same split.
    out: list[int] = []
    prev_no_wd = True
    for g in groups:
        no_wd = bool(g.get(NO_WD))
        out.append((out[-1] if out else 0) if (no_wd and not prev_no_wd) else (out[-1] + 1 if out else 0))
        prev_no_wd = no_wd
    return out


def group_splits(learn: LoopState) -> list[int]:
    """Splitter-group index of each torch param group of ``learn.opt`` (created if needed).

    Found by parameter identity in ``learn.splitter(learn.model)``, falling back on the
    layout :func:`bridge.optim.param_groups` produces, and cached in each group under
    :data:`SPLIT_KEY` (it travels with the optimizer's ``state_dict``).

    Example:
        >>> group_splits(learn)  # one splitter group, as weights + biases (no weight decay)
        [0, 0]
        >>> learn.splitter = lambda m: [[m.weight], [m.bias]]
        >>> _ = learn.create_opt()
        >>> group_splits(learn)
        [0, 1]
    """
    groups = _opt(learn).param_groups
    if all(isinstance(g.get(SPLIT_KEY), int) for g in groups):
        return [int(g[SPLIT_KEY]) for g in groups]
    where: dict[int, int] = {}
    try:
        splitter: Any = getattr(learn, "splitter", None)  # the adapter's host has none
        for i, split in enumerate(splitter(learn.model)):
            for p in split:
                where.setdefault(id(p), i)
    except Exception:  # a splitter that fails now (e.g. on a changed model): use the layout
        where = {}
    found = [next((where[id(p)] for p in g["params"] if id(p) in where), None) for g in groups]
    out = _structural(groups)
    if all(f is not None for f in found):
        cand = [int(f) for f in found]  # type: ignore[arg-type]
        if cand[0] == 0 and all(0 <= b - a <= 1 for a, b in itertools.pairwise(cand)):
            out = cand
    for g, i in zip(groups, out):
        g[SPLIT_KEY] = i
    return out


def n_splits(learn: LoopState) -> int:
    """How many splitter groups ``learn.opt`` holds (fastai's ``len(opt.param_lists)``).

    Example:
        >>> n_splits(learn)  # the default splitter: one group
        1
    """
    return max(group_splits(learn)) + 1


def expand_to_groups(learn: LoopState, values: Sequence[Any]) -> list[Any]:
    """One value per torch param group, from one per splitter group (or already per torch group).

    Example:
        >>> learn.splitter = lambda m: [[m.weight], [m.bias]]
        >>> _ = learn.create_opt()
        >>> expand_to_groups(learn, [1e-4, 1e-3])
        [0.0001, 0.001]
        >>> learn.splitter = lambda m: [list(m.parameters())]  # one group of weights + biases: 2 torch groups
        >>> _ = learn.create_opt()
        >>> expand_to_groups(learn, [1e-3])
        [0.001, 0.001]
    """
    idx = group_splits(learn)
    values = list(values)
    n = max(idx) + 1
    if len(values) == n:
        return [values[i] for i in idx]
    if len(values) == len(idx):
        return values
    raise ValueError(
        f"got {len(values)} values for {n} param groups (the splitter's groups; {len(idx)} torch param groups)"
    )


def even_mults(start: float, stop: float, n: int) -> Any:
    """fastai's ``even_mults``: ``n`` values from ``start`` to ``stop``, evenly spaced in log scale.

    Example:
        >>> [round(v, 6) for v in even_mults(1e-3, 1e-1, 3)]
        [0.001, 0.01, 0.1]
    """
    if n == 1:
        return stop
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def lr_range(learn: LoopState, lr: float | slice | Sequence[float]) -> Any:
    """fastai's ``slice`` learning rates: one value per splitter group.

    ``slice(start, stop)``: geometric spacing from ``start`` to ``stop``;
    ``slice(stop)``: ``stop / 10`` for every group but the last, ``stop`` for the last.
    Anything else is returned unchanged.

    Example:
        >>> learn.splitter = lambda m: [[m.weight], [m.bias]]
        >>> _ = learn.create_opt()
        >>> [f"{lr:.0e}" for lr in lr_range(learn, slice(1e-5, 1e-3))]
        ['1e-05', '1e-03']
        >>> [f"{lr:.0e}" for lr in lr_range(learn, slice(1e-3))]
        ['1e-04', '1e-03']
        >>> lr_range(learn, 0.01)
        0.01
    """
    if not isinstance(lr, slice):
        return lr
    if lr.stop is None:
        raise ValueError(f"a learning-rate slice needs a stop value, got {lr!r}")
    n = n_splits(learn)
    if lr.start:
        res = even_mults(lr.start, lr.stop, n)
        return res if isinstance(res, list) else [res]
    return [lr.stop / 10] * (n - 1) + [lr.stop]


def set_lr(learn: LoopState, lr: Any, name: str = "lr", where: str = "fit") -> np.ndarray:
    """fastai's ``opt.set_hyper('lr', lr)``: a number, a ``slice`` or one value per splitter group;
    returns ``np.array([h['lr'] for h in opt.hypers])``. ``None`` means ``learn.lr``.

    Example:
        >>> set_lr(learn, 0.01)  # one splitter group, two torch groups (the bias gets no weight decay)
        array([0.01, 0.01])
    """
    if learn.opt is None:
        learn.create_opt()
    assert learn.opt is not None
    v = lr_range(learn, getattr(learn, "lr", 1e-3) if lr is None else lr)
    if isinstance(v, (list, tuple, np.ndarray)):
        try:
            v = expand_to_groups(learn, [float(x) for x in v])
        except ValueError as exc:
            raise ValueError(f"{where}: `{name}`={lr!r}: {exc}") from exc
    set_hyper(learn.opt, "lr", v)
    return np.array([h["lr"] for h in get_hypers(learn.opt)], dtype=np.float64)


def freeze_to(learn: LearnerState, n: int) -> None:
    """fastai's ``freeze_to``: splitter groups before ``n`` stop training (norm layers keep training).

    As fastai with ``train_bn=True``: parameters of batch/layer/group-norm layers stay
    trainable in frozen groups; the optimizer state is cleared (fastai's ``clear_state``).
    The optimizer keeps working: torch skips parameters whose grad is None.

    Example:
        >>> learn.splitter = lambda m: [[m.weight], [m.bias]]
        >>> _ = learn.create_opt()
        >>> learn.freeze_to(-1)  # train only the last group (and the norm layers)
        >>> learn.model.weight.requires_grad, learn.model.bias.requires_grad
        (False, True)
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"freeze_to: `n` must be an int, got {n!r}")
    opt = _opt(learn)
    idx = group_splits(learn)
    count = max(idx) + 1
    frozen_idx = n if n >= 0 else count + n
    if frozen_idx >= count:
        warnings.warn(
            f"freeze_to: freezing {frozen_idx} groups; the model has {count}; the whole model is frozen",
            stacklevel=2,
        )
    norm = {id(p) for m in learn.model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    for group, i in zip(opt.param_groups, idx):
        for p in group["params"]:
            p.requires_grad_(i >= frozen_idx or id(p) in norm)
    opt.state.clear()


def freeze(learn: LearnerState) -> None:
    """Freeze all param groups but the last.

    Example:
        >>> learn.freeze()  # one param group here: it stays trainable
        >>> all(p.requires_grad for p in learn.model.parameters())
        True
    """
    freeze_to(learn, -1)


def unfreeze(learn: LearnerState) -> None:
    """Make every param group trainable.

    Example:
        >>> learn.unfreeze()
        >>> all(p.requires_grad for p in learn.model.parameters())
        True
    """
    freeze_to(learn, 0)

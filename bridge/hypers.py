"""fastai's Optimizer API on a torch optimizer: ``opt.hypers``, ``set_hyper``, ``set_hypers``, ``param_lists``.

Lightning needs a torch optimizer; fastai's callbacks (ParamScheduler, LRFinder,
ReduceLROnPlateau, TensorBoardCallback, ...) speak fastai's Optimizer. :func:`fastai_api` gives a
torch optimizer fastai's names as plain instance attributes (nothing else changes):

- ``opt.hypers``: one live mapping per param group with fastai's names (``lr``, ``mom``,
  ``sqr_mom``, ``eps``, ``wd``); writing ``h["lr"] = ...`` writes the torch param group.
- ``opt.set_hyper(k, v)``: ``v`` a number, one value per splitter group (spread over the torch
  groups the Learner made of each: weight-decayed and exempt parameters), or a ``slice`` with
  fastai's rule; ``opt.set_hypers(**kwargs)``.
- ``opt.param_lists``, and ``opt.freeze_to(n)`` / ``freeze()`` / ``unfreeze()`` (the Learner's).

Example:
    >>> opt = fastai_api(torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9))
    >>> opt.hypers[0]["lr"], opt.hypers[0]["mom"]
    (0.1, 0.9)
    >>> opt.hypers[0]["lr"] = 0.01; opt.param_groups[0]["lr"]
    0.01
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import torch

from .optim import _torch_key, get_hypers, set_hyper

__all__ = ["fastai_api"]

_NAMES = ("lr", "mom", "sqr_mom", "wd", "eps")


class _GroupHypers(MutableMapping[str, Any]):
    """One torch param group seen with fastai's hyper-parameter names (reads and writes go through)."""

    def __init__(self, opt: torch.optim.Optimizer, i: int) -> None:
        self.opt, self.i = opt, i

    def _names(self) -> list[str]:
        return list(get_hypers(self.opt)[self.i])

    def __getitem__(self, name: str) -> Any:
        hypers = get_hypers(self.opt)[self.i]
        if name not in hypers:
            raise KeyError(name)
        return hypers[name]

    def __setitem__(self, name: str, value: Any) -> None:
        group = self.opt.param_groups[self.i]
        key, idx = _torch_key(group, name)
        if idx is None:
            group[key] = value
        else:
            pair = list(group[key])
            pair[idx] = value
            group[key] = tuple(pair)

    def __delitem__(self, name: str) -> None:
        raise TypeError("opt.hypers: hyper-parameters cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(dict(self))


class _Hypers(Sequence[_GroupHypers]):
    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt

    def __getitem__(self, i: Any) -> Any:
        n = len(self.opt.param_groups)
        if isinstance(i, slice):
            return [_GroupHypers(self.opt, j) for j in range(n)[i]]
        return _GroupHypers(self.opt, range(n)[i])

    def __len__(self) -> int:
        return len(self.opt.param_groups)

    def __repr__(self) -> str:
        return repr([dict(h) for h in self])


class _ParamLists(Sequence[list[torch.nn.Parameter]]):
    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt

    def __getitem__(self, i: Any) -> Any:
        lists = [list(g["params"]) for g in self.opt.param_groups]
        return lists[i]

    def __len__(self) -> int:
        return len(self.opt.param_groups)


def _set_hyper(opt: torch.optim.Optimizer, learn: Any, name: str, value: Any) -> None:
    if isinstance(value, slice) or (isinstance(value, (list, tuple)) and len(value) != len(opt.param_groups)):
        from .lr_ranges import expand_to_groups, lr_range  # per splitter group -> per torch group

        if learn is None:
            raise ValueError(f"set_hyper: `{name}`={value!r} needs the Learner's splitter groups")
        value = lr_range(learn, value) if isinstance(value, slice) else value
        value = expand_to_groups(learn, [float(v) for v in value])
    elif hasattr(value, "tolist") and int(getattr(value, "ndim", 0)) > 0:  # numpy/torch arrays, one value per group
        value = value.tolist()
    set_hyper(opt, name, value)


def _set_hypers(opt: torch.optim.Optimizer, learn: Any, **kwargs: Any) -> None:
    for name, value in kwargs.items():
        _set_hyper(opt, learn, name, value)


def _call(learn: Any, method: str, *args: Any) -> None:
    if learn is None:
        raise RuntimeError(f"opt.{method}: needs the Learner's splitter groups")
    getattr(learn, method)(*args)


def fastai_api(opt: torch.optim.Optimizer, learn: Any = None) -> torch.optim.Optimizer:
    """Give ``opt`` fastai's Optimizer names (``learn``: the Learner whose splitter groups ``slice`` spreads over).

    Example:
        >>> opt = fastai_api(torch.optim.Adam(nn.Linear(2, 1).parameters()))
        >>> opt.set_hyper("mom", 0.8); opt.param_groups[0]["betas"]
        (0.8, 0.999)
    """
    attrs = {
        "hypers": _Hypers(opt),
        "param_lists": _ParamLists(opt),
        "set_hyper": functools.partial(_set_hyper, opt, learn),
        "set_hypers": functools.partial(_set_hypers, opt, learn),
        "freeze_to": functools.partial(_call, learn, "freeze_to"),
        "freeze": functools.partial(_call, learn, "freeze"),
        "unfreeze": functools.partial(_call, learn, "unfreeze"),
    }
    for name, value in attrs.items():
        setattr(opt, name, value)
    return opt

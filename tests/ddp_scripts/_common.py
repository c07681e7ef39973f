"""What every DDP test script shares: the result writer and a clean exit from gloo."""

from __future__ import annotations

import atexit
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn

from bridge import Callback, Learner

T = TypeVar("T")


def close_group() -> None:
    """Destroy the process group if one is open.

    Leaves gloo's threads cleanly: without this a process may abort at exit
    ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run(main: Callable[[list[str]], None]) -> None:
    """Call ``main(sys.argv[1:])`` with :func:`close_group` registered to run at exit."""
    atexit.register(close_group)
    main(sys.argv[1:])


def dump(obj: Any, rank: int | None = None) -> None:
    """Write ``obj`` as JSON to ``result_rank{rank}.json`` in the working directory.

    ``rank`` defaults to this process's rank (0 without a process group); then every rank
    waits at a barrier, so that each rank's file is written before any rank exits.
    """
    ready = dist.is_available() and dist.is_initialized()
    r = rank if rank is not None else (dist.get_rank() if ready else 0)
    with open(f"result_rank{r}.json", "w") as f:
        json.dump(obj, f)
    if ready and rank is None:
        dist.barrier()  # every rank's file is written before any rank exits


def flat_params(model: nn.Module) -> list[float]:
    """All parameters of ``model`` in one flat list (for comparing weights across ranks)."""
    values: list[float] = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    return values


def trainer_of(learn: Learner) -> pl.Trainer:
    """The Trainer of ``learn``'s last run."""
    if learn.trainer is None:
        raise RuntimeError("the learner has not run a Trainer yet")
    return learn.trainer


def named_cb(learn: Learner, name: str, cls: type[T]) -> T:
    """The callback ``learn.<name>`` (fastai exposes each callback under its snake-case name), a ``cls``."""
    cb = getattr(learn, name)
    if not isinstance(cb, cls):
        raise TypeError(f"learn.{name} is a {type(cb).__name__}, not a {cls.__name__}")
    return cb


class LamLog(Callback):
    """MixUp's mixing coefficients of every training batch (after MixUp's before_batch)."""

    order = 5

    def __init__(self) -> None:
        self.lams: list[list[float]] = []

    def after_loss(self) -> None:
        if self.training:
            self.lams.append(self.mix_up.lam.tolist())

"""Step-based ``ModelCheckpoint`` saves that fall on an epoch's last batch wait for the epoch's end.

A Lightning checkpoint written in ``on_train_batch_end`` of an epoch's last batch (a
``ModelCheckpoint`` with ``every_n_train_steps`` whose step lands there) resumes as if that
epoch were over: Lightning skips its validation and ``on_train_epoch_end``, so fastai's
``after_validate``/``after_epoch`` of that epoch never run (no Recorder row, no
``SaveModelCallback`` decision). During a ``Learner`` fit such a save is moved to the same
epoch's ``on_train_epoch_end`` (after validation and ``after_epoch``), where a resume
continues with the next epoch. (``train_time_interval`` is refused by the Learner:
Lightning never checks it under manual optimization.)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["epoch_end_saves"]


def _on_train_batch_end(
    self: ModelCheckpoint, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
) -> None:
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        self.__dict__["_fastlight_pending"] = batch_idx
        return
    type(self).on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx)


def _on_train_epoch_end(self: ModelCheckpoint, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    pending = self.__dict__.pop("_fastlight_pending", None)
    if pending is not None:
        type(self).on_train_batch_end(self, trainer, pl_module, None, None, pending)
    type(self).on_train_epoch_end(self, trainer, pl_module)


def _steps_based(cb: Any) -> bool:
    return isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps >= 1


@contextlib.contextmanager
def epoch_end_saves(callbacks: Iterable[Any]) -> Iterator[None]:
    """While the block runs, step-based ``ModelCheckpoint`` saves on an epoch's last batch wait for its end.

    Example:
        >>> ckpt = ModelCheckpoint(every_n_train_steps=10)
        >>> with epoch_end_saves([ckpt]):
        ...     "on_train_batch_end" in vars(ckpt)
        True
        >>> "on_train_batch_end" in vars(ckpt)
        False
    """
    patched = [cb for cb in callbacks if _steps_based(cb) and "on_train_batch_end" not in vars(cb)]
    for cb in patched:
        # functools.partial pickles (ddp_spawn sends the Trainer's callbacks to its workers); MethodType does not
        cb.on_train_batch_end = functools.partial(_on_train_batch_end, cb)
        cb.on_train_epoch_end = functools.partial(_on_train_epoch_end, cb)
    try:
        yield
    finally:
        for cb in patched:
            for name in ("on_train_batch_end", "on_train_epoch_end", "_fastlight_pending"):
                cb.__dict__.pop(name, None)

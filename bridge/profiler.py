"""Lightning's "no profiler", at no cost: :class:`NoProfiler`, and swapping it into a Trainer for a fit."""

from __future__ import annotations

import contextlib
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.profilers import PassThroughProfiler

__all__ = ["NoProfiler", "quiet_profiler", "restore_profiler"]


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler (none), minus the cost of saying so: one shared null context.

    Lightning wraps each hook, loop step and strategy call in ``trainer.profiler.profile(name)``,
    17 times a batch for a plain module; its ``PassThroughProfiler`` builds a generator-based
    context manager each time (~1.1 µs here) to do nothing. A Learner's Trainer gets this one
    unless ``profiler=`` is given.

    Example:
        >>> with NoProfiler().profile("[Callback]Recorder.on_train_batch_end"):
        ...     pass
        >>> NoProfiler().profile("a") is NoProfiler().profile("b")
        True
    """

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return self._NOTHING


def quiet_profiler(trainer: pl.Trainer) -> PassThroughProfiler | None:
    """For a fit, a Trainer that profiles nothing does so at no cost; returns the profiler to restore.

    Lightning's own ``PassThroughProfiler`` (``profiler=None``) becomes :class:`NoProfiler`; any
    other profiler is left alone (``None`` is returned). ``LightningAdapter`` does this for the fit
    of a Trainer it did not build.

    Example:
        >>> trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
        >>> before = quiet_profiler(trainer); type(trainer.profiler).__name__
        'NoProfiler'
        >>> trainer.profiler = before; type(trainer.profiler).__name__
        'PassThroughProfiler'
    """
    owner: Any = trainer  # Lightning sets `profiler` in a connector: not declared on Trainer
    profiler = owner.profiler
    if type(profiler) is not PassThroughProfiler:
        return None
    owner.profiler = NoProfiler()
    return profiler


def restore_profiler(trainer: pl.Trainer, profiler: PassThroughProfiler | None) -> None:
    """Give ``trainer`` back the profiler :func:`quiet_profiler` returned (nothing to do for ``None``).

    Example:
        >>> trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
        >>> restore_profiler(trainer, quiet_profiler(trainer)); type(trainer.profiler).__name__
        'PassThroughProfiler'
    """
    if profiler is not None:
        owner: Any = trainer  # not declared on Trainer (see quiet_profiler)
        owner.profiler = profiler

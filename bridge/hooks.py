"""Lightning's hooks, translated into fastai's levels: the one table both hosts use.

:class:`~bridge.LearnerModule` (the Learner's LightningModule) and
:class:`~bridge.LightningAdapter` (a Lightning callback on the user's module) call the
function named after each Lightning hook; the batch levels inside ``training_step`` /
``validation_step`` are the engine's (:mod:`bridge.engine`).

Hook mapping (``fn`` is ``trainer.state.fn``):

=============================  ================================================
Lightning point                 fastai events
=============================  ================================================
on_fit_start                    before_fit
on_train_epoch_start            before_epoch, before_train
training_step / validation_step the batch events (see ``bridge.engine``)
on_validation_epoch_start       after_train, before_validate
on_validation_epoch_end         after_validate
on_train_batch_start            before_train again, after a validation inside the epoch
  (``resume_train``)              (``val_check_interval``), at the epoch's position
on_train_epoch_end              after_train (if no validation ran), after_epoch
on_fit_end / on_exception      after_fit
on_validation_start/_end        before_fit, before_epoch / after_epoch, after_fit
  (``fn == "validate"``)          around a stand-alone validation
=============================  ================================================

Example:
    >>> sorted(HOOKS)[:3]
    ['on_fit_end', 'on_fit_start', 'on_train_epoch_end']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .callback_state import load_callback_states

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from .levels import Levels

__all__ = ["HOOKS", "batch_count"]


def on_fit_start(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_fit_start``: before_fit, then any callback state restored from a checkpoint."""
    learn = levels.learn
    learn.trainer = trainer
    learn.stage = "fit"
    levels.sync = _make_sync(trainer)
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        learn.n_epoch = int(trainer.max_epochs)  # refined at each epoch start (_fit_length)
    levels.reset()
    levels.at_hook(levels.open_level, "fit")
    if levels.pending_state is not None:
        load_callback_states(learn.cbs, levels.pending_state)
        levels.pending_state = None


def on_fit_end(levels: Levels, trainer: pl.Trainer | None = None) -> None:
    """``on_fit_end`` (and the end of a stand-alone validation): after_fit if fit is open."""
    levels.agree()
    if levels.is_open("fit"):
        del levels.open[1:]
        levels.guard(levels.close_level, "fit")
    levels.reset()
    learn = levels.learn
    learn.dl, learn.xb, learn.yb, learn.pred, learn.loss = None, (None,), (None,), None, None
    learn.loss_grad = None


def on_exception(levels: Levels, exc: BaseException) -> None:
    """``on_exception``: Lightning skips on_fit_end, so after_fit runs from here."""
    levels.learn.exception = exc
    levels.sync = None  # no collectives on the way out: the other ranks may be gone
    levels.deferred = None
    try:
        if levels.is_open("fit"):
            on_fit_end(levels)
    except BaseException as during:  # never mask the original error
        exc.add_note(f"fastlight: after_fit also failed while handling it: {type(during).__name__}: {during}")
    finally:
        levels.reset()


def on_train_epoch_start(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_train_epoch_start``: before_epoch, before_train."""
    if not levels.is_open("fit"):
        return
    learn = levels.learn
    learn.epoch = trainer.current_epoch
    levels.train_paused = False

    def start() -> None:
        levels.open_level("epoch")
        _train_loader(learn, trainer)
        _fit_length(learn, trainer)
        levels.open_level("train")

    levels.at_hook(start)


def on_validation_epoch_start(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_validation_epoch_start``: after_train (in a fit), before_validate."""
    if trainer.sanity_checking:
        return
    learn = levels.learn

    def start() -> None:
        if trainer.state.fn == "fit" and levels.innermost("train"):
            levels.close_level("train")
            levels.train_paused = True  # if Lightning trains on in this epoch: resume_train
        if levels.is_open("epoch"):
            learn.dl = _first(trainer.val_dataloaders)
            learn.n_iter = batch_count(trainer.num_val_batches, learn.dl)
            levels.open_level("validate")

    levels.at_hook(start)


def on_validation_epoch_end(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_validation_epoch_end``: after_validate."""
    if not trainer.sanity_checking:
        levels.at_hook(levels.close_level, "validate")


def resume_train(levels: Levels) -> None:
    """A training batch after a validation inside the epoch: ``before_train`` again (one flag test otherwise).

    fastai validates only at an epoch's end; Lightning's ``val_check_interval`` validates within
    it too, then trains on. The epoch's training resumes where it was: ``pct_train`` and
    ``train_iter`` go on from the validation's point (``TrainEvalCallback.keep_position``).
    """
    if not levels.train_paused:
        return
    levels.train_paused = False
    learn = levels.learn

    def resume() -> None:
        if not levels.innermost("epoch"):  # e.g. an epoch cancel another rank raised, applied just now
            return
        keep = getattr(getattr(learn, "train_eval", None), "keep_position", None)
        if keep is not None:
            keep()
        if learn.trainer is not None:
            _train_loader(learn, learn.trainer)
        levels.open_level("train")

    levels.at_hook(resume)


def on_train_batch_start(
    levels: Levels, trainer: pl.Trainer, epoch_started: int | None, start_epoch: Callable[[], None]
) -> bool:
    """A training batch's start; True: Lightning should skip the rest of the epoch (the hook returns -1).

    Training resumes after a validation inside the epoch (:func:`resume_train`). A batch of an
    epoch Lightning never announced (``epoch_started`` is older: a resume from a checkpoint saved
    inside it) runs ``start_epoch`` first. Once the epoch is cancelled, the rest is skipped; under
    DDP only once every rank agrees (a rank still waiting to tell the others keeps stepping).
    """
    if levels.train_paused:
        resume_train(levels)
    if levels.is_open("epoch") or levels.deferred is not None:
        return False
    if epoch_started != trainer.current_epoch and levels.is_open("fit"):
        start_epoch()
        return not levels.is_open("epoch")
    return True


def trains_on(trainer: pl.Trainer) -> bool:
    """During a validation in a fit: whether training goes on in this epoch (Lightning validates at an
    epoch's end before ``on_train_epoch_end``, and inside it under ``val_check_interval``)."""
    progress = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
    return not getattr(progress, "is_last_batch", False)


def on_train_epoch_end(levels: Levels, trainer: pl.Trainer | None = None) -> None:
    """``on_train_epoch_end``: after_train if no validation ran, then after_epoch."""

    def end() -> None:
        levels.close_level("train")
        levels.close_level("epoch")

    levels.at_hook(end)


def on_validation_start(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_validation_start`` of ``trainer.validate``: before_fit, before_epoch (as fastai)."""
    if trainer.state.fn == "fit" or trainer.sanity_checking:
        return
    learn = levels.learn
    learn.trainer = trainer
    learn.stage = learn.stage if learn.stage in ("validate", "predict") else "validate"
    learn.epoch = 0
    levels.reset()
    levels.sync = _make_sync(trainer)

    def start() -> None:
        levels.open_level("fit")
        levels.open_level("epoch")

    levels.at_hook(start)


def on_validation_end(levels: Levels, trainer: pl.Trainer) -> None:
    """``on_validation_end`` of ``trainer.validate``: after_epoch, after_fit."""
    if trainer.state.fn == "fit" or trainer.sanity_checking:
        return
    levels.at_hook(levels.close_level, "epoch")
    on_fit_end(levels)


def _first(loaders: Any) -> Any:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


def _train_loader(learn: Any, trainer: pl.Trainer) -> None:
    learn.dl = trainer.train_dataloader
    learn.n_iter = batch_count(trainer.num_training_batches, learn.dl)


def _fit_length(learn: Any, trainer: pl.Trainer) -> None:
    """``n_epoch``, and ``n_train_total`` when Lightning's ``max_steps`` ends the fit before its epochs do.

    fastai's ``pct_train`` runs over ``n_epoch * n_iter`` batches. When ``max_steps`` ends an
    automatically optimized fit first (one step every ``accumulate_grad_batches`` batches), it
    runs over the batches up to that step instead (``n_train_total``; ``n_epoch`` is the epochs
    they touch), so a schedule ends where the fit does. Under manual optimization (the Learner's
    module) a step may be skipped or repeated, so the batches to ``max_steps`` are not known: it
    stops the fit early, as a cancel would. A fit with neither limit has no length: a warning.
    """
    n_iter = learn.n_iter
    epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None
    learn.n_train_total = None
    if epochs is not None:
        learn.n_epoch = int(epochs)
    module = trainer.lightning_module
    if steps is None or not getattr(module, "automatic_optimization", False):
        if epochs is None and steps is None:
            warnings.warn(
                "fastlight: this fit has no end (max_epochs=-1 and max_steps=-1), so fastai's pct_train has none: "
                f"it is counted as if the fit lasted n_epoch={learn.n_epoch}; schedules need max_epochs or max_steps",
                stacklevel=4,
            )
        return
    acc = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
    if n_iter <= 0:  # a loader without a length: the steps are the only measure
        learn.n_train_total, learn.n_epoch = steps * acc, 1
        return
    per_epoch = math.ceil(n_iter / acc)  # optimizer steps an epoch (Lightning steps at its last batch too)
    full, rest = divmod(steps, per_epoch)
    total = full * n_iter + rest * acc
    if epochs is None or total < epochs * n_iter:
        learn.n_train_total = total
        learn.n_epoch = max(math.ceil(total / n_iter), 1)


def batch_count(counted: Any, dl: Any) -> int:
    """Batches this process runs: Lightning's count (after ``limit_*_batches``), else ``len(dl)``, else 0.

    Example:
        >>> batch_count([2], None), batch_count(float("inf"), [1, 2, 3]), batch_count(None, None)
        (2, 3, 0)
    """
    if isinstance(counted, (list, tuple)):
        counted = counted[0] if counted else None
    if isinstance(counted, int) or (isinstance(counted, float) and math.isfinite(counted)):
        return int(counted)
    try:
        return len(dl)
    except TypeError:
        return 0


def _make_sync(trainer: pl.Trainer) -> Callable[[list[float]], list[float]] | None:
    """An all-reduce MAX of a few flags over the job's ranks; None in a single process."""
    if trainer.world_size <= 1:
        return None
    import torch
    import torch.distributed as dist

    device = trainer.strategy.root_device if dist.get_backend() == "nccl" else torch.device("cpu")

    def sync(flags: list[float]) -> list[float]:
        t = torch.tensor(flags, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    return sync


#: Lightning hook name -> its fastai level transitions (``on_exception`` takes the exception instead).
HOOKS: dict[str, Callable[[Levels, Any], None]] = {
    "on_fit_start": on_fit_start,
    "on_train_epoch_start": on_train_epoch_start,
    "on_validation_start": on_validation_start,
    "on_validation_epoch_start": on_validation_epoch_start,
    "on_validation_epoch_end": on_validation_epoch_end,
    "on_validation_end": on_validation_end,
    "on_train_epoch_end": on_train_epoch_end,
    "on_fit_end": on_fit_end,
}

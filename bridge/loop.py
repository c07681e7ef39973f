"""The fastai loop's levels, opened and closed from Lightning's hooks.

fastai nests ``fit > epoch > train | validate > batch``; Lightning spreads each level over
several hooks. :class:`EventLoop` keeps the stack of open levels so that each hook knows
what to fire, and turns a ``Cancel*Exception`` raised in any hook into fastai's events:
the inner open levels close silently, ``after_cancel_<level>`` and ``after_<level>`` fire,
and the rest of that level is muted (its batches become no-ops) until Lightning reaches
its natural end.

Hook mapping (``fn`` is ``trainer.state.fn``):

=============================  ================================================
Lightning point                 fastai events
=============================  ================================================
on_fit_start                    before_fit
on_train_epoch_start            before_epoch, before_train
training_step / validation_step the batch events (see ``bridge.module``)
on_validation_epoch_start       after_train, before_validate
on_validation_epoch_end         after_validate
on_train_epoch_end              after_train (if no validation ran), after_epoch
on_fit_end / on_exception       after_fit
on_validation_start/_end        before_fit, before_epoch / after_epoch, after_fit
  (``fn == "validate"``)          around a stand-alone validation
=============================  ================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import LEVEL_OF, CancelException
from .state import load_callback_states

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from .host import CallbackHost

__all__ = ["VOTES", "EventLoop"]

#: What ranks vote on at an agreement point: a cancelled level, or that a rank ran a
#: zero-loss backward (its gradients carry nothing: the batch's gradients must be cleared).
VOTES: tuple[str, ...] = ("step", "backward", "batch", "validate", "train", "epoch", "fit", "zero_grad")
_OUTER_FIRST = ("fit", "epoch", "train", "validate", "batch", "step")
_CANCEL_OF = {level: cls for cls, level in LEVEL_OF.items()}


class EventLoop:
    """Open-level bookkeeping and cancel translation for one learner.

    Example:
        >>> from bridge.handler import CallbackHandler
        >>> class FakeLearn:
        ...     cb_handler = CallbackHandler()
        >>> loop = EventLoop(FakeLearn())
        >>> loop.open_level("fit"); loop.open
        ['fit']
    """

    def __init__(self, learn: CallbackHost | Any) -> None:
        self.learn = learn
        self.open: list[str] = []
        #: Called with the level each time a level closes by a cancel (DDP sync, trainer stop).
        self.on_cancelled: Callable[[str], None] | None = None
        #: Callback state from a checkpoint, applied right after before_fit.
        self.pending_state: dict[str, Any] | None = None
        #: Under DDP: ``sync(flags) -> flags`` (an all-reduce MAX over ranks); None in one process.
        self.sync: Callable[[list[float]], list[float]] | None = None
        #: Under DDP, a cancel raised on this rank waits here for the next agreement point.
        self.deferred: CancelException | None = None
        #: Under DDP, other facts this rank reports at the next agreement point.
        self.votes: set[str] = set()

    def fire(self, event: str) -> None:
        self.learn.cb_handler(event)

    # -- levels -------------------------------------------------------------------------
    def open_level(self, level: str) -> None:
        """Push ``level`` and fire ``before_<level>``."""
        self.open.append(level)
        self.learn.cb_handler("before_" + level)

    def close_level(self, level: str) -> None:
        """Pop ``level`` (if it is the innermost open one) and fire ``after_<level>``."""
        if self.open and self.open[-1] == level:
            self.open.pop()
            self.learn.cb_handler("after_" + level)

    def is_open(self, level: str) -> bool:
        return level in self.open

    def innermost(self, level: str) -> bool:
        """True when ``level`` is open and nothing is open inside it."""
        return bool(self.open) and self.open[-1] == level

    def guard(self, fn: Callable[[], None]) -> None:
        """Run ``fn``; a cancel exception it raises is handled at the level it names.

        Under DDP a cancel (other than of backward, whose effect is local and voted on) is
        deferred: this rank fires nothing more until the next agreement point, where every
        rank applies it at the same place.
        """
        if self.deferred is not None:
            return
        try:
            fn()
        except CancelException as exc:
            if self.sync is not None and exc.level != "backward":
                self.deferred = exc
            else:
                self.cancel(exc)
                if self.sync is not None:
                    self.votes.add("backward")

    def agree(self) -> set[str]:
        """Under DDP: exchange cancels with the other ranks and apply them alike everywhere.

        One tiny all-reduce. The rank that raised handles its own exception exactly as fastai
        would; the others cancel the outermost level any rank cancelled, at this point.
        Returns everything voted (levels and ``zero_grad``); an empty set without DDP.
        """
        if self.sync is None:
            return set()
        own = self.deferred
        flags = [1.0 if (own is not None and own.level == v) or v in self.votes else 0.0 for v in VOTES]
        agreed = {v for v, f in zip(VOTES, self.sync(flags), strict=True) if f > 0}
        local_backward = "backward" in self.votes
        self.deferred = None
        self.votes.clear()
        if own is not None:
            self.cancel(own)
        for level in _OUTER_FIRST:
            if level in agreed and self.is_open(level):
                self.cancel(_CANCEL_OF[level]())
                break
        if "backward" in agreed and not local_backward:
            self.fire("after_cancel_backward")  # backward ran here; another rank cancelled its own
        return agreed

    def at_hook(self, fn: Callable[[], None]) -> None:
        """Run a hook's events; under DDP, agree before (pending cancels) and after (new ones)."""
        if self.sync is None:
            self.guard(fn)
            return
        self.agree()
        self.guard(fn)
        self.agree()

    def cancel(self, exc: CancelException) -> None:
        """Close the level ``exc`` cancels as fastai does, or re-raise if it is not open."""
        level = exc.level
        if level not in self.open:
            exc.add_note(
                f"fastlight: {type(exc).__name__} was raised outside the `{level}` it cancels "
                f"(open levels: {', '.join(self.open) or 'none'}); fastai lets it escape too"
            )
            raise exc
        while self.open[-1] != level:
            self.open.pop()
        self.open.pop()
        try:
            self.fire("after_cancel_" + level)
            self.fire("after_" + level)
        except CancelException as outer:
            self.cancel(outer)
        if self.on_cancelled is not None:
            self.on_cancelled(level)

    def reset(self) -> None:
        self.open.clear()
        self.deferred = None
        self.votes.clear()

    # -- Lightning hook points (shared by LearnerModule and LightningAdapter) ---------------------
    def fit_start(self, trainer: pl.Trainer) -> None:
        """``on_fit_start``: before_fit, then any callback state restored from a checkpoint."""
        learn = self.learn
        learn.trainer = trainer
        learn.stage = "fit"
        self.sync = _make_sync(trainer)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            learn.n_epoch = int(trainer.max_epochs)
        self.reset()
        self.at_hook(lambda: self.open_level("fit"))
        if self.pending_state is not None:
            load_callback_states(learn.cbs, self.pending_state)
            self.pending_state = None

    def fit_end(self) -> None:
        """``on_fit_end`` (and the end of a stand-alone validation): after_fit if fit is open."""
        self.agree()
        if self.is_open("fit"):
            del self.open[1:]
            self.guard(lambda: self.close_level("fit"))
        self.reset()
        learn = self.learn
        learn.dl, learn.xb, learn.yb, learn.pred, learn.loss = None, (None,), (None,), None, None
        learn.loss_grad = None

    def fit_exception(self, exc: BaseException) -> None:
        """``on_exception``: Lightning skips on_fit_end, so after_fit runs from here."""
        self.learn.exception = exc
        self.sync = None  # no collectives on the way out: the other ranks may be gone
        self.deferred = None
        try:
            if self.is_open("fit"):
                self.fit_end()
        except BaseException as during:  # never mask the original error
            exc.add_note(f"fastlight: after_fit also failed while handling it: {type(during).__name__}: {during}")
        finally:
            self.reset()

    def train_epoch_start(self, trainer: pl.Trainer) -> None:
        """``on_train_epoch_start``: before_epoch, before_train."""
        if not self.is_open("fit"):
            return
        learn = self.learn
        learn.epoch = trainer.current_epoch

        def start() -> None:
            self.open_level("epoch")
            learn.dl = trainer.train_dataloader
            learn.n_iter = _len(learn.dl)
            self.open_level("train")

        self.at_hook(start)

    def validation_epoch_start(self, trainer: pl.Trainer) -> None:
        """``on_validation_epoch_start``: after_train (in a fit), before_validate."""
        if trainer.sanity_checking:
            return
        learn = self.learn

        def start() -> None:
            if trainer.state.fn == "fit":
                self.close_level("train")
            if self.is_open("epoch"):
                learn.dl = _first(trainer.val_dataloaders)
                learn.n_iter = _len(learn.dl)
                self.open_level("validate")

        self.at_hook(start)

    def validation_epoch_end(self, trainer: pl.Trainer) -> None:
        """``on_validation_epoch_end``: after_validate."""
        if not trainer.sanity_checking:
            self.at_hook(lambda: self.close_level("validate"))

    def train_epoch_end(self) -> None:
        """``on_train_epoch_end``: after_train if no validation ran, then after_epoch."""

        def end() -> None:
            self.close_level("train")
            self.close_level("epoch")

        self.at_hook(end)

    def validation_start(self, trainer: pl.Trainer, stage: str) -> None:
        """``on_validation_start`` of ``trainer.validate``: before_fit, before_epoch (as fastai)."""
        if trainer.state.fn == "fit" or trainer.sanity_checking:
            return
        learn = self.learn
        learn.trainer = trainer
        learn.stage = stage
        learn.epoch = 0
        self.reset()
        self.sync = _make_sync(trainer)

        def start() -> None:
            self.open_level("fit")
            self.open_level("epoch")

        self.at_hook(start)

    def validation_end(self, trainer: pl.Trainer) -> None:
        """``on_validation_end`` of ``trainer.validate``: after_epoch, after_fit."""
        if trainer.state.fn == "fit" or trainer.sanity_checking:
            return
        self.at_hook(lambda: self.close_level("epoch"))
        self.fit_end()


def _first(loaders: Any) -> Any:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


def _len(dl: Any) -> int:
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

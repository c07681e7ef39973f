"""The fastai loop's levels: which are open, and what a cancel closes.

fastai nests ``fit > epoch > train | validate > batch > backward | step``; Lightning spreads
each level over several hooks (:mod:`bridge.hooks`), and the batch engine
(:mod:`bridge.engine`) opens the batch levels. :class:`Levels` keeps the stack of open
levels so that each point knows what to fire, and turns a ``Cancel*Exception`` into fastai's
events: the inner open levels close silently, ``after_cancel_<level>`` and ``after_<level>``
fire, and the rest of that level is muted (its batches become no-ops) until Lightning
reaches its natural end.

Under DDP every rank must take the same path through the collectives (gradient all-reduce,
metric sync). That is the one policy plugged in here, ``sync``: with it, a cancel raised on
one rank is deferred to the next agreement point (:meth:`Levels.agree`, one tiny all-reduce),
where every rank applies the outermost cancel any rank raised. Without it (one process)
``guard`` handles a cancel at once and ``agree`` returns at its first line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import LEVEL_OF, CancelException

if TYPE_CHECKING:
    from .protocol import LoopState

__all__ = ["VOTES", "Levels"]

#: What ranks vote on at an agreement point: a cancelled level, or that a rank ran a
#: zero-loss backward (its gradients carry nothing: the batch's gradients must be cleared).
VOTES: tuple[str, ...] = ("step", "backward", "batch", "validate", "train", "epoch", "fit", "zero_grad")
_OUTER_FIRST = ("fit", "epoch", "train", "validate", "batch", "step")
_CANCEL_OF = {level: cls for cls, level in LEVEL_OF.items()}


class Levels:
    """Open-level bookkeeping and cancel translation for one host of callbacks.

    Example:
        >>> from bridge import CancelEpochException
        >>> from bridge.host import CallbackHost
        >>> levels = Levels(CallbackHost())
        >>> levels.open_level("fit"); levels.open_level("epoch"); levels.open_level("train")
        >>> levels.cancel(CancelEpochException()); levels.open
        ['fit']
    """

    def __init__(self, learn: LoopState) -> None:
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
        #: A validation inside the epoch (Lightning's ``val_check_interval``) closed ``train``:
        #: the epoch's next training batch opens it again.
        self.train_paused = False

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

    def guard(self, fn: Callable[..., Any], *args: Any, local: str = "backward") -> None:
        """Run ``fn(*args)``; a cancel exception it raises is handled at the level it names (:meth:`handle`).

        Nothing runs while a cancel of this rank waits for the next agreement point. (Arguments
        rather than a closure: the adapter guards several phases of every batch.)
        """
        if self.deferred is not None:
            return
        try:
            fn(*args)
        except CancelException as exc:
            self.handle(exc, local)

    def handle(self, exc: CancelException, local: str = "backward") -> None:
        """A cancel raised at an event: applied now, or, under DDP, deferred to the next agreement point.

        Under DDP a cancel of any level but ``local`` (whose effect stays on this rank:
        backward in training, the batch in validation) is deferred: this rank fires nothing
        more until the next agreement point, where every rank applies it at the same place.
        """
        if self.sync is not None and exc.level != local:
            self.deferred = exc
        else:
            self.cancel(exc)
            if self.sync is not None and local == "backward":
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

    def at_hook(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a hook's events, ``fn(*args)``; under DDP, agree before (pending cancels) and after (new ones)."""
        if self.sync is None:
            self.guard(fn, *args)
            return
        self.agree()
        self.guard(fn, *args)
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
        self.train_paused = False
        self.deferred = None
        self.votes.clear()

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

from .exceptions import CancelException

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["EventLoop"]


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

    def __init__(self, learn: Learner | Any) -> None:
        self.learn = learn
        self.open: list[str] = []
        #: Called with the level each time a level closes by a cancel (DDP sync, trainer stop).
        self.on_cancelled: Callable[[str], None] | None = None

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
        """Run ``fn``; a cancel exception it raises is handled at the level it names."""
        try:
            fn()
        except CancelException as exc:
            self.cancel(exc)

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

"""``Callback``: the fastai v2 base class for code that hooks into the training loop."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import LoopState

__all__ = ["FLAG_WRITES", "RUN_FLAGS", "Callback", "RunFlag", "callback_name", "camel2snake", "tracks_run_flags"]

#: The flags that decide whether a callback runs at an event.
RUN_FLAGS: tuple[str, ...] = ("run", "run_train", "run_valid")
_RUN_FLAGS = frozenset(RUN_FLAGS)

#: Bumped at every write or delete of a run flag on a :class:`Callback`: the dispatcher's cache
#: of who runs at the batch-level events (:class:`~bridge.handler.EventDispatch`) holds while
#: it stands still.
FLAG_WRITES: list[int] = [0]


class RunFlag:
    """A run flag that reports its writes, for classes that are not :class:`Callback` subclasses.

    A data descriptor: every write or delete on an instance (``object.__setattr__`` included)
    bumps :data:`FLAG_WRITES`, with no ``__setattr__`` on the class to slow its other writes.
    The dialect wrappers and loop helpers hold their flags so (:func:`tracks_run_flags`).

    Example:
        >>> class Helper:
        ...     run = RunFlag()
        >>> h, before = Helper(), FLAG_WRITES[0]
        >>> h.run = False
        >>> h.run, FLAG_WRITES[0] - before
        (False, 1)
    """

    def __init__(self, default: bool = True) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: object, value: Any) -> None:
        FLAG_WRITES[0] += 1
        obj.__dict__[self.name] = value

    def __delete__(self, obj: object) -> None:
        FLAG_WRITES[0] += 1
        if obj.__dict__.pop(self.name, _MISSING) is _MISSING:
            raise AttributeError(self.name)


_MISSING = object()

_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")


def camel2snake(name: str) -> str:
    """Convert ``CamelCase`` to ``snake_case`` the way fastai does.

    Example:
        >>> camel2snake("SaveModel")
        'save_model'
    """
    return _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name)).lower()


def callback_name(cb: object) -> str:
    """The attribute name a callback gets on the learner (``learn.<name>``).

    The class name without a trailing ``Callback``, in snake case, as in fastai.

    Example:
        >>> class SaveModelCallback: ...
        >>> callback_name(SaveModelCallback())
        'save_model'
    """
    cls_name = type(cb).__name__
    return camel2snake(re.sub(r"Callback$", "", cls_name) or "callback")


class Callback:
    """Base class for fastai-v2-style callbacks.

    Define any of the event methods (``before_fit``, ``after_batch``, ...; see
    :mod:`bridge.events`). Attribute reads fall through to the learner, so
    ``self.model``, ``self.xb``, ``self.epoch`` work; write through ``self.learn``
    (``self.learn.xb = ...``). ``order`` sorts callbacks (ties keep insertion order),
    ``run = False`` mutes the callback until ``after_fit``, and ``run_train`` /
    ``run_valid`` gate the batch-level events.

    Example:
        >>> from bridge import Callback
        >>> class PrintEpoch(Callback):
        ...     order = 10
        ...     def after_epoch(self) -> None:
        ...         print("finished epoch", self.epoch)
        >>> PrintEpoch().name
        'print_epoch'
    """

    order: int = 0
    run: bool = True
    run_train: bool = True
    run_valid: bool = True
    # None until a host attaches it; typed as attached, which is where event methods run.
    learn: LoopState = None  # type: ignore[assignment]

    @property
    def name(self) -> str:
        """The name under which the learner exposes this callback."""
        return callback_name(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: read through to the learner, as fastai.
        if name.startswith("__") or name == "learn":
            raise AttributeError(name)
        learn = self.__dict__.get("learn")
        if learn is None:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (not attached to a Learner yet)")
        return getattr(learn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _RUN_FLAGS:
            FLAG_WRITES[0] += 1
        learn = self.__dict__.get("learn")
        if learn is not None and name != "learn" and name not in self.__dict__ and hasattr(learn, name):
            warnings.warn(
                f"You are shadowing an attribute ({name}) that exists in the learner. "
                f"Use `self.learn.{name}` to avoid this",
                stacklevel=2,
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _RUN_FLAGS:
            FLAG_WRITES[0] += 1
        object.__delattr__(self, name)

    def __repr__(self) -> str:
        return type(self).__name__


def tracks_run_flags(cb: object) -> bool:
    """Whether every change of ``cb``'s run flags bumps :data:`FLAG_WRITES`.

    True when each flag is a :class:`RunFlag` on the class, or a plain value on a
    :class:`Callback` whose class keeps its attribute hooks (a property could change without a
    write). The exceptions, a flag set through ``object.__setattr__`` on a ``Callback``, written
    into the instance ``__dict__`` or on the class itself, are seen at the next fit-, epoch- or
    phase-level event (see docs/design.md, "order, run, run_train, run_valid").

    Example:
        >>> class Quiet(Callback):
        ...     run_valid = False
        >>> class Live(Callback):
        ...     @property
        ...     def run_valid(self) -> bool:
        ...         return True
        >>> class Helper:
        ...     run, run_train, run_valid = RunFlag(), RunFlag(), RunFlag()
        >>> [tracks_run_flags(cb) for cb in (Quiet(), Live(), object(), Helper())]
        [True, False, False, True]
    """
    cls = type(cb)
    if cls.__getattribute__ is not object.__getattribute__:
        return False
    hooks_kept = cls.__setattr__ is Callback.__setattr__ and cls.__delattr__ is Callback.__delattr__
    for flag in RUN_FLAGS:
        for klass in cls.__mro__:  # what inspect.getattr_static finds on the class, without its cost
            if flag in klass.__dict__:
                value = klass.__dict__[flag]
                if type(value) is RunFlag:
                    break
                if not hooks_kept or hasattr(value, "__get__"):
                    return False
                break
        else:
            if not hooks_kept:
                return False
    return True

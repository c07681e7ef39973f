"""``Callback``: the fastai v2 base class for code that hooks into the training loop."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import LoopState

__all__ = ["Callback", "callback_name", "camel2snake"]

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
        learn = self.__dict__.get("learn")
        if learn is not None and name != "learn" and name not in self.__dict__ and hasattr(learn, name):
            warnings.warn(
                f"You are shadowing an attribute ({name}) that exists in the learner. "
                f"Use `self.learn.{name}` to avoid this",
                stacklevel=2,
            )
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return type(self).__name__

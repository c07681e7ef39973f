"""Callback state in Lightning checkpoints (guarantee 6 of DESIGN.md).

Every callback that defines ``state_dict()`` / ``load_state_dict(state)`` has its state
saved under ``checkpoint["fastlight"]["callbacks"]``, keyed by class name (``#1``, ``#2``
for repeats), and restored on resume right after ``before_fit`` (which resets it). Only
plain floats, ints, lists, dicts and tensors belong there: checkpoints are loaded with
``weights_only=True``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["CKPT_KEY", "callback_states", "load_callback_states"]

#: Key of fastlight's entry in a Lightning checkpoint.
CKPT_KEY = "fastlight"


def _keyed(cbs: Iterable[Any]) -> dict[str, Any]:
    seen: dict[str, int] = {}
    out: dict[str, Any] = {}
    for cb in cbs:
        if not callable(inspect.getattr_static(cb, "state_dict", None)):
            continue
        name = type(cb).__qualname__
        n = seen.get(name, 0)
        seen[name] = n + 1
        out[name if n == 0 else f"{name}#{n}"] = cb
    return out


def callback_states(cbs: Iterable[Any]) -> dict[str, Any]:
    """``{key: cb.state_dict()}`` for every callback with state.

    Example:
        >>> class Counter:
        ...     def __init__(self): self.n = 3
        ...     def state_dict(self): return {"n": self.n}
        >>> callback_states([Counter()])
        {'Counter': {'n': 3}}
    """
    return {key: cb.state_dict() for key, cb in _keyed(cbs).items()}


def load_callback_states(cbs: Iterable[Any], states: dict[str, Any]) -> None:
    """Give each callback its saved state; warn about state with no callback to take it.

    Example:
        >>> class Counter:
        ...     n = 0
        ...     def state_dict(self): return {"n": self.n}
        ...     def load_state_dict(self, s): self.n = s["n"]
        >>> c = Counter(); load_callback_states([c], {"Counter": {"n": 5}}); c.n
        5
    """
    keyed = _keyed(cbs)
    for key, state in states.items():
        cb = keyed.get(key)
        if cb is None:
            warnings.warn(
                f"checkpoint: state of callback {key} was saved but no such callback is attached; ignored",
                stacklevel=2,
            )
            continue
        loader = getattr(cb, "load_state_dict", None)
        if loader is None:
            raise TypeError(f"checkpoint: callback {key} has state_dict() but no load_state_dict(state)")
        loader(state)

"""Lightning's per-hook ``_current_fx_name`` writes, without ``nn.Module.__setattr__``'s checks.

Lightning sets ``pl_module._current_fx_name`` before and after every hook, callback hook and
strategy call it makes (~30 a batch). Each write goes through ``nn.Module.__setattr__``, which
asks whether the value is a ``Parameter``, a ``Module`` or a buffer (two of those are Python-level
``isinstance`` checks): ~1 µs a write here, ~5% of a small model's step (docs/performance.md).
A hook name (a ``str``) or ``None`` is none of them, so :func:`fast_setattr` puts it where that
check would: in the instance's ``__dict__``, through ``object.__setattr__``. Every other write is
``nn.Module``'s.

The :class:`~bridge.module.LearnerModule` uses :func:`fast_setattr` as its ``__setattr__``.
``LightningAdapter`` gives a user's module the same for the length of a fit: :func:`speed_up`
sets its ``__class__`` to a subclass that only adds :func:`fast_setattr` (same name, module and
qualified name; ``pickle`` and ``copy`` see the original class), and :func:`restore` sets it back.
A class with its own ``__setattr__``, ``__new__``, ``__getnewargs__``, reduce, ``__init_subclass__`` or
metaclass is left alone.

What a user could notice: during the fit ``type(module) is Net`` is False (``isinstance`` holds,
and ``type(module).__mro__`` has the one extra class first).

Example:
    >>> class Net(nn.Module): ...
    >>> net = Net(); original = speed_up(net)
    >>> type(net).__name__, isinstance(net, Net), type(net) is Net
    ('Net', True, False)
    >>> restore(net, original); type(net) is Net
    True
"""

from __future__ import annotations

import abc
import copyreg
from typing import Any

from torch import nn

__all__ = ["fast_setattr", "restore", "speed_up"]


def fast_setattr(self: nn.Module, name: str, value: Any) -> None:
    """``nn.Module.__setattr__``, with Lightning's hook-name writes taken straight to ``__dict__``.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> fast_setattr(m, "_current_fx_name", "training_step"); vars(m)["_current_fx_name"]
        'training_step'
        >>> fast_setattr(m, "extra", nn.ReLU()); "extra" in m._modules  # any other write: nn.Module's
        True
    """
    if name == "_current_fx_name" and (value is None or type(value) is str):
        object.__setattr__(self, name, value)
    else:
        nn.Module.__setattr__(self, name, value)


def _reduce_ex(self: nn.Module, protocol: Any) -> Any:
    # pickle and copy rebuild the module as its original class (the subclass exists only for a fit).
    fast: type = next(k for k in type(self).__mro__ if _is_fast(k))
    if type(self) is not fast:  # subclassed again since (e.g. fully_shard's class): as if fast were not there
        return super(fast, self).__reduce_ex__(protocol)  # type: ignore[arg-type]
    base = fast.__bases__[0]
    object.__setattr__(self, "__class__", base)
    try:
        rv = self.__reduce_ex__(protocol)
    finally:
        object.__setattr__(self, "__class__", fast)
    # Protocol 2 and up name the class in copyreg.__newobj__'s arguments, and pickle checks that it
    # is the object's own: the same object rebuilt as protocols 0 and 1 do (object.__new__, then
    # the state), which speed_up's classes allow (no __new__, __getnewargs__ or reduce of their own).
    if isinstance(rv, tuple) and getattr(rv[0], "__name__", None) == "__newobj__" and rv[1] == (base,):
        rv = (copyreg._reconstructor, (base, object, None), *rv[2:])  # type: ignore[attr-defined]
    return rv


_FAST: dict[type, type] = {}  # per original class, its one subclass


def _is_fast(cls: type) -> bool:
    return bool(cls.__bases__) and _FAST.get(cls.__bases__[0]) is cls


def _fast_class(cls: type) -> type:
    fast = _FAST.get(cls)
    if fast is None:
        namespace = {
            "__setattr__": fast_setattr,
            "__reduce_ex__": _reduce_ex,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
        }
        fast = _FAST[cls] = type(cls.__name__, (cls,), namespace)
    return fast


def speed_up(module: nn.Module) -> type | None:
    """Give ``module`` :func:`fast_setattr` for a fit; returns its class for :func:`restore` (None: left alone).

    Example:
        >>> class Own(nn.Module):
        ...     def __setattr__(self, name, value):
        ...         super().__setattr__(name, value)
        >>> speed_up(Own()) is None  # its own __setattr__: left alone
        True
        >>> speed_up(nn.Linear(2, 2)) is nn.Linear
        True
    """
    cls = type(module)
    if _is_fast(cls):  # already sped up (a second set-up before a teardown)
        return cls.__bases__[0]
    own = (
        cls.__setattr__ is not nn.Module.__setattr__  # its own
        or cls.__new__ is not object.__new__
        or cls.__reduce_ex__ is not object.__reduce_ex__
        or cls.__reduce__ is not object.__reduce__
        or hasattr(cls, "__getnewargs__")
        or hasattr(cls, "__getnewargs_ex__")
        # Defining a subclass runs these: a registry of subclasses would see (or refuse) this one.
        or any("__init_subclass__" in vars(k) for k in cls.__mro__[:-1])
        or type(cls) not in (type, abc.ABCMeta)
    )
    if own:  # left alone: its writes, the way it is rebuilt, or its subclassing are its own
        return None
    try:
        module.__class__ = _fast_class(cls)
    except Exception:  # e.g. __slots__ or a C-level layout: no faster class for it
        return None
    return cls


def restore(module: nn.Module, original: type | None) -> None:
    """Undo :func:`speed_up`, unless the class was changed again since (e.g. ``fully_shard``'s own subclass).

    Example:
        >>> m = nn.Linear(2, 2); original = speed_up(m)
        >>> restore(m, original); type(m) is nn.Linear
        True
        >>> restore(m, None)  # speed_up left it alone: nothing to undo
    """
    if original is not None and type(module) is _FAST.get(original):
        module.__class__ = original

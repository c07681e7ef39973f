"""How :class:`~bridge.LightningAdapter` wraps a module's methods for a fit: ``patch``, ``unpatch``, ``Patched``.

The wrappers are instance attributes bound to the module (real methods, so Lightning's
override and signature checks see code); each finds its call through the module's owner
record. A copy of the module made during the fit (Lightning's ``WeightAveraging`` deep-copies
it at setup) gets an empty record: its wrappers run the class's own methods.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, cast

import lightning.pytorch as pl

__all__ = ["Patched", "instance_method", "is_wrapper", "patch", "patched_names", "unpatch"]

_OWNER = "_fastlight_adapter"


class _Owner:
    """The calls a module's wrappers make during a fit, and the instance methods they cover (e.g.
    Lightning's compiled ``forward`` for ``trainer.fit(torch.compile(module))``); a copy has neither."""

    __slots__ = ("calls", "saved")

    def __init__(self) -> None:
        self.calls: dict[str, Callable[..., Any]] = {}
        self.saved: dict[str, Any] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> _Owner:
        return _Owner()

    def __reduce__(self) -> tuple[type[_Owner], tuple[()]]:
        return _Owner, ()


def _wrapper(name: str) -> Callable[..., Any]:
    def method(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
        owner = self.__dict__.get(_OWNER)
        call = owner.calls.get(name) if owner is not None else None
        if call is None:  # a copy of the module, or a name this fit does not wrap
            return getattr(type(self), name)(self, *args, **kwargs)
        return call(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method._fastlight_wrapper = True  # type: ignore[attr-defined]
    return method


def patch(module: pl.LightningModule, name: str, call: Callable[..., Any]) -> None:
    """From now on ``module.<name>(...)`` runs ``call(...)`` (until :func:`unpatch`).

    Example:
        >>> m = pl.LightningModule()
        >>> patch(m, "forward", lambda x: x + 1); m(1), patched_names(m)
        (2, ['forward'])
        >>> unpatch(m); patched_names(m)
        []
    """
    owner = module.__dict__.get(_OWNER)
    if owner is None:
        owner = module.__dict__[_OWNER] = _Owner()
    previous = module.__dict__.get(name)
    if previous is not None and not is_wrapper(previous):
        owner.saved[name] = previous
    owner.calls[name] = call
    setattr(module, name, types.MethodType(_wrapper(name), module))


def is_wrapper(attr: Any) -> bool:
    """Whether ``attr`` (a module's instance attribute) is a wrapper :func:`patch` set.

    Example:
        >>> is_wrapper(None)
        False
    """
    return bool(getattr(getattr(attr, "__func__", None), "_fastlight_wrapper", False))


def instance_method(module: pl.LightningModule, name: str) -> Callable[..., Any]:
    """What ``module.<name>`` is without the adapter's wrapper: an instance's own method, else the class's.

    Example:
        >>> m = pl.LightningModule(); own = lambda x: x
        >>> m.forward = own; patch(m, "forward", lambda x: -x)
        >>> instance_method(m, "forward") is own, m(2)
        (True, -2)
        >>> unpatch(m); m.forward is own
        True
    """
    own = module.__dict__.get(name)
    if own is not None and not is_wrapper(own):
        return cast("Callable[..., Any]", own)
    owner = module.__dict__.get(_OWNER)
    if owner is not None and name in owner.saved:
        return cast("Callable[..., Any]", owner.saved[name])
    return types.MethodType(getattr(type(module), name), module)


def patched_names(module: pl.LightningModule) -> list[str]:
    """The names :func:`patch` wrapped on ``module``.

    Example:
        >>> patched_names(pl.LightningModule())
        []
    """
    return [k for k, v in vars(module).items() if is_wrapper(v)]


def unpatch(module: pl.LightningModule) -> None:
    """Remove every wrapper :func:`patch` set: the module's own methods are its again.

    Example:
        >>> m = pl.LightningModule(); patch(m, "forward", lambda: "wrapped"); unpatch(m)
        >>> "forward" in vars(m)
        False
    """
    for name in patched_names(module):
        delattr(module, name)
    owner = module.__dict__.pop(_OWNER, None)
    for name, method in owner.saved.items() if owner is not None else ():
        setattr(module, name, method)


class Patched:
    """How the adapter calls a patched module method: the method's name and the original.

    Built once per fit and method (not per call): ``original`` is the module's own method
    (:func:`instance_method`: a compiled one Lightning set on the instance, else the class's);
    ``call`` passes it only the positional arguments it declares
    (Lightning allows ``training_step(self, batch)``: it inspects the signature, and sees
    the adapter's ``*args`` instead).

    Example:
        >>> import lightning.pytorch as pl
        >>> class M(pl.LightningModule):
        ...     def training_step(self, batch):
        ...         return batch
        >>> Patched(M(), "training_step").call("batch", 0)  # the step declares no batch_idx: not passed
        'batch'
    """

    def __init__(self, module: pl.LightningModule, name: str) -> None:
        self.module, self.name = module, name
        self.original: Callable[..., Any] = instance_method(module, name)
        self.n_args: int | None = None  # None: any number
        try:
            params = list(inspect.signature(self.original).parameters.values())
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            return
        if not any(p.kind is p.VAR_POSITIONAL for p in params):
            kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            self.n_args = sum(p.kind in kinds for p in params)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        if self.n_args is not None and len(args) > self.n_args:
            args = args[: self.n_args]
        return self.original(*args, **kwargs)

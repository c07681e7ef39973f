"""``Patched``: how :class:`~bridge.LightningAdapter` calls the module method it wraps for a fit."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

__all__ = ["Patched"]


class Patched:
    """How the adapter calls a patched module method: the method's name and the class's original.

    Built once per fit and method (not per call): ``original`` is the class's function
    bound to the module; ``call`` passes it only the positional arguments it declares
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
        self.original: Callable[..., Any] = types.MethodType(getattr(type(module), name), module)
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

"""Lightning's empty module hooks, skipped: :func:`skip_idle_hooks` and :func:`restore_idle_hooks`.

Lightning calls a ``LightningModule``'s per-batch hooks (``on_train_batch_start``,
``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``,
``on_before_zero_grad``, ``on_train_batch_end``) whether or not the
module defines them. Each call sets ``pl_module._current_fx_name`` twice through
``nn.Module.__setattr__`` and formats two strings: about 6 µs on this machine, to run
Lightning's empty default (profile of issue 21: ``Module.__setattr__`` and the
``Parameter``/``Buffer`` instance checks it makes were 11% of a small adapter fit). Lightning
skips a module hook that is not callable (``_call_lightning_module_hook``), so for the length of
a fit a hook the module's class does not override, and whose default does nothing, is set to
``None`` on the instance; :func:`restore_idle_hooks` removes those attributes afterwards.

What a user could notice: during the fit, ``module.on_after_backward`` (and the others named)
is ``None`` on a module that never defined it, so code that calls the empty hook by hand
fails; a copy of the module made during the fit keeps the ``None`` s (Lightning skips them
on the copy too).

Example:
    >>> m = pl.LightningModule()
    >>> names = skip_idle_hooks(m); "on_after_backward" in names, m.on_after_backward
    (True, None)
    >>> restore_idle_hooks(m, names); callable(m.on_after_backward)
    True
"""

from __future__ import annotations

import dis
import functools
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

__all__ = ["IDLE_CANDIDATES", "idle_hooks", "restore_idle_hooks", "skip_idle_hooks"]

#: The module hooks Lightning calls every training batch and whose return value it ignores (or
#: reads only as ``-1``, ``on_train_batch_start``). Not here: the batch-transfer hooks (they return
#: the batch) and the validation/test batch hooks (Lightning inspects their signatures at the start
#: of each evaluation loop, which a ``None`` fails).
IDLE_CANDIDATES = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)


def _does_nothing(fn: Callable[..., Any]) -> bool:
    """True when ``fn``'s body is only a docstring or ``pass`` (it returns None, touching nothing)."""
    ops = [i for i in dis.get_instructions(fn) if i.opname not in ("RESUME", "NOP", "CACHE")]
    if len(ops) == 1:  # Python 3.12+: RETURN_CONST None
        return ops[0].opname == "RETURN_CONST" and ops[0].argval is None
    return len(ops) == 2 and ops[0].opname == "LOAD_CONST" and ops[0].argval is None and ops[1].opname == "RETURN_VALUE"


@functools.cache
def _idle_defaults() -> frozenset[str]:
    """The candidates whose ``LightningModule`` default is empty (checked, not assumed: Lightning may change)."""
    return frozenset(name for name in IDLE_CANDIDATES if _does_nothing(getattr(pl.LightningModule, name)))


def idle_hooks(module: pl.LightningModule) -> list[str]:
    """The hooks of ``module`` that are Lightning's empty defaults: not overridden by its class or instance.

    Example:
        >>> class M(pl.LightningModule):
        ...     def on_after_backward(self) -> None:
        ...         print("mine")
        >>> "on_after_backward" in idle_hooks(M()), "on_before_backward" in idle_hooks(M())
        (False, True)
    """
    cls, own = type(module), vars(module)
    return [
        name
        for name in IDLE_CANDIDATES
        if name in _idle_defaults() and name not in own and getattr(cls, name) is getattr(pl.LightningModule, name)
    ]


def skip_idle_hooks(module: pl.LightningModule) -> list[str]:
    """Set ``module``'s idle hooks (:func:`idle_hooks`) to ``None``, so Lightning skips them; returns their names.

    Example:
        >>> m = pl.LightningModule(); skip_idle_hooks(m)[:2]
        ['on_train_batch_start', 'on_train_batch_end']
        >>> restore_idle_hooks(m, ["on_train_batch_start", "on_train_batch_end"])
    """
    names = idle_hooks(module)
    for name in names:
        module.__dict__[name] = None  # not nn.Module.__setattr__: a plain instance attribute
    return names


def restore_idle_hooks(module: pl.LightningModule, names: list[str]) -> None:
    """Undo :func:`skip_idle_hooks`: each of ``names`` still ``None`` on the instance is removed (a hook
    someone set since is left alone).

    Example:
        >>> m = pl.LightningModule(); restore_idle_hooks(m, skip_idle_hooks(m)); "on_after_backward" in vars(m)
        False
    """
    own = module.__dict__
    for name in names:
        if name in own and own[name] is None:
            del own[name]

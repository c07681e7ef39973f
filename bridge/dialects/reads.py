"""Which of the keyword arguments it is offered a fastai v1 method can read.

fastai v1's handler called every callback method with the whole loop state as keyword
arguments (``cb.on_batch_end(**state)``, 19 of them). Binding 19 arguments costs about a
microsecond a call, most of a v1 callback's cost; most methods name one or two of them and
never read the rest (``def on_batch_end(self, last_loss, **kwargs)``). :func:`keywords_read`
finds, from the method's code, the names it can read; the wrapper then passes only those.

The answer is ``None`` (pass everything, as fastai v1 did) whenever the method might see more:
its ``**kwargs`` is referenced anywhere in its code (read, passed on, captured by a nested
function); the code, or code nested in it, calls ``locals``/``vars``/``eval``/``exec``/
``breakpoint`` or reaches frames (``sys._getframe``, ``inspect.currentframe``, ``f_locals``,
``pdb.set_trace``, also by name through ``getattr``); it has no ``**kwargs`` (so that the call
fails as fastai v1's did); it takes positional-only parameters; or it is not a plain Python
function (a builtin, a ``functools.partial``, a callable object). A decorated method is the
decorator's wrapper, whose ``**kwargs`` is passed on: ``None``. Not seen: a helper the method
calls that reads the method's frame itself (``sys._getframe(1)`` in another function).
"""

from __future__ import annotations

import dis
import inspect
import operator
import types
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["keywords_read", "narrow_call"]

_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS
#: Builtins that see a frame's locals (or stop in a debugger that shows them).
_FRAME_BUILTINS = frozenset({"locals", "vars", "eval", "exec", "breakpoint"})
#: Attributes that reach frames: ``sys._getframe``, ``inspect.currentframe``, ``frame.f_locals``, ``pdb.set_trace``...
_FRAME_ATTRS = frozenset(
    {"_getframe", "currentframe", "getframeinfo", "getouterframes", "getinnerframes", "f_locals", "f_back", "set_trace"}
)


def _reads_frames(code: types.CodeType) -> bool:
    """Whether ``code`` (or code nested in it) may look at a frame's locals."""
    names = set(code.co_names)
    if "inspect" in names and ("stack" in names or "trace" in names):
        return True
    for ins in dis.get_instructions(code):
        arg = ins.argval
        if not isinstance(arg, str):
            continue
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF") and arg in _FRAME_BUILTINS:
            return True
        if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and arg in _FRAME_ATTRS:
            return True
        if ins.opname == "LOAD_CONST" and (arg in _FRAME_ATTRS or arg in _FRAME_BUILTINS):
            return True  # getattr(sys, "_getframe"), getattr(builtins, "locals")
    return any(isinstance(c, types.CodeType) and _reads_frames(c) for c in code.co_consts)


def keywords_read(fn: Callable[..., Any], offered: Collection[str]) -> tuple[tuple[str, ...], bool] | None:
    """The ``offered`` names ``fn`` can read and whether they are its leading positional parameters.

    ``None`` when ``fn`` may read any keyword it is given (see the module docstring).

    Example:
        >>> class Cb:
        ...     def on_batch_end(self, last_loss, **kwargs): ...
        ...     def on_epoch_end(self, epoch, *, smooth_loss=None, **kwargs): ...
        ...     def on_step_end(self, **kwargs): print(kwargs)
        >>> offered = {"last_loss", "epoch", "smooth_loss", "train"}
        >>> keywords_read(Cb().on_batch_end, offered), keywords_read(Cb().on_epoch_end, offered)
        ((('last_loss',), True), (('epoch', 'smooth_loss'), False))
        >>> keywords_read(Cb().on_step_end, offered) is None
        True
    """
    if inspect.ismethod(fn):
        func, skip = fn.__func__, 1
    elif inspect.isfunction(fn):
        func, skip = fn, 0
    else:
        return None
    if not inspect.isfunction(func):
        return None
    code = func.__code__
    if not code.co_flags & _CO_VARKEYWORDS or code.co_posonlyargcount > skip or code.co_argcount < skip:
        return None
    n_named = code.co_argcount + code.co_kwonlyargcount
    var_kw = code.co_varnames[n_named + (1 if code.co_flags & _CO_VARARGS else 0)]
    if var_kw in code.co_cellvars or _reads_frames(code):
        return None
    for ins in dis.get_instructions(code):
        arg = ins.argval
        if arg == var_kw or (isinstance(arg, tuple) and var_kw in arg):
            return None
    positional = code.co_varnames[skip : code.co_argcount]
    named = code.co_varnames[skip:n_named]
    keys = tuple(name for name in named if name in offered)
    return keys, keys == positional[: len(keys)]


def narrow_call(fn: Callable[..., Any], keys: tuple[str, ...], positional: bool) -> Callable[[dict[str, Any]], Any]:
    """``call(state)`` that calls ``fn`` with ``state``'s values of ``keys`` only (see :func:`keywords_read`).

    Example:
        >>> def on_batch_end(last_loss, train, **kwargs): return last_loss, train
        >>> narrow_call(on_batch_end, ("last_loss", "train"), True)({"train": True, "last_loss": 0.5, "epoch": 1})
        (0.5, True)
    """
    if not keys:
        return lambda state: fn()
    if positional:
        if len(keys) == 1:
            (key,) = keys
            return lambda state: fn(state[key])
        values = operator.itemgetter(*keys)
        return lambda state: fn(*values(state))
    return lambda state: fn(**{k: state[k] for k in keys})

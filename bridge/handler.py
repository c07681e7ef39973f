"""``CallbackHandler``: holds callbacks sorted by ``order`` and dispatches events to them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .callback import FLAG_WRITES, RUN_FLAGS, tracks_run_flags
from .events import EVENT_NAMES, INNER_LOOP
from .exceptions import CancelException, as_cancel

__all__ = ["SEED_EVENTS", "CallbackHandler", "EventDispatch", "event_methods", "is_loop_helper"]

_Entry = tuple[Any, Callable[[], Any]]
#: Per event: whether it is batch-level, and its (callback, method) pairs.
_Row = tuple[bool, tuple[_Entry, ...]]
#: A callback that runs at a batch-level event: (callback, method, its position in the event's entries).
_Ready = tuple[Any, Callable[[], Any], int]
_UNSET: Any = object()
#: The levels whose ``after_`` event closes a block in ``show_training_loop``.
_CLOSING = frozenset({"batch", "train", "validate", "epoch", "fit"})


def event_methods(cb: object, names: Iterable[str] = EVENT_NAMES) -> dict[str, Callable[..., Any]]:
    """The event methods ``cb`` defines, by event name, bound to ``cb``.

    Looked up with :func:`inspect.getattr_static`, so objects that forward unknown
    attributes (course-v3 callbacks forward to their runner) are never asked for a
    method they lack.

    Example:
        >>> class Cb:
        ...     def after_batch(self): ...
        >>> list(event_methods(Cb()))
        ['after_batch']
    """
    found: dict[str, Callable[..., Any]] = {}
    for name in names:
        attr = inspect.getattr_static(cb, name, None)
        if attr is None:
            continue
        if isinstance(attr, (staticmethod, classmethod)) or callable(attr):
            found[name] = getattr(cb, name)
    return found


def is_loop_helper(cb: object) -> bool:
    """A dialect's own helper in the handler (``loop_helper = True``), not one of the user's callbacks.

    Example:
        >>> class Helper:
        ...     loop_helper = True
        >>> is_loop_helper(Helper()), is_loop_helper(object())
        (True, False)
    """
    return getattr(type(cb), "loop_helper", False) is True


def _note(exc: BaseException, cb: object, event: str) -> None:
    # Name the callback and the event once, on the innermost dispatch that saw the error.
    if getattr(exc, "_fastlight_noted", False):
        return
    name = type(getattr(cb, "wrapped", cb)).__name__  # the user's class, not a dialect wrapper
    exc.add_note(f"fastlight: raised by callback {name} in event `{event}`")
    try:
        exc._fastlight_noted = True  # type: ignore[attr-defined]
    except AttributeError:  # exceptions with __slots__
        pass


class EventDispatch:
    """Callbacks sorted by ``order`` (stable), callable per event: the loop's dispatcher.

    ``dispatch("after_batch")`` runs every callback that defines ``after_batch``, skipping
    muted ones (``run = False``) and, for batch-level events, those whose ``run_train`` /
    ``run_valid`` excludes the current phase. The per-event dispatch table is built once
    after callbacks change, never per event. At a batch-level event whose callbacks all report
    their flag changes, who runs is read once and kept until a run flag is written or a
    fit-, epoch- or phase-level event fires (saves two attribute reads per callback per
    event: docs/performance.md). (No ``__getattr__`` here: it would put every
    attribute read of the hot ``__call__`` on CPython's slow, unspecialized path; the public
    :class:`CallbackHandler` adds the article's any-method calls on top.)

    Example:
        >>> from bridge import Callback
        >>> class Hello(Callback):
        ...     def before_fit(self) -> None:
        ...         print("hello")
        >>> dispatch = EventDispatch([Hello()])
        >>> dispatch("before_fit")
        hello
    """

    def __init__(self, cbs: Iterable[Any] | None = None, training: Callable[[], bool] | None = None) -> None:
        self._cbs: list[Any] = []
        #: Bumped whenever the callbacks or their order change (for caches built from them).
        self.version = 0
        self._table: dict[str, _Row] | None = None
        self._training = training or (lambda: True)
        # Who runs, per batch-level event, in training and in validation; valid at _ready_at.
        self._ready_train: dict[str, tuple[_Ready, ...] | None] = {}
        self._ready_valid: dict[str, tuple[_Ready, ...] | None] = {}
        self._ready_at = -1
        self._tracked: dict[int, bool] = {}  # id(callback) -> tracks_run_flags, since the last reset
        for cb in cbs or ():
            self.add(cb)

    # -- membership -------------------------------------------------------------------
    @property
    def cbs(self) -> list[Any]:
        """The callbacks, in the order they run."""
        return list(self._cbs)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._cbs))

    def __len__(self) -> int:
        return len(self._cbs)

    def __contains__(self, cb: object) -> bool:
        return any(c is cb for c in self._cbs)

    def add(self, cb: Any) -> None:
        """Insert ``cb`` after every callback whose order is <= its own.

        Example:
            >>> class Quiet: ...
            >>> h = CallbackHandler()
            >>> h.add(Quiet())  # no events: allowed here, the Learner checks them
        """
        for flag in RUN_FLAGS:
            # Plain attributes on every callback: dispatch then reads them without getattr calls.
            if inspect.getattr_static(cb, flag, None) is None:
                try:
                    setattr(cb, flag, True)
                except AttributeError as exc:
                    raise TypeError(f"CallbackHandler: cannot set `{flag}` on {type(cb).__name__} ({exc})") from None
        order = _order(cb)
        pos = len(self._cbs)
        for i, other in enumerate(self._cbs):
            if _order(other) > order:
                pos = i
                break
        self._cbs.insert(pos, cb)
        self._changed()

    def remove(self, cb: Any) -> None:
        """Remove ``cb`` (by identity); a callback that is not there is ignored.

        Example:
            >>> class Quiet: ...
            >>> h = CallbackHandler(); c = Quiet(); h.add(c); h.remove(c); len(h)
            0
        """
        self._cbs = [c for c in self._cbs if c is not cb]
        self._changed()

    def resort(self) -> None:
        """Re-sort after a callback's ``order`` changed (stable).

        Example:
            >>> CallbackHandler().resort()
        """
        self._cbs.sort(key=_order)
        self._changed()

    def _changed(self) -> None:
        self._table = None
        self._ready_at = -1
        self.version += 1

    # -- dispatch -----------------------------------------------------------------------
    def _build(self) -> dict[str, _Row]:
        per_cb = [(cb, event_methods(cb)) for cb in self._cbs]
        table = {
            name: (name in INNER_LOOP, tuple((cb, meths[name]) for cb, meths in per_cb if name in meths))
            for name in EVENT_NAMES
        }
        self._table = table
        return table

    def subscribers(self, event: str) -> list[Any]:
        """The callbacks that run at ``event`` (ignoring ``run`` flags).

        Example:
            >>> CallbackHandler().subscribers("after_batch")
            []
        """
        table = self._table if self._table is not None else self._build()
        return [cb for cb, _ in table[event][1]]

    def __call__(self, event: str) -> None:
        table = self._table if self._table is not None else self._build()
        inner, entries = table[event]
        if not inner:
            self._ready_at = -1  # flags or classes may change unseen: read them again each phase
        if entries:
            cb: Any = None
            try:
                if not inner:
                    for cb, meth in entries:
                        if cb.run:
                            meth()
                else:
                    training = self._training()
                    rest = entries  # those whose flags are read at their turn
                    if self._ready_at != FLAG_WRITES[0]:
                        self._ready_train.clear()
                        self._ready_valid.clear()
                        self._tracked.clear()
                        self._ready_at = FLAG_WRITES[0]
                    ready = (self._ready_train if training else self._ready_valid).get(event, _UNSET)
                    if ready is _UNSET:
                        ready = self._fill(event, entries, training)
                    if ready is not None:
                        seen = self._ready_at
                        for cb, meth, at in ready:  # noqa: B007 (cb names the raiser below)
                            meth()
                            if FLAG_WRITES[0] != seen:  # a callback wrote run flags: read the rest's
                                rest = entries[at + 1 :]
                                break
                        else:
                            rest = ()
                    if rest and training:
                        for cb, meth in rest:
                            if cb.run and cb.run_train:
                                meth()
                    elif rest:
                        for cb, meth in rest:
                            if cb.run and cb.run_valid:
                                meth()
            except CancelException:
                raise
            except Exception as exc:
                translate = getattr(cb, "translate_error", None)  # a dialect's own cancels: its meaning
                cancel = translate(exc) if translate is not None else None
                if cancel is None:
                    cancel = as_cancel(exc)  # fastai's own cancel classes: fastai's meaning
                if cancel is not None:
                    raise cancel from exc
                _note(exc, cb, event)
                raise
        if event == "after_fit":
            for cb in self._cbs:
                if getattr(cb, "run", True) is False:
                    cb.run = True

    def _fill(self, event: str, entries: tuple[_Entry, ...], training: bool) -> tuple[_Ready, ...] | None:
        # Whether each callback reports its flag writes is asked again after every reset (its
        # class may have changed); None: some cannot, so this event reads flags at each call.
        tracked = self._tracked
        for cb, _ in entries:
            if id(cb) not in tracked:
                tracked[id(cb)] = tracks_run_flags(cb)
        ok = all(tracked[id(cb)] for cb, _ in entries)
        ready = _runnable(entries, "run_train" if training else "run_valid") if ok else None
        (self._ready_train if training else self._ready_valid)[event] = ready
        return ready

    def show_training_loop(self) -> str:
        """A text listing of which callbacks run at each event, in loop order.

        Example:
            >>> print(CallbackHandler().show_training_loop())  # doctest: +ELLIPSIS
            Start Fit
            ...
        """
        indent = 0
        lines: list[str] = []
        for name in EVENT_NAMES:
            if name == "after_create":
                continue
            if name.startswith("before_") and name != "before_backward" and name != "before_step":
                lines.append("  " * indent + "Start " + name[7:].capitalize())
                indent += 1
            subs = [cb for cb in self.subscribers(name) if not is_loop_helper(cb)]
            if subs:
                names = ", ".join(type(getattr(c, "wrapped", c)).__name__ for c in subs)  # a dialect's: its own class
                lines.append("  " * indent + f"- {name:<22}: " + names)
            if name.startswith("after_") and name[6:] in _CLOSING:
                indent = max(indent - 1, 0)
                lines.append("  " * indent + "End " + name[6:].capitalize())
        return "\n".join(lines)


def _runnable(entries: tuple[_Entry, ...], gate: str) -> tuple[_Ready, ...] | None:
    """The entries whose ``run`` and ``gate`` flags are set, with their positions; None if a flag is not a bool."""
    out = []
    for at, (cb, meth) in enumerate(entries):
        run, phase = cb.run, getattr(cb, gate)
        if type(run) is not bool or type(phase) is not bool:  # e.g. a list: truthiness can change unwritten
            return None
        if run and phase:
            out.append((cb, meth, at))
    return tuple(out)


def _order(cb: object) -> int:
    for attr in ("order", "_order"):
        value = inspect.getattr_static(cb, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return 0


#: The events of the article's handler (course-v3 ``04_callbacks``), with its return rule.
SEED_EVENTS: tuple[str, ...] = (
    "begin_fit",
    "after_fit",
    "begin_epoch",
    "begin_validate",
    "after_epoch",
    "begin_batch",
    "after_loss",
    "after_backward",
    "after_step",
)


class CallbackHandler(EventDispatch):
    """The article's ``CallbackHandler``: any method call on it runs on every callback that has it.

    ``handler("after_batch")`` dispatches a fastai v2 event as the loop does (run flags,
    returns None). ``handler.<name>(*args, **kwargs)`` calls ``<name>(*args, **kwargs)`` on
    every callback that defines it (the ``hasattr`` rule), in ``order``, and returns:

    - for the article's own events (``begin_fit(learn)``, ``after_fit()``, ``begin_epoch(epoch)``,
      ``begin_validate()``, ``after_epoch()``, ``begin_batch(xb, yb)``, ``after_loss(loss)``,
      ``after_backward()``, ``after_step()``): True only if every callback returned truthy, as
      ``res = res and cb.<name>(...)`` (a falsy answer stops the calls). As in the article,
      ``begin_fit`` records ``learn`` and sets ``learn.stop = False``, ``begin_epoch`` /
      ``begin_validate`` put the model in train / eval mode, ``after_loss`` is falsy outside
      training (no backward), ``after_fit`` starts from ``not in_train``; ``do_stop()`` returns
      ``learn.stop`` and resets it;
    - for any other name (``on_epoch_end()``, ``before_calc(i)``, ``after_calc(i, val=res)``,
      a fastai v2 event called as a method): True if any callback returned truthy (every one
      is called).

    Example:
        >>> from bridge import CallbackHandler
        >>> class Hello:
        ...     def before_fit(self) -> None:
        ...         print("hello")
        ...     def after_calc(self, i: int, val: int) -> bool:
        ...         return val > 10
        >>> handler = CallbackHandler([Hello()])
        >>> handler("before_fit")
        hello
        >>> handler.before_fit()
        hello
        False
        >>> handler.after_calc(3, val=12), handler.on_epoch_end()
        (True, False)
    """

    def __init__(self, cbs: Iterable[Any] | None = None, training: Callable[[], bool] | None = None) -> None:
        super().__init__(cbs, training)
        self.learn: Any = None
        self.in_train = False

    def __getattr__(self, name: str) -> Callable[..., bool]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._call_any, name)

    def _methods(self, name: str) -> list[Callable[..., Any]]:
        # getattr_static first: course-v3 callbacks forward unknown attributes to their runner.
        return [getattr(cb, name) for cb in self._cbs if callable(inspect.getattr_static(cb, name, None))]

    def _call_any(self, name: str, *args: Any, **kwargs: Any) -> bool:
        res = False
        for method in self._methods(name):
            res = bool(method(*args, **kwargs)) or res
        return res

    def _call_all(self, name: str, res: bool, *args: Any) -> bool:
        for method in self._methods(name):
            res = bool(res and method(*args))
        return res

    # -- the article's events ---------------------------------------------------------------
    def begin_fit(self, learn: Any) -> bool:
        self.learn, self.in_train = learn, True
        learn.stop = False
        return self._call_all("begin_fit", True, learn)

    def after_fit(self) -> bool:
        return self._call_all("after_fit", not self.in_train)

    def begin_epoch(self, epoch: int) -> bool:
        self.learn.model.train()
        self.in_train = True
        return self._call_all("begin_epoch", True, epoch)

    def begin_validate(self) -> bool:
        self.learn.model.eval()
        self.in_train = False
        return self._call_all("begin_validate", True)

    def after_epoch(self) -> bool:
        return self._call_all("after_epoch", True)

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        return self._call_all("begin_batch", True, xb, yb)

    def after_loss(self, loss: Any) -> bool:
        return self._call_all("after_loss", self.in_train, loss)

    def after_backward(self) -> bool:
        return self._call_all("after_backward", True)

    def after_step(self) -> bool:
        return self._call_all("after_step", True)

    def do_stop(self) -> bool:
        """``learn.stop``, reset to False (the article's way to end a pass)."""
        try:
            return bool(self.learn.stop)
        finally:
            self.learn.stop = False

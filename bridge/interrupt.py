"""Ctrl-C during ``Learner.fit``: a ``KeyboardInterrupt`` for the caller, not ``sys.exit``.

Lightning answers a ``KeyboardInterrupt`` in ``Trainer.fit`` by running the ``on_exception``
hooks (fastlight's ``after_fit`` runs there, loggers flush), setting SIGINT to be ignored
for the rest of the process, and calling ``sys.exit(1)``. In a notebook or a script that
wants to save or fit again, that is the wrong answer: in one process, fastlight gives the
caller the ``KeyboardInterrupt`` and the SIGINT handler it had before the fit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["interrupt_raises"]


@contextlib.contextmanager
def interrupt_raises(learn: Any) -> Iterator[None]:
    """Turn Lightning's exit on Ctrl-C back into ``KeyboardInterrupt`` (single process only).

    Under a multi-process launcher Lightning's exit stands: it has already stopped the
    other ranks. The SIGINT handler is restored in every case.

    Example:
        >>> class L: exception = None
        >>> with interrupt_raises(L()):
        ...     pass
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit:
        trainer = getattr(learn, "trainer", None)
        single = trainer is None or getattr(trainer.strategy, "launcher", None) is None
        if isinstance(getattr(learn, "exception", None), KeyboardInterrupt) and single:
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)

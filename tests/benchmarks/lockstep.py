"""Lockstep timing: several training loops in threads, one running at a time, taking turns.

Used by ``bench_overhead.py``. The loader is the stopwatch: a :class:`Batches` dataset
serves pre-built batches and, at every ``block``-th fetch, records the time since its
turn began and hands over to the next loop through a :class:`Lockstep`. Importing this
module changes no global state (no thread counts, no warning filters).

Example (two plain loops taking turns of 2 batches)::

    >>> import threading
    >>> from torch.utils.data import DataLoader
    >>> gate = Lockstep(["x", "y"], block=2)
    >>> data = [(torch.zeros(1), torch.zeros(1))] * 7
    >>> dls = {k: DataLoader(Batches(data, start=2, gate=gate, key=k), batch_size=None) for k in "xy"}
    >>> errors = gate.run({k: (lambda dl=dl: [b for b in dl] and None) for k, dl in dls.items()})
    >>> errors, [len(dl.dataset.blocks) for dl in dls.values()]
    ({}, [2, 2])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

__all__ = ["Batches", "Lockstep", "steady_malloc"]


def steady_malloc() -> bool:
    """Make glibc's malloc keep freed memory, in one arena, as a long single-threaded run does.

    Threads get their own malloc arenas, which hand freed memory back to the OS; each step
    then faults its tensors' pages in again (about 6,000 page faults per step on the
    compute-bound MLP, 3-13% spread between identical loops taking turns). In one arena, with
    allocations up to 32 MB served from the heap and no trimming, the steady state has no
    page faults and identical loops agree within 1-4%. Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    return bool(mallopt(m_arena_max, 1) and mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30))


#: The clocks (module attributes so that a test can drive them). CPU time is the calling
#: thread's: work a fit hands to a thread of its own (TensorBoard's writer) is not in it.
_wall: Callable[[], float] = time.perf_counter
_cpu: Callable[[], float] = time.thread_time


def _stamp(device: torch.device | None = None) -> tuple[float, float]:
    """(wall, this thread's CPU) time; waits for queued CUDA work first (so on a GPU every
    turn boundary is a synchronization point, in every variant alike)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return _wall(), _cpu()


class Batches(Dataset):  # type: ignore[type-arg]
    """Pre-built batches, served one per index (use with ``DataLoader(batch_size=None)``).

    It is also the stopwatch: every variant fetches batch ``i`` right before training on
    it, so clocks read at fetches bracket whole training steps, the same way in every
    variant, without set-up, epoch end or teardown (this relies on ``__len__``: Lightning
    prefetches no batch from a loader with a length). With a :class:`Lockstep` ``gate``
    the fit hands the machine to the next variant every ``block`` batches (see there) and
    the time of each block from batch ``start`` on is kept. One pass only: a fit that
    fetches past the last batch fails instead of waiting for a turn that never comes.
    """

    def __init__(
        self,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        start: int = 0,
        gate: Lockstep | None = None,
        key: str = "",
        device: torch.device | None = None,
    ) -> None:
        if gate is not None and start % gate.block:
            raise ValueError(f"start={start} must be a multiple of the gate's block={gate.block}")
        self.batches, self.start, self.gate, self.key, self.device = batches, start, gate, key, device
        self._done = False
        self.blocks: list[tuple[float, float]] = []  # (wall, CPU) s of each timed block, in batch order
        self._open: tuple[int, float, float] | None = None  # (first batch, wall, cpu) of the running block

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gate, last = self.gate, len(self.batches) - 1
        if gate is None:
            return self.batches[i]
        if self._done:
            raise RuntimeError(f"lockstep {self.key!r}: batch {i} fetched after the last one (one pass only)")
        if self._open is None:  # first fetch of the fit: wait for every variant and the turn
            gate.arrive(self.key)
            self._open = (i, *_stamp(self.device))
        elif i % gate.block == 0 or i == last:
            w, c = _stamp(self.device)
            i0, w0, c0 = self._open
            if i0 >= self.start:
                self.blocks.append((w - w0, c - c0))
            if i == last:
                self._done = True
                gate.finish(self.key)
            else:
                gate.pass_turn(self.key)
                self._open = (i, *_stamp(self.device))
        return self.batches[i]

    @property
    def expected_blocks(self) -> int:
        """Timed blocks of a whole pass: from ``start`` to the last batch, ``block`` at a time."""
        block = self.gate.block if self.gate is not None else 1
        return -(-(len(self.batches) - 1 - self.start) // block)

    def per_batch(self) -> tuple[float, float]:
        """(wall, CPU) seconds per training step from batch ``start`` to the last one.

        Raises ``RuntimeError`` if the pass did not reach the last batch (a fit that stopped
        early would otherwise report its partial time spread over steps it never trained).
        """
        if not self._done or len(self.blocks) != self.expected_blocks:
            raise RuntimeError(
                f"lockstep {self.key!r}: {len(self.blocks)} of {self.expected_blocks} blocks timed; "
                "the fit did not train every batch"
            )
        n = len(self.batches) - 1 - self.start
        return sum(b[0] for b in self.blocks) / n, sum(b[1] for b in self.blocks) / n


class Lockstep:
    """Runs one fit per variant, each in its own thread, one at a time, in turns of ``block`` batches.

    The machine this runs on changes speed by 20-40% from one tenth of a second to the
    next (another tenant, frequency): timed one after the other, two identical fits differ
    by more than the overheads measured here. In lockstep, every variant trains ``block``
    batches (a few milliseconds) and hands over to the next; all variants thus share every
    slow and fast period, and the ratio of their total times measures their cost, not the
    machine's mood. Only the thread holding the turn runs (the others wait on an
    ``Event``); set-up before the first batch and the end of the fit after the last one
    run untimed, once every variant has reached that point.
    """

    def __init__(self, keys: list[str], block: int) -> None:
        self.block, self.ring = block, list(keys)
        self.go = {k: threading.Event() for k in keys}
        self.lock = threading.Lock()
        self.arrived: set[str] = set()
        self.active = list(keys)  # variants still in their timed part, in turn order
        self.all_arrived, self.all_done = threading.Event(), threading.Event()
        self.holder: str | None = None  # whose turn it is

    def _after(self, key: str) -> str | None:
        """The variant after ``key`` in turn order that is still active (under ``lock``)."""
        i = self.ring.index(key)
        for k in self.ring[i + 1 :] + self.ring[: i + 1]:
            if k in self.active:
                return k
        return None

    def _wait(self, key: str) -> None:
        self.go[key].wait()
        self.go[key].clear()
        self.holder = key

    def _count_in(self, key: str) -> None:
        """``key`` reached its first batch or left before it (under ``lock``); the last one opens the start."""
        self.arrived.add(key)
        if len(self.arrived) == len(self.ring):
            self.all_arrived.set()

    def arrive(self, key: str) -> None:
        with self.lock:
            self._count_in(key)
        self._wait(key)

    def pass_turn(self, key: str) -> None:
        with self.lock:
            nxt = self._after(key)
        assert nxt is not None
        self.go[nxt].set()
        self._wait(key)

    def finish(self, key: str) -> None:
        """``key``'s timed part is over: hand over, then wait until everybody's is."""
        self.leave(key)
        self.all_done.wait()

    def leave(self, key: str) -> None:
        """``key`` stops taking turns (timed part over, or its thread ended or failed)."""
        with self.lock:
            self._count_in(key)
            if key not in self.active:
                return
            nxt = self._after(key) if self.holder == key else None
            self.active.remove(key)
            if nxt == key:
                nxt = None
            if not self.active:
                self.all_done.set()
        if nxt is not None:
            self.go[nxt].set()

    def run(self, fits: dict[str, Callable[[], None]], timeout: float = 1800.0) -> dict[str, BaseException]:
        """Run ``fits`` (key -> timed call) in lockstep; the errors of those that failed."""
        errors: dict[str, BaseException] = {}

        def body(key: str, fit: Callable[[], None]) -> None:
            try:
                fit()
            except BaseException as exc:  # reported by the caller
                errors[key] = exc
            finally:
                self.leave(key)

        threads = [threading.Thread(target=body, args=kv, daemon=True) for kv in fits.items()]
        for t in threads:
            t.start()
        if not self.all_arrived.wait(timeout):
            raise TimeoutError("lockstep: not every variant reached its first batch")
        with self.lock:
            first = self.active[0] if self.active else None
        if first is not None:
            self.go[first].set()
        for t in threads:
            t.join(timeout)
            if t.is_alive():
                raise TimeoutError("lockstep: a variant did not finish")
        return errors

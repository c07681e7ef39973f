"""The overhead benchmark's lockstep stopwatch (tests/benchmarks/lockstep.py): turn order,
what is timed, and that a failing loop does not hang the others."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from torch.utils.data import DataLoader

from tests.benchmarks.lockstep import Batches, Lockstep

N = 10  # batches 0..9


def _loops(
    keys: str, block: int, start: int, body: Callable[[str, int], None]
) -> tuple[Lockstep, dict[str, Batches], dict[str, Callable[[], None]]]:
    gate = Lockstep(list(keys), block)
    data = [(torch.tensor(i), torch.tensor(i)) for i in range(N)]
    sets = {k: Batches(data, start=start, gate=gate, key=k) for k in keys}

    def loop(k: str) -> Callable[[], None]:
        def run() -> None:
            for x, _ in DataLoader(sets[k], batch_size=None):
                body(k, int(x))

        return run

    return gate, sets, {k: loop(k) for k in keys}


def test_loops_take_turns_of_block_batches_in_ring_order() -> None:
    log: list[tuple[str, int]] = []
    gate, sets, fits = _loops("xyz", 3, 3, lambda k, i: log.append((k, i)))
    assert gate.run(fits, timeout=30) == {}
    # Each loop trains 3 batches, then the next one takes over; the last batch (9) of every
    # loop runs after all three have fetched it (the untimed end of the fit).
    expected = [(k, i) for b0 in (0, 3, 6) for k in "xyz" for i in range(b0, b0 + 3)]
    assert log[:-3] == expected
    assert sorted(log[-3:]) == [("x", 9), ("y", 9), ("z", 9)]
    # Turns from batch 3 on are timed: 3->6 and 6->9.
    assert [len(s.blocks) for s in sets.values()] == [2, 2, 2]


def test_each_loop_is_timed_for_its_own_work_only() -> None:
    pause = {"x": 0.005, "y": 0.010}
    gate, sets, fits = _loops("xy", 2, 2, lambda k, i: time.sleep(pause[k]))
    assert gate.run(fits, timeout=30) == {}
    (wx, _), (wy, _) = sets["x"].per_batch(), sets["y"].per_batch()
    # Waiting for the turn is not counted: y's steps take twice x's (sleep overshoot aside).
    assert wx >= 0.005
    assert 1.4 < wy / wx < 2.6


@pytest.mark.parametrize("when", [0, 4])
def test_a_failing_loop_neither_hangs_nor_stops_the_others(when: int) -> None:
    log: list[tuple[str, int]] = []

    def body(k: str, i: int) -> None:
        if k == "y" and i == when:
            raise RuntimeError("boom")
        log.append((k, i))

    gate, sets, fits = _loops("xyz", 3, 3, body)
    errors = gate.run(fits, timeout=30)
    assert list(errors) == ["y"] and str(errors["y"]) == "boom"
    assert {i for k, i in log if k == "x"} == set(range(N))
    assert {i for k, i in log if k == "z"} == set(range(N))
    assert len(sets["x"].blocks) == len(sets["z"].blocks) == 2


def test_a_loop_that_fails_before_its_first_batch_does_not_block_the_start() -> None:
    gate, sets, fits = _loops("xy", 3, 3, lambda k, i: None)

    def broken() -> None:
        raise ValueError("no data")

    fits["y"] = broken
    errors = gate.run(fits, timeout=30)
    assert list(errors) == ["y"]
    assert len(sets["x"].blocks) == 2

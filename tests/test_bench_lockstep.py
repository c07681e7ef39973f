"""The overhead benchmark's lockstep stopwatch (tests/benchmarks/lockstep.py): turn order,
what is timed, and that a failing loop does not hang the others."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.data import DataLoader

from tests.benchmarks import lockstep
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


def test_each_loop_is_timed_for_its_own_work_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock that only the loops' work moves: x's step costs 1, y's 2, each hand-over
    # 100 (waiting for the turn). Counting another loop's turn or the wait would show.
    clock = [0.0]
    monkeypatch.setattr(lockstep, "_wall", lambda: clock[0])
    monkeypatch.setattr(lockstep, "_cpu", lambda: clock[0])
    cost = {"x": 1.0, "y": 2.0}

    def work(k: str, i: int) -> None:
        clock[0] += cost[k]

    gate, sets, fits = _loops("xy", 2, 2, work)
    real_pass = gate.pass_turn

    def slow_pass(key: str) -> None:
        clock[0] += 100.0
        real_pass(key)

    monkeypatch.setattr(gate, "pass_turn", slow_pass)
    assert gate.run(fits, timeout=30) == {}
    # Batches 2..8 are trained inside the timed turns (7 steps).
    assert sets["x"].per_batch() == (1.0, 1.0)
    assert sets["y"].per_batch() == (2.0, 2.0)


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


def test_a_loop_that_stops_early_has_no_time_to_report() -> None:
    gate = Lockstep(["x", "y"], 2)
    data = [(torch.tensor(i), torch.tensor(i)) for i in range(N)]
    sets = {k: Batches(data, start=2, gate=gate, key=k) for k in "xy"}

    def whole() -> None:
        for _ in DataLoader(sets["x"], batch_size=None):
            pass

    def stops_at_5() -> None:
        for x, _ in DataLoader(sets["y"], batch_size=None):
            if int(x) == 5:
                break

    assert gate.run({"x": whole, "y": stops_at_5}, timeout=30) == {}
    assert len(sets["x"].blocks) == sets["x"].expected_blocks == 4
    with pytest.raises(RuntimeError, match=r"'y': 1 of 4 blocks timed"):
        sets["y"].per_batch()


def test_a_second_pass_fails_instead_of_waiting_for_a_turn() -> None:
    def two_epochs(k: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(2):
                for _ in DataLoader(sets[k], batch_size=None):
                    pass

        return run

    gate = Lockstep(["x", "y"], 3)
    data = [(torch.tensor(i), torch.tensor(i)) for i in range(N)]
    sets = {k: Batches(data, start=3, gate=gate, key=k) for k in "xy"}
    errors = gate.run({k: two_epochs(k) for k in "xy"}, timeout=30)
    assert sorted(errors) == ["x", "y"]
    assert all("fetched after the last one" in str(e) for e in errors.values())


def test_start_must_fall_on_a_turn_boundary() -> None:
    with pytest.raises(ValueError, match=r"start=5 must be a multiple of the gate's block=2"):
        Batches([], start=5, gate=Lockstep(["x"], 2), key="x")

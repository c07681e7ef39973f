"""The peer benchmark's own logic (tests/benchmarks/bench_peer.py): run order, pairing, ratios, control.

No timer is asserted: these check the bookkeeping that turns timings into the reported figures.
"""

from __future__ import annotations

import statistics

import pytest

from tests.benchmarks import bench_peer
from tests.benchmarks.bench_peer import (
    PAIRS,
    VARIANTS,
    control_name,
    import_costs,
    pair_report,
    paired,
    run_order,
    run_repeats,
    summarize,
)


def test_run_order_is_a_permutation_that_alternates_and_rotates() -> None:
    names = ["fastai", "fastlight", "lightning", "fastlight*"]
    orders = [run_order(names, r) for r in range(8)]
    assert all(sorted(o) == sorted(names) for o in orders)
    # odd repeats run the previous repeat's order backwards
    assert orders[1] == orders[0][::-1] and orders[3] == orders[2][::-1]
    # over 2 * len(names) repeats every variant runs first exactly twice
    firsts = [o[0] for o in orders]
    assert {n: firsts.count(n) for n in names} == dict.fromkeys(names, 2)


def test_paired_ratio_takes_each_repeat_on_its_own() -> None:
    # a slow machine in repeat 1 stretches both members of that pair: the paired ratios stay 2
    times = {"a": [2.0, 20.0, 4.0], "b": [1.0, 10.0, 2.0]}
    assert paired(times, "a", "b") == [2.0, 2.0, 2.0]
    # the ratio of the pooled times would not be; the paired median is
    assert pair_report(times, "a", "b")["median"] == 2.0
    assert pair_report(times, "a", "b")["min_ratio"] == 2.0


def test_paired_refuses_unequal_repeats() -> None:
    with pytest.raises(ValueError, match="a has 2 repeats, b has 1"):
        paired({"a": [1.0, 2.0], "b": [1.0]}, "a", "b")


def test_summarize_quartiles_against_sorted_positions() -> None:
    xs = [0.5, 1.5, 1.0, 2.0, 3.0]  # sorted: 0.5 1.0 1.5 2.0 3.0 -> inclusive quartiles at ranks 1 and 3
    s = summarize(xs)
    assert (s["q1"], s["median"], s["q3"]) == (1.0, 1.5, 2.0)
    assert s["p10"] == pytest.approx(0.5 + 0.4 * 0.5) and s["p90"] == pytest.approx(2.0 + 0.6 * 1.0)
    assert s["n"] == 5 and s["samples"] == xs
    one = summarize([1.25])
    assert one["q1"] == one["q3"] == one["median"] == 1.25
    with pytest.raises(ValueError, match="no ratios"):
        summarize([])


def test_control_runs_the_same_callable_and_is_paired_with_it() -> None:
    calls: list[str] = []

    def runner(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def run() -> float:
            calls.append(name)
            return seconds

        return run

    runners = {"x": runner("x", 2.0), "y": runner("y", 1.0)}
    runners[control_name("x")] = runners["x"]
    times = run_repeats(runners, repeats=4, warmup=1)
    assert {n: len(t) for n, t in times.items()} == {"x": 4, "y": 4, "x*": 4}
    assert len(calls) == 5 * 3  # warm-up rounds run but are not counted
    assert pair_report(times, "x*", "x")["median"] == 1.0
    assert pair_report(times, "x", "y")["median"] == 2.0


def test_import_costs_median_over_alternating_rounds() -> None:
    seen: list[str] = []
    values = iter(range(1, 100))

    def measure(statement: str) -> float:
        seen.append(statement)
        return float(next(values))

    out = import_costs(3, measure=measure, warmup=1)
    assert set(out) == set(bench_peer.IMPORTS)
    n = len(bench_peer.IMPORTS)
    assert len(seen) == 4 * n  # the warm-up round runs but is not counted
    for s in out.values():
        assert s["median"] == statistics.median(s["samples"]) and s["min"] == min(s["samples"])
        assert len(s["samples"]) == 3 and min(s["samples"]) > n  # none of the warm-up's values 1..n
    # round 1 runs round 0's order backwards
    assert seen[n : 2 * n] == seen[:n][::-1]


def test_budgeted_pairs_name_known_variants() -> None:
    assert {v for pair in PAIRS for v in pair} == set(VARIANTS)
    assert ("fastlight", "fastai") in PAIRS and ("fastlight", "lightning") in PAIRS


def test_imports_are_timed_with_pythons_default_bytecode_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # as in this project's sandbox
    assert bench_peer.import_seconds("import sys; assert not sys.flags.dont_write_bytecode") >= 0

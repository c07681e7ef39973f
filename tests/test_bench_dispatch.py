"""The dispatch micro-benchmark (tests/benchmarks/bench_dispatch.py) counts what it times."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_dispatch
from tests.benchmarks.bench_overhead import NoOpCourseV3, NoOpV1, NoOpV2


@pytest.mark.parametrize(
    ("make", "events"),
    [
        (NoOpV2, 8),  # every event of a training batch
        (NoOpV1, 6),  # on_batch_begin, on_loss_begin, on_backward_begin/_end, on_step_end, on_batch_end
        (NoOpCourseV3, 6),  # begin_batch, after_pred, after_loss, after_backward, after_step, after_batch
    ],
)
def test_one_callback_of_each_dialect_runs_at_its_batch_events(make: type, events: int) -> None:
    # The dialects' own loop helpers (V1Flags, V1Prelude, FloatLrs, ...) are not the callback counted.
    assert bench_dispatch.subscribed(make) == events


def test_a_short_run_reports_every_dialect() -> None:
    out = bench_dispatch.main(["--n", "2", "--repeats", "2", "--number", "3"])
    assert sorted(out) == sorted(
        ["base_us"] + [f"{d}_{k}" for d in ("v2", "v1", "course") for k in ("us", "ns_per_cb_event")]
    )
    assert all(out[f"{d}_us"] > 0 for d in ("v2", "v1", "course"))

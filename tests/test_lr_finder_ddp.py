"""Under strategy="ddp" (2 CPU processes): lr_find agrees on every rank; the gradient tools run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.ddp
def test_lr_find_and_grad_tools_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script("lr_finder_ddp", tmp_path, timeout=240)
    # one suggestion on every rank, from the same globally averaged curve
    assert r0["valley"] == r1["valley"] and r0["minimum"] == r1["minimum"]
    assert r0["losses"] == r1["losses"] and r0["lrs"] == r1["lrs"]
    n = len(r0["lrs"])
    # 8 batches per rank and epoch: the schedule spans 24 iterations (3 epochs), unless it diverged first
    assert 6 < n <= 24
    assert r0["lrs"] == pytest.approx([1e-7 * (100.0 / 1e-7) ** (i / 24) for i in range(n)], rel=1e-9)
    assert r0["restored"] and r1["restored"]
    # accumulation: 2 epochs x 8 batches of 16 per rank, one step per 32 samples -> 8 steps
    assert r0["steps"] == r1["steps"] == 8
    assert r0["max_post_norm"] <= 0.05 * 1.0001
    assert r0["weights"] == r1["weights"]

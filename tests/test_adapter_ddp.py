"""LightningAdapter on 2 CPU processes (gloo): events on both ranks, identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.ddp
def test_adapter_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script("adapter_ddp", tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    # 192 items / 2 ranks / bs 32 = 3 train batches + 1 valid batch per epoch; v1 stop after epoch 1
    for r in (r0, r1):
        assert r["epochs"] == 2 and r["batches"] == 2 * (3 + 1) and r["lrs"] == 6
    assert r0["seen_metrics"] == r1["seen_metrics"]  # the v1 callback saw global valid loss on both ranks
    assert r0["weights"] == r1["weights"]

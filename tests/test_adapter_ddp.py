"""LightningAdapter on 2 CPU processes (gloo): events on both ranks, identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script
from tests.test_adapter_monitor import fastai_rule


@pytest.mark.ddp
def test_adapter_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script("adapter_ddp", tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    # 192 items / 2 ranks / bs 32 = 3 train batches + 1 valid batch per epoch; v1 stop after epoch 1
    for r in (r0, r1):
        assert r["epochs"] == 2 and r["batches"] == 2 * (3 + 1) and r["lrs"] == 6
    assert r0["seen_metrics"] == r1["seen_metrics"]  # the v1 callback saw global valid loss on both ranks
    assert r0["weights"] == r1["weights"]

    # The second fit: DictSteps logs its own per-rank val_loss; trackers use rank 0's on both ranks.
    l0, l1 = r0["logged"], r1["logged"]
    _, stop = fastai_rule(l0["values"], less=True, min_delta=0.1, patience=1)  # EarlyStoppingCallback's rule
    assert stop is not None and l0["stopped"] == l1["stopped"] == stop and len(l1["values"]) == stop + 1
    assert l0["values"] != l1["values"]  # each rank logged its own val_loss: the decisions used rank 0's
    better, _ = fastai_rule(l0["values"], less=True, min_delta=0.0, patience=100)  # SaveModelCallback's rule
    assert l0["best"] == l1["best"] == l0["values"][better[-1]]
    assert l0["final"] == l1["final"] == l0["epoch_weights"][better[-1]]  # rank 0's file, loaded on both ranks
    assert (tmp_path / "models" / "best.pth").exists()

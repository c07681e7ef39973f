"""Trackers and loggers under DDP (2 CPU processes, gloo), all checks in one launched script.

- SaveModelCallback: only rank 0 writes (one write per improvement), both ranks end with the
  same best weights;
- EarlyStoppingCallback: a metric whose raw per-rank values disagree; both ranks stop at the
  epoch the *reduced* value dictates (rank 0 alone would never stop, rank 1 alone earlier);
- CSVLogger: one row per epoch, not per rank;
- TerminateOnNaNCallback: a NaN on rank 1 only stops both ranks at the same batch, no hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.ddp
def test_trackers_and_loggers_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script("tracker_ddp", tmp_path, timeout=300)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    # EarlyStopping: global means [1, 2, 1.25] -> new best at 1, stop at 2, on both ranks.
    for r in (r0, r1):
        assert r["epochs"] == [0, 1, 2] and r["stopped"] == 2 and r["cancelled"]
        assert [row[2] for row in r["values"]] == pytest.approx([1.0, 2.0, 1.25])
        assert r["best"] == pytest.approx(2.0)
    assert r0["values"] == r1["values"]
    # SaveModel: rank 0 wrote at epochs 0 and 1 (atomically, to a temp file), rank 1 never.
    assert len(r0["writes"]) == 2 and all(".model.pth." in w and w.endswith(".tmp") for w in r0["writes"])
    assert r1["writes"] == []
    assert (tmp_path / "models" / "model.pth").exists()
    assert r0["final"] == r1["final"] == r0["epoch1"] != r0["epoch2"]  # best (epoch 1) reloaded on both
    # CSV: header + one row per epoch, written by rank 0 only.
    assert r0["csv"] == r1["csv"]
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines == r0["csv"] and lines[0] == "epoch,train_loss,valid_loss,score,time"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
    # TerminateOnNaN: both ranks stop at (0, 1) before the step; weights stay finite and equal.
    # Only rank 1 saw the NaN (and reports where); the bridge's agreement stopped rank 0 there too.
    assert r1["nan_stopped"] == [0, 1] and r0["nan_stopped"] is None
    for r in (r0, r1):
        assert r["nan_epochs"] == [] and r["nan_cancelled"]
        assert r["nan_finite"] and r["nan_losses"] == 1
    assert r0["nan_weights"] == r1["nan_weights"]

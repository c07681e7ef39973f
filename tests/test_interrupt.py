"""Ctrl-C during fit: after_fit runs, loggers flush, the checkpoint is intact, the learner fits again."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_script


def test_ctrl_c_stops_cleanly_and_the_learner_fits_again(tmp_path: Path) -> None:
    [out] = run_script("interrupt", tmp_path, timeout=180)  # tests/scripts/interrupt.py; fails on a non-zero exit
    assert out["raised"] == "KeyboardInterrupt"  # not Lightning's sys.exit(1)
    assert out["events"] == ["after_epoch 0", "after_fit"]  # after_fit ran on the way out
    assert out["handler_restored"]  # Ctrl-C works again afterwards
    assert len(out["values"]) == 1 and out["ckpt_epoch"] == 0  # epoch 0's checkpoint, intact
    assert out["tb_valid"] == [out["values"][0][1]]  # TensorBoard got epoch 0's valid_loss (flushed)
    assert len(out["after_resume"]) == 3 and out["after_resume"][0] == out["values"][0]
    assert out["events_after"][2:] == ["after_epoch 1", "after_epoch 2", "after_fit"]

"""Ctrl-C during fit: after_fit runs, loggers flush, the checkpoint is intact, the learner fits again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO

SCRIPT = """
import json, os, signal
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from bridge import Callback
from tests.helpers import make_data, make_learner

class CtrlC(Callback):
    def __init__(self): self.events, self.armed = [], True
    def before_batch(self):
        if self.armed and self.training and self.epoch == 1 and self.iter == 2:
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends
    def after_fit(self): self.events.append("after_fit")
    def after_epoch(self): self.events.append(f"after_epoch {self.epoch}")

handler = signal.getsignal(signal.SIGINT)
ctrl_c = CtrlC()
learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=16), cbs=[ctrl_c], logger=True)
out = {}
try:
    learn.fit(3)
    out["raised"] = None
except KeyboardInterrupt:
    out["raised"] = "KeyboardInterrupt"
out["events"] = list(ctrl_c.events)
out["handler_restored"] = signal.getsignal(signal.SIGINT) is handler
out["values"] = learn.recorder.values
ckpt = torch.load("checkpoints/last.ckpt", weights_only=True)
out["ckpt_epoch"] = ckpt["epoch"]
logs = [str(p.parent) for p in __import__("pathlib").Path(".").rglob("events.out.tfevents.*")]
acc = EventAccumulator(logs[0]); acc.Reload()
out["tb_valid"] = [e.value for e in acc.Scalars("valid_loss")]
learn.fit(3, resume=True)  # the same learner, in the same process, carries on
out["after_resume"] = learn.recorder.values
out["events_after"] = list(ctrl_c.events)
json.dump(out, open("result.json", "w"))
"""


def test_ctrl_c_stops_cleanly_and_the_learner_fits_again(tmp_path: Path) -> None:
    (tmp_path / "run.py").write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["raised"] == "KeyboardInterrupt"  # not Lightning's sys.exit(1)
    assert out["events"] == ["after_epoch 0", "after_fit"]  # after_fit ran on the way out
    assert out["handler_restored"]  # Ctrl-C works again afterwards
    assert len(out["values"]) == 1 and out["ckpt_epoch"] == 0  # epoch 0's checkpoint, intact
    assert out["tb_valid"] == [out["values"][0][1]]  # TensorBoard got epoch 0's valid_loss (flushed)
    assert len(out["after_resume"]) == 3 and out["after_resume"][0] == out["values"][0]
    assert out["events_after"][2:] == ["after_epoch 1", "after_epoch 2", "after_fit"]

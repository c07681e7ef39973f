"""A run killed with SIGKILL after epoch 2 of 4 and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO

SCRIPT = """
import json, os, signal, sys
import torch
from bridge import Callback
from callbacks import EarlyStoppingCallback, SaveModelCallback
from tests.helpers import make_data, make_learner

mode = sys.argv[1]

class KillAt(Callback):
    def before_epoch(self):
        if self.epoch == 2:  # epochs 0 and 1 are done and checkpointed
            os.kill(os.getpid(), signal.SIGKILL)

torch.manual_seed(0)
data = make_data(n=192, n_valid=64, bs=16)  # shuffled training batches
cbs = [SaveModelCallback(fname="best"), EarlyStoppingCallback(patience=3)]
learn = make_learner(".", data=data, cbs=cbs, lr=3e-3)
if mode == "crash":
    learn.fit_one_cycle(4, lr_max=1e-2, cbs=[KillAt()])
else:
    learn.fit_one_cycle(4, lr_max=1e-2, resume=(mode == "resume"))
json.dump({
    "weights": {k: v.tolist() for k, v in learn.model.state_dict().items()},
    "values": learn.recorder.values,
    "lrs": learn.recorder.lrs,
    "best": learn.save_model.best,
}, open(f"result_{mode}.json", "w"))
"""


def _run(tmp: Path, mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "run.py", mode], cwd=tmp, env=env, capture_output=True, timeout=180
    ).returncode


def test_killed_run_resumes_bit_identical(tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for d in (straight, broken):
        d.mkdir()
        (d / "run.py").write_text(textwrap.dedent(SCRIPT))
    assert _run(straight, "full") == 0
    assert _run(broken, "crash") == -9  # SIGKILL: nothing ran on the way out
    assert (broken / "checkpoints" / "last.ckpt").exists()
    assert not list((broken / "checkpoints").glob("*.tmp"))
    assert _run(broken, "resume") == 0
    a = json.loads((straight / "result_full.json").read_text())
    b = json.loads((broken / "result_resume.json").read_text())
    assert a["weights"] == b["weights"]  # bit-identical
    assert a["values"] == b["values"] and len(b["values"]) == 4  # same history (restored + continued)
    assert a["lrs"] == b["lrs"]  # the same one-cycle learning rates at every step
    assert a["best"] == b["best"]  # the same SaveModel decision


MID_EPOCH = """
import json, os, signal, sys
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from bridge import Callback
from tests.helpers import make_data, make_learner

mode = sys.argv[1]

class Batches(Callback):
    # which items each trained batch held, and kill the run before epoch 1's batch 3
    def __init__(self): self.seen = []
    def before_batch(self):
        if self.training:
            if mode == "crash" and self.epoch == 1 and self.iter == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            self.seen.append([self.epoch, self.iter, self.xb[0][:, 1].tolist()])

torch.manual_seed(0)
data = make_data(n=192, n_valid=64, bs=16)  # 12 shuffled training batches per epoch
learn = make_learner(".", data=data, lr=3e-3, cbs=[Batches()])
ckpt = ModelCheckpoint(dirpath=str(learn.checkpoint_dir), filename="last", every_n_train_steps=1,
                       enable_version_counter=False)
if mode == "resume":
    learn.fit_one_cycle(3, lr_max=1e-2, resume=True)
else:
    learn.fit_one_cycle(3, lr_max=1e-2, cbs=[ckpt])
json.dump({
    "weights": {k: v.tolist() for k, v in learn.model.state_dict().items()},
    "seen": learn.batches.seen, "lrs": learn.recorder.lrs, "losses": learn.recorder.losses,
    "values": learn.recorder.values,
}, open(f"result_{mode}.json", "w"))
"""


def test_killed_mid_epoch_resumes_with_the_next_unseen_batch(tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for d in (straight, broken):
        d.mkdir()
        (d / "run.py").write_text(textwrap.dedent(MID_EPOCH))
    assert _run(straight, "full") == 0
    assert _run(broken, "crash") == -9  # killed before epoch 1's batch 3; batch 2 was checkpointed
    assert _run(broken, "resume") == 0
    a = json.loads((straight / "result_full.json").read_text())
    b = json.loads((broken / "result_resume.json").read_text())
    resumed_at = a["seen"].index(b["seen"][0])
    assert a["seen"][resumed_at][:2] == [1, 3]  # the resumed run starts with epoch 1's batch 3 ...
    assert b["seen"] == a["seen"][resumed_at:]  # ... then the very batches the straight run trained
    assert a["weights"] == b["weights"]  # bit-identical
    assert a["lrs"] == b["lrs"] and len(a["lrs"]) == 36  # the one-cycle schedule continued mid-epoch
    assert a["losses"] == b["losses"] and a["values"] == b["values"]  # the Recorder's history too

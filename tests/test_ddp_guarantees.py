"""Guarantees 4 and 5 on 2 CPU processes (gloo): rank-consistent cancels, global values, no hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, run_script

CANCELS = """
import torch
from bridge import Callback, SGD
import bridge.exceptions as E
from tests.helpers import make_data, make_learner

# (exception, event, epoch, phase, iter): raised on rank 1 only
CASES = [
    ("CancelBatchException", "after_pred", 0, "train", 1),
    ("CancelBackwardException", "before_backward", 0, "train", 1),
    ("CancelStepException", "before_step", 0, "train", 1),
    ("CancelTrainException", "after_batch", 0, "train", 1),
    ("CancelValidException", "after_loss", 0, "valid", 0),
    ("CancelEpochException", "after_step", 0, "train", 0),
    ("CancelFitException", "after_loss", 1, "train", 2),
]

class Trace(Callback):
    order = 5
    def __init__(self, case, rank):
        self.case, self.rank, self.events, self.fired = case, rank, [], False
    def _rec(self, event):
        learn = self.learn
        phase = "train" if learn.training else "valid"
        self.events.append(event)
        exc, ev, epoch, ph, it = self.case
        if (self.rank == 1 and not self.fired and event == ev and learn.epoch == epoch and phase == ph
                and learn.iter == it):
            self.fired = True
            raise getattr(E, exc)()

from bridge.events import EVENT_NAMES
for e in EVENT_NAMES:
    if e != "after_create":
        setattr(Trace, e, (lambda e: lambda self: self._rec(e))(e))

import torch.distributed as dist
out = {}
for case in CASES:
    rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
    trace = Trace(case, rank)
    learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=32), cbs=[trace], opt_func=SGD, lr=0.1)
    learn.create_opt()
    steps = [0]
    learn.opt.register_step_post_hook(lambda *a: steps.__setitem__(0, steps[0] + 1))
    learn.fit(2, accelerator="cpu", devices=2, strategy="ddp")
    out[case[0]] = {
        "events": trace.events, "steps": steps[0], "epoch": learn.epoch, "fired": trace.fired,
        "weights": torch.cat([p.detach().flatten() for p in learn.model.parameters()]).tolist(),
    }
dump({"rank": dist.get_rank(), "cases": out})
"""


@pytest.mark.ddp
def test_cancel_on_one_rank_takes_effect_on_all(tmp_path: Path) -> None:
    from tests.fastai_reference import ReferenceLoop

    t0 = time.time()
    r0, r1 = run_script(CANCELS, tmp_path, timeout=240)
    assert time.time() - t0 < 240
    for name, c1 in r1["cases"].items():
        c0 = r0["cases"][name]
        assert c1["fired"] and not c0["fired"], name
        assert c0["weights"] == c1["weights"], name  # identical weights
        assert c0["steps"] == c1["steps"], name  # the same optimizer steps
        assert c0["epoch"] == c1["epoch"], name  # the same place reached
        level = {"CancelBatchException": "batch", "CancelBackwardException": "backward",
                 "CancelStepException": "step", "CancelTrainException": "train",
                 "CancelValidException": "validate", "CancelEpochException": "epoch",
                 "CancelFitException": "fit"}[name]  # fmt: skip
        assert f"after_cancel_{level}" in c0["events"], name  # the other rank got the matching event
    # the rank that raised sees fastai's exact trace (3 train / 1 valid batches per rank and epoch)
    import bridge.exceptions as E

    cases = [
        ("CancelBatchException", "after_pred", 0, "train", 1),
        ("CancelBackwardException", "before_backward", 0, "train", 1),
        ("CancelStepException", "before_step", 0, "train", 1),
        ("CancelTrainException", "after_batch", 0, "train", 1),
        ("CancelValidException", "after_loss", 0, "valid", 0),
        ("CancelEpochException", "after_step", 0, "train", 0),
        ("CancelFitException", "after_loss", 1, "train", 2),
    ]
    for exc, ev, epoch, phase, it in cases:
        events: list[str] = []
        fired = [False]

        def fire(loop: ReferenceLoop, e: str, exc=exc, ev=ev, epoch=epoch, phase=phase, it=it) -> None:
            events.append(e)
            ph = "train" if loop.training else "valid"
            if not fired[0] and e == ev and loop.epoch == epoch and ph == phase and loop.iter == it:
                fired[0] = True
                raise getattr(E, exc)()

        ReferenceLoop(fire, 2, 3, 1).fit()
        assert r1["cases"][exc]["events"] == events, exc


GLOBAL = """
import torch
from torch.nn import functional as F
from tests.helpers import make_data, make_learner, make_model
from torchmetrics.classification import MulticlassAccuracy
import torch.distributed as dist

def accuracy(pred, y): return (pred.argmax(-1) == y).float().mean()

# 75 validation items: 38 + 37 per rank, no padding repeats
data = make_data(n=128, n_valid=75, bs=16)
learn = make_learner(".", data=data, metrics=[accuracy, MulticlassAccuracy(num_classes=2, average="micro")])
learn.fit(1, accelerator="cpu", devices=2, strategy="ddp")
weights = {k: v.tolist() for k, v in learn.model.state_dict().items()}
vals = learn.validate(accelerator="cpu", devices=2, strategy="ddp") if False else None
learn.trainer_options.update(accelerator="cpu", devices=2, strategy="ddp")
vals = learn.validate()
preds, targs = learn.get_preds()
dump({"rank": dist.get_rank(), "weights": weights, "validate": vals, "record": learn.recorder.values[-1],
      "preds": preds.tolist(), "targs": targs.tolist()})
"""


@pytest.mark.ddp
def test_global_values_equal_single_process(tmp_path: Path) -> None:
    import torch
    from torch.nn import functional as F

    from tests.helpers import make_data, make_model

    r0, r1 = run_script(GLOBAL, tmp_path, timeout=240)
    assert r0["validate"] == r1["validate"] and r0["preds"] == r1["preds"]
    model = make_model()
    model.load_state_dict({k: torch.tensor(v) for k, v in r0["weights"].items()})
    x, y = make_data(n=128, n_valid=75, bs=16).valid_ds.tensors
    with torch.no_grad():
        pred = model.eval()(x)
    acc = (pred.argmax(-1) == y).float().mean().item()
    expected = [F.cross_entropy(pred, y).item(), acc, acc]
    assert r0["validate"] == pytest.approx(expected, abs=1e-6)
    assert r0["record"][1:] == pytest.approx(expected, abs=1e-6)  # the Recorder's epoch values too
    assert torch.allclose(torch.tensor(r0["preds"]), pred, atol=1e-6)  # whole set, dataset order, no padding
    assert torch.equal(torch.tensor(r0["targs"]), y)


FAIL = """
import os
from bridge import Callback
from tests.helpers import make_data, make_learner

class Boom(Callback):
    def after_batch(self):
        if self.learn.trainer.global_rank == 1 and self.train_iter == 3:
            raise ValueError("rank one exploded at batch 3")

if __name__ == "__main__":
    learn = make_learner(".", data=make_data(n=512, n_valid=64, bs=16), cbs=[Boom()])
    learn.fit(50, accelerator="cpu", devices=2, strategy=os.environ["STRATEGY"])
"""


@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_failure_on_one_rank_ends_the_job(tmp_path: Path, strategy: str) -> None:
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAIL))
    env = {"PYTHONPATH": str(REPO), "STRATEGY": strategy, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    elapsed = time.time() - t0
    assert proc.returncode != 0
    assert "rank one exploded at batch 3" in proc.stdout + proc.stderr
    assert elapsed < 60, elapsed


SPAWN = """
import os
import torch
import torch.distributed as dist
from callbacks import SaveModelCallback
from tests.helpers import make_data, make_learner

if __name__ == "__main__":
    learn = make_learner(".", data=make_data(n=128, n_valid=64, bs=16), cbs=[SaveModelCallback(fname="best")], lr=1e-2)
    from lightning.pytorch.callbacks import ModelCheckpoint
    steps = ModelCheckpoint(dirpath="steps", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    learn.fit(3, accelerator="cpu", devices=2, strategy="ddp_spawn", cbs=[steps])  # the callbacks pickle
    best = torch.load("models/best.pth", weights_only=True)
    step_files = sorted(os.listdir("steps"))
    values, save_best = learn.recorder.values, learn.save_model.best
    suggestion = learn.lr_find(num_it=12, show_plot=False, accelerator="cpu", devices=2, strategy="ddp_spawn")
    dump({
        "values": values,
        "lr_find_losses": len(learn.recorder.losses),
        "best_equal": all(torch.equal(best[k], v) for k, v in learn.model.state_dict().items()),
        "best_epoch_value": min(v[1] for v in values),
        "save_best": save_best,
        "valley": suggestion.valley if suggestion is not None else None,
        "step_files": step_files,
    }, rank=0)
"""


@pytest.mark.ddp
def test_ddp_spawn_returns_what_the_user_needs(tmp_path: Path) -> None:
    (r,) = run_script(SPAWN, tmp_path, timeout=240)
    assert len(r["values"]) == 3  # the Recorder's history came back to the calling process
    assert r["best_equal"]  # the best model is the one in memory
    assert r["values"][-1][1] == pytest.approx(r["best_epoch_value"])  # best at the last epoch here
    assert r["valley"] is not None and r["valley"] > 0
    assert r["lr_find_losses"] >= 6  # the lr finder's curve came back too
    # 128 items / 2 ranks / bs 16 = 4 steps per epoch: a save every 2 steps, the epoch's last one at its end
    assert r["step_files"] == [f"step={s}.ckpt" for s in (10, 12, 2, 4, 6, 8)]


RESUME = """
import os
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from bridge import Callback, CancelFitException
from tests.helpers import make_data, make_learner

DDP = dict(accelerator="cpu", devices=2, strategy="ddp")

class Seen(Callback):
    def __init__(self, stop=None): self.seen, self.stop = [], stop
    def before_batch(self):
        if self.training:
            if (self.epoch, self.iter) == self.stop:
                raise CancelFitException()  # both ranks: the run stops after epoch 1's batch 1
            self.seen.append([self.epoch, self.iter, self.xb[0][:, 1].tolist()])

def learner(path, cb):
    os.makedirs(path, exist_ok=True)
    return make_learner(path, data=make_data(n=192, n_valid=64, bs=16), cbs=[cb], lr=1e-2)

straight = learner("a", Seen())
straight.fit(3, **DDP)  # the default per-epoch checkpoint, written under DDP
default_ckpt = torch.load("a/checkpoints/last.ckpt", weights_only=True)

stopped = learner("b", Seen(stop=(1, 2)))
every_step = ModelCheckpoint(dirpath="b/checkpoints", filename="last", every_n_train_steps=1,
                             enable_version_counter=False)
stopped.fit(3, cbs=[every_step], **DDP)
dist.barrier()
resumed = learner("b", Seen())
resumed.fit(3, resume=True, **DDP)

weights = lambda learn: torch.cat([p.detach().flatten() for p in learn.model.parameters()]).tolist()
dump({
    "rank": dist.get_rank(),
    "default_ckpt_epoch": default_ckpt["epoch"],
    "straight_seen": straight.seen.seen, "resumed_seen": resumed.seen.seen,
    "straight_weights": weights(straight), "resumed_weights": weights(resumed),
    "straight_values": straight.recorder.values, "resumed_values": resumed.recorder.values,
    "files": sorted(os.listdir("b/checkpoints")),
})
"""


@pytest.mark.ddp
def test_checkpoint_and_mid_epoch_resume_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script(RESUME, tmp_path, timeout=240)
    for r in (r0, r1):
        assert r["default_ckpt_epoch"] == 2  # the default checkpoint is on under DDP, at each epoch end
        assert r["resumed_seen"][0][:2] == [1, 2]  # resumed with epoch 1's batch 2 ...
        start = r["straight_seen"].index(r["resumed_seen"][0])
        assert r["resumed_seen"] == r["straight_seen"][start:]  # ... and this rank's very shard from there
        assert r["resumed_weights"] == r["straight_weights"]  # bit-identical to the run never stopped
        assert r["resumed_values"] == r["straight_values"]
        assert r["files"] == ["last.ckpt"]  # one file, written whole (no temp debris)
    assert r0["resumed_seen"] != r1["resumed_seen"]  # each rank resumed its own shard
    assert r0["resumed_weights"] == r1["resumed_weights"]

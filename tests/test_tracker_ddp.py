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

SCRIPT = r"""
import math, warnings
import torch
import torch.distributed as dist
from torch import nn
import bridge.distributed as bd
from bridge import Callback
from callbacks import SaveModelCallback, EarlyStoppingCallback, CSVLogger, TerminateOnNaNCallback
from tests.helpers import make_learner

warnings.filterwarnings("ignore")
DDP = dict(accelerator="cpu", devices=2, strategy="ddp")
# Raw per-rank values of `score` (greater is better). Alone, rank 0 always improves and rank 1
# stops at epoch 1; their mean [1, 2, 1.25, 3] improves at epoch 1 and stops at epoch 2.
RAW = {0: [1.0, 4.0, 4.5, 5.0], 1: [1.0, 0.0, -2.0, 1.0]}
holder = {}

def score(pred, y):
    return torch.tensor(RAW[dist.get_rank()][holder["learn"].epoch])

writes = []
_save = torch.save
def counting_save(obj, f, *a, **k):
    writes.append(str(f))
    return _save(obj, f, *a, **k)
torch.save = counting_save

class EpochLog(Callback):
    order = 55
    def __init__(self): self.epochs, self.weights, self.cancelled = [], [], False
    def after_epoch(self):
        self.epochs.append(self.learn.epoch)
        self.weights.append(torch.cat([p.detach().flatten() for p in self.learn.model.parameters()]).tolist())
    def after_cancel_fit(self): self.cancelled = True

learn = make_learner(".", metrics=[score])
holder["learn"] = learn
log, es, sm = EpochLog(), EarlyStoppingCallback(monitor="score", patience=1), SaveModelCallback(monitor="score")
learn.fit(4, cbs=[es, sm, CSVLogger(), log], **DDP)
rank = dist.get_rank()
final = torch.cat([p.detach().flatten() for p in learn.model.parameters()]).tolist()
bd.barrier()
with open("history.csv") as f:
    csv_lines = f.read().splitlines()
result = dict(
    rank=rank, epochs=log.epochs, cancelled=log.cancelled, stopped=es.stopped_epoch, best=sm.best,
    values=learn.recorder.values, writes=[w for w in writes if "model" in w], final=final,
    epoch1=log.weights[1], epoch2=log.weights[2], csv=csv_lines,
)

# TerminateOnNaN: NaN loss on rank 1 only, epoch 0 iteration 1 (training).
class NaNOnRank1(nn.Module):
    def __init__(self):
        super().__init__()
        self.ce = nn.CrossEntropyLoss()
    def forward(self, pred, y):
        loss = self.ce(pred, y)
        l = holder["learn2"]
        if dist.get_rank() == 1 and (l.epoch, l.iter, l.training) == (0, 1, True):
            return loss * float("nan")
        return loss

learn2 = make_learner("nan", loss_func=NaNOnRank1())
holder["learn2"] = learn2
term, log2 = TerminateOnNaNCallback(), EpochLog()
learn2.fit(2, cbs=[term, log2], **DDP)
w2 = torch.cat([p.detach().flatten() for p in learn2.model.parameters()])
result.update(nan_stopped=list(term.stopped_at) if term.stopped_at else None, nan_epochs=log2.epochs,
              nan_cancelled=log2.cancelled, nan_finite=bool(torch.isfinite(w2).all()), nan_weights=w2.tolist(),
              nan_losses=len(learn2.recorder.losses))
dump(result)
"""


@pytest.mark.ddp
def test_trackers_and_loggers_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script(SCRIPT, tmp_path, timeout=300)
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

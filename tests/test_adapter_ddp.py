"""LightningAdapter on 2 CPU processes (gloo): events on both ranks, identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script

SCRIPT = """
import torch
import lightning.pytorch as pl
from torch.nn import functional as F
from bridge import Callback, LightningAdapter
from tests.dialect_samples import Recorder as CourseRecorder, V1EarlyStop
from tests.helpers import make_data
from tests.test_dialects import PlainModule

class Count(Callback):
    def __init__(self): self.batches, self.epochs = 0, 0
    def after_batch(self): self.batches += 1
    def after_epoch(self): self.epochs += 1

count, rec, stop = Count(), CourseRecorder(), V1EarlyStop(stop_epoch=1)
data = make_data(n=192, n_valid=64, bs=32)
adapter = LightningAdapter([count, rec, stop], loss_func=F.cross_entropy)
trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", callbacks=[adapter],
                     enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False)
module = PlainModule()
trainer.fit(module, data.train_dl, data.valid_dl)
dump({
    "rank": trainer.global_rank,
    "batches": count.batches, "epochs": count.epochs, "lrs": len(rec.lrs),
    "seen_metrics": stop.seen_metrics,
    "weights": torch.cat([p.detach().flatten() for p in module.parameters()]).tolist(),
})
"""


@pytest.mark.ddp
def test_adapter_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script(SCRIPT, tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    # 192 items / 2 ranks / bs 32 = 3 train batches + 1 valid batch per epoch; v1 stop after epoch 1
    for r in (r0, r1):
        assert r["epochs"] == 2 and r["batches"] == 2 * (3 + 1) and r["lrs"] == 6
    assert r0["seen_metrics"] == r1["seen_metrics"]  # the v1 callback saw global valid loss on both ranks
    assert r0["weights"] == r1["weights"]

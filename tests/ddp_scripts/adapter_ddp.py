"""``test_adapter_ddp``: ``LightningAdapter`` in a 2-rank ``pl.Trainer`` fit; per rank: counts, metrics, weights."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.nn import functional as F

from bridge import Callback, LightningAdapter
from callbacks import EarlyStoppingCallback, SaveModelCallback
from tests.adapter_modules import DictSteps
from tests.ddp_scripts._common import dump, flat_params, run
from tests.dialect_samples import Recorder as CourseRecorder
from tests.dialect_samples import V1EarlyStop
from tests.helpers import make_data
from tests.test_dialects import PlainModule


class Count(Callback):
    """Counts batches and epochs."""

    def __init__(self) -> None:
        self.batches, self.epochs = 0, 0

    def after_batch(self) -> None:
        self.batches += 1

    def after_epoch(self) -> None:
        self.epochs += 1


class EpochEnd(pl.Callback):
    """Plain Lightning: this rank's logged ``val_loss`` and weights at each training epoch end."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.weights: list[list[float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.values.append(float(trainer.callback_metrics["val_loss"]))
        self.weights.append(flat_params(pl_module))


def logged_monitor(data: Any) -> dict[str, Any]:
    """A module logging its own (unsynced, per-rank) val_loss: trackers decide on rank 0's value on every rank."""
    save, stop = (
        SaveModelCallback(monitor="val_loss", fname="best"),
        EarlyStoppingCallback("val_loss", min_delta=0.1, patience=1),
    )
    seen, module = EpochEnd(), DictSteps()
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", devices=2, strategy="ddp", default_root_dir=".",
                         callbacks=[LightningAdapter([save, stop]), seen], enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, data.train_dl, data.valid_dl)
    return {"values": seen.values, "epoch_weights": seen.weights, "stopped": stop.stopped_epoch,
            "best": save.best, "final": flat_params(module)}  # fmt: skip


def main(argv: list[str]) -> None:
    count, rec, stop = Count(), CourseRecorder(), V1EarlyStop(stop_epoch=1)
    data = make_data(n=192, n_valid=64, bs=32)
    adapter = LightningAdapter([count, rec, stop], loss_func=F.cross_entropy)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", callbacks=[adapter],
                         enable_progress_bar=False, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)  # fmt: skip
    module = PlainModule()
    trainer.fit(module, data.train_dl, data.valid_dl)
    dump(
        {
            "rank": trainer.global_rank,
            "batches": count.batches,
            "epochs": count.epochs,
            "lrs": len(rec.lrs),
            "seen_metrics": stop.seen_metrics,
            "weights": flat_params(module),
            "logged": logged_monitor(data),
        }
    )


if __name__ == "__main__":
    run(main)

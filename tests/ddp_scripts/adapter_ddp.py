"""``test_adapter_ddp``: ``LightningAdapter`` in a 2-rank ``pl.Trainer`` fit; per rank: counts, metrics, weights."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.nn import functional as F

from bridge import Callback, LightningAdapter
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
        }
    )


if __name__ == "__main__":
    run(main)

"""LightningAdapter on module shapes real projects use (issue 17 grows this file)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from bridge import Callback, DataBunch, LightningAdapter
from callbacks import MixUp


class NoValidationStep(pl.LightningModule):
    """A module with a training_step only, trained on a datamodule that has a validation loader."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_module_without_validation_step_and_a_loss_func(tmp_path: Any) -> None:
    class Seen(Callback):
        def before_fit(self) -> None:
            self.train = self.valid = 0

        def after_batch(self) -> None:
            if self.training:
                self.train += 1
            else:
                self.valid += 1

    torch.manual_seed(0)
    x = torch.randn(32, 2)
    ds = TensorDataset(x, (x[:, 0] > 0).long())
    seen = Seen()
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[LightningAdapter([MixUp(), seen], loss_func=F.cross_entropy)],
    )
    module = NoValidationStep()
    trainer.fit(module, datamodule=DataBunch.from_datasets(ds, ds, bs=8))
    assert (seen.train, seen.valid) == (8, 0)  # Lightning skips validation: the module has no step for it
    assert "validation_step" not in module.__dict__  # nothing left patched on the module

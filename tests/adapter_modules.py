"""LightningModules in the shapes real projects write them (Lightning's docs, tutorials and templates).

Each logs its own values with ``self.log`` and knows nothing of fastlight; the adapter tests
(tests/test_adapter_shapes.py, tests/test_adapter_files.py) run fastai callbacks on them.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tests.helpers import make_model


class LoggedMetrics(pl.LightningModule):
    """The template shape: torchmetrics in the module, ``validation_step`` logs and returns None, a plateau scheduler."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.net = make_model()
        self.lr = lr
        self.val_acc = MulticlassAccuracy(num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}


class DictSteps(pl.LightningModule):
    """Steps returning dicts: ``{"loss": ...}`` in training, ``{"val_loss": ...}`` in validation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "n": len(y)}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss)
        return {"val_loss": loss}

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class BatchOnly(pl.LightningModule):
    """``training_step(self, batch)`` / ``validation_step(self, batch)``: no ``batch_idx`` (Lightning allows it)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any) -> None:
        x, y = batch
        self.log("val/loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class SkipsBatches(pl.LightningModule):
    """``training_step`` returns None on odd batches: Lightning skips their backward and step."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch_idx % 2:
            return None
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoValLoaders(pl.LightningModule):
    """``validation_step(batch, batch_idx, dataloader_idx=0)`` over two validation loaders."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        self.seen.append(dataloader_idx)
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NaNValidation(LoggedMetrics):
    """Logs a NaN ``val_loss`` from epoch 1 on (a diverged run)."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss * math.nan if self.current_epoch >= 1 else loss)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def flat(module: nn.Module) -> torch.Tensor:
    """All parameters, flattened into one tensor (for bit-identical comparisons)."""
    return torch.cat([p.detach().flatten() for p in module.parameters()])

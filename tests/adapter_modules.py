"""LightningModules in the shapes real projects write them (Lightning's docs, tutorials and templates).

Each logs its own values with ``self.log`` and knows nothing of fastlight; the adapter tests
(tests/test_adapter_shapes.py, tests/test_adapter_monitor.py) run fastai callbacks on them.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
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


class ManualOne(pl.LightningModule):
    """Manual optimization, one optimizer (Lightning's docs shape); ``clip`` clips as Lightning's docs show."""

    def __init__(self, clip: float | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = make_model()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        if self.clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        opt.step()
        self.log("train_loss", loss, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class TinyGAN(pl.LightningModule):
    """Lightning's GAN tutorial shape: two optimizers, toggle/untoggle, manual_backward and step for each."""

    def __init__(self, latent: int = 4, n: int = 8, clip: float | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Linear(latent, 16), nn.ReLU(), nn.Linear(16, n))
        self.discriminator = nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, 1))
        self.latent, self.clip = latent, clip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def _backward_and_step(self, opt: Any, loss: torch.Tensor) -> None:
        self.manual_backward(loss)
        if self.clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad()

    def training_step(self, batch: Any) -> None:
        imgs, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(imgs.shape[0], self.latent).type_as(imgs)
        valid = torch.ones(imgs.size(0), 1).type_as(imgs)
        fake = torch.zeros(imgs.size(0), 1).type_as(imgs)

        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z)), valid)
        self.log("g_loss", g_loss, prog_bar=True)
        self._backward_and_step(opt_g, g_loss)
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(imgs), valid)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z).detach()), fake)
        d_loss = (real_loss + fake_loss) / 2
        self.log("d_loss", d_loss, prog_bar=True)
        self._backward_and_step(opt_d, d_loss)
        self.untoggle_optimizer(opt_d)

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
        return [opt_g, opt_d]


class NoForward(pl.LightningModule):
    """A module without ``forward``: its step calls the network directly."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class WorldSizeData(pl.LightningDataModule):
    """A datamodule that sizes its batches from ``self.trainer.world_size`` (a global batch of 32)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.trainer is not None
        return DataLoader(TensorDataset(self.x, self.y), batch_size=32 // self.trainer.world_size)


def flat(module: nn.Module) -> torch.Tensor:
    """All parameters, flattened into one tensor (for bit-identical comparisons)."""
    return torch.cat([p.detach().flatten() for p in module.parameters()])

"""Bring fastai-style callbacks into a Lightning project you already have, unchanged.

The first half of this file is an ordinary Lightning project: a ``LightningModule`` with
automatic optimization (its ``training_step`` calls ``self(x)``), plain ``DataLoader``s over
scikit-learn's bundled digits (no download) and a plain ``lightning.Trainer``. The only
fastlight line is the ``LightningAdapter`` in the Trainer's callbacks, which runs:

- ``MixUp(0.4)`` from fastlight's callback library (it rebinds the batch and the loss, which
  a Lightning callback cannot do),
- ``LossHistory``, a callback written for fastai v1 (keyword state, ``on_*`` names),
- ``LamTracker``, a callback written for fastai v2 (``self.learn``, ``after_batch``).

Run (CPU, a few seconds)::

    python examples/port_lightning_project.py
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from bridge import Callback, LightningAdapter
from callbacks import MixUp


# --------------------------------------------------------------------- an existing Lightning project
class DigitsClassifier(L.LightningModule):
    """A plain LightningModule: automatic optimization, ``self(x)`` in the steps."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def digits_loaders(bs: int = 64) -> tuple[DataLoader[Any], DataLoader[Any]]:
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0  # 64 pixels in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(42))
    tr, va = idx[:1500], idx[1500:]
    train = DataLoader(TensorDataset(x[tr], y[tr]), batch_size=bs, shuffle=True)
    valid = DataLoader(TensorDataset(x[va], y[va]), batch_size=bs)
    return train, valid


# ---------------------------------------------------------------- callbacks you already had, unchanged
class LossHistory:
    """Written for fastai v1: state arrives as keyword arguments; no base class needed."""

    def on_train_begin(self, **kwargs: Any) -> None:
        self.batch_losses: list[float] = []
        self.epochs: list[tuple[int, float, list[float]]] = []

    def on_epoch_begin(self, **kwargs: Any) -> None:
        self.batch_losses = []

    def on_batch_end(self, last_loss: Tensor, train: bool, **kwargs: Any) -> None:
        if train:
            self.batch_losses.append(float(last_loss))

    def on_epoch_end(self, epoch: int, last_metrics: list[float], **kwargs: Any) -> None:
        mean = sum(self.batch_losses) / max(len(self.batch_losses), 1)
        self.epochs.append((epoch, mean, list(last_metrics or [])))


class LamTracker(Callback):
    """Written for fastai v2: reads the MixUp callback through ``self.learn.mix_up``."""

    order = MixUp.order + 1

    def before_fit(self) -> None:
        self.lams: list[float] = []

    def after_batch(self) -> None:
        if self.learn.training and self.learn.mix_up.lam is not None:
            self.lams.append(float(self.learn.mix_up.lam.mean()))


def main() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU banner
    torch.manual_seed(0)  # also seeds MixUp's own generator

    history, lams = LossHistory(), LamTracker()
    adapter = LightningAdapter(
        [MixUp(0.4), history, lams],
        loss_func=nn.CrossEntropyLoss(),  # MixUp mixes the loss: the adapter computes it with this
    )
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[adapter],  # <- the one fastlight line
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train_dl, valid_dl = digits_loaders()
    trainer.fit(DigitsClassifier(), train_dl, valid_dl)

    print("fastai v1 callback (LossHistory): epoch, mean train loss (mixed), [valid_loss]")
    for epoch, mean, metrics in history.epochs:
        print(f"  epoch {epoch}: train {mean:.4f}  last_metrics {[round(m, 4) for m in metrics]}")
    print(
        f"fastai v2 callback (LamTracker): {len(lams.lams)} training batches mixed, "
        f"mean lam {sum(lams.lams) / len(lams.lams):.3f} (MixUp keeps lam >= 0.5)"
    )
    rec = adapter.learn.recorder  # the adapter adds fastai's Recorder, as a Learner does
    print(f"adapter's Recorder, last epoch: {dict(zip(rec.metric_names[1:], [round(v, 4) for v in rec.values[-1]]))}")
    print(f"Lightning's own metrics: val_acc {float(trainer.callback_metrics['val_acc']):.3f}")


if __name__ == "__main__":
    main()

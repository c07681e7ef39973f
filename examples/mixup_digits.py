"""MixUp or CutMix on sklearn's 8x8 digits with a tiny CNN (quiet, CPU, well under 30 s).

Run:
    python examples/mixup_digits.py            # MixUp(0.4)
    python examples/mixup_digits.py --cutmix   # CutMix(1.0)
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from bridge import DataBunch, Learner
from callbacks import CutMix, MixUp


def accuracy(pred: Tensor, y: Tensor) -> Tensor:
    return (pred.argmax(-1) == y).float().mean()


def digits(bs: int = 64) -> DataBunch:
    """The 1797 digits as 1x8x8 images in [0, 1]; 1400 to train, the rest to validate."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, va = idx[:1400], idx[1400:]
    return DataBunch.from_datasets(TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va]), bs=bs)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x4x4
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutmix", action="store_true", help="CutMix instead of MixUp")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # lightning 2.6 on torch 2.13

    torch.manual_seed(0)  # also seeds the mixing callback's own generator
    mix = CutMix(1.0) if args.cutmix else MixUp(0.4)
    learn = Learner(
        digits(), tiny_cnn(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=mix, lr=1e-2,
        path=tempfile.mkdtemp(), accelerator="cpu", logger=False, enable_progress_bar=False,
    )  # fmt: skip
    learn.fit(args.epochs)
    valid_loss, acc = learn.validate()
    print(f"{type(mix).__name__}: validation accuracy {acc:.3f} (loss {valid_loss:.3f}, clean data)")


if __name__ == "__main__":
    main()

"""sklearn's 8x8 digits as a small image classification task, and a Learner trained on it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from bridge import DataBunch, Learner
from tests.helpers import QUIET

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_data(n_train: int = 1400) -> tuple[DataBunch, Tensor, Tensor]:
    """Images (8 x 8, scaled to [0, 1]) and their classes; the training dataset carries ``classes``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:n_train], perm[n_train:]
    train_ds = TensorDataset(x[tr], y[tr])
    train_ds.classes = NAMES  # type: ignore[attr-defined]  # as torchvision datasets have
    return DataBunch.from_datasets(train_ds, TensorDataset(x[va], y[va]), bs=64), x[va], y[va]


def digits_learner(path: Path, epochs: int = 4) -> tuple[Learner, Tensor, Tensor]:
    """A small MLP trained on the digits; returns it with the validation images and classes."""
    data, xv, yv = digits_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), lr=1e-2, path=path, **QUIET)  # type: ignore[arg-type]
    learn.fit(epochs)
    return learn, xv, yv

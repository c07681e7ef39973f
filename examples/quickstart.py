"""fastlight quickstart: fastai's way of training, on Lightning's Trainer.

Trains a small network on scikit-learn's bundled handwritten digits (1797 8x8 images, no
download) with a fastai-style callback, saves the best model, and writes TensorBoard logs.

    python examples/quickstart.py
    tensorboard --logdir runs/quickstart/lightning_logs   # then open http://localhost:6006
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from bridge import Callback, CancelFitException, DataBunch, Learner


class StopAtAccuracy(Callback):
    """A fastai-style callback: stop training once validation accuracy reaches ``target``."""

    order = 70  # after the Recorder (50), which fills learn.final_record at after_epoch

    def __init__(self, target: float = 0.97) -> None:
        self.target = target

    def after_epoch(self) -> None:
        if self.learn.stage != "fit":  # learn.validate() fires after_epoch too, as in fastai
            return
        _train_loss, _valid_loss, accuracy = self.learn.final_record
        if accuracy >= self.target:
            print(f"accuracy {accuracy:.3f} >= {self.target} at epoch {self.epoch}: stopping")
            raise CancelFitException()


def digits_databunch(bs: int = 64) -> DataBunch:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # 64 pixels in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.long)
    g = torch.Generator().manual_seed(42)
    idx = torch.randperm(len(x), generator=g)
    train, valid = idx[:1500], idx[1500:]
    return DataBunch.from_datasets(TensorDataset(x[train], y[train]), TensorDataset(x[valid], y[valid]), bs=bs)


def main() -> None:
    torch.manual_seed(0)
    data = digits_databunch()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, data.c))
    learn = Learner(
        data,
        model,
        loss_func=nn.CrossEntropyLoss(),
        lr=3e-3,
        metrics=[MulticlassAccuracy(num_classes=data.c, average="micro")],
        cbs=[StopAtAccuracy(0.97)],
        path="runs/quickstart",
        enable_progress_bar=False,
    )
    learn.fit(10)
    path = learn.save("digits")  # runs/quickstart/models/digits.pth, written atomically
    valid_loss, accuracy = learn.validate()
    print(f"saved {path}; valid_loss {valid_loss:.4f}, accuracy {accuracy:.4f}")
    print(f"TensorBoard: tensorboard --logdir {learn.path / 'lightning_logs'}")


if __name__ == "__main__":
    main()

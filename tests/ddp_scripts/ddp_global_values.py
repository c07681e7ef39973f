"""``test_ddp_guarantees`` (global values): a 2-rank fit, validate and get_preds on 75 validation items."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torchmetrics.classification import MulticlassAccuracy

from callbacks import Recorder
from tests.ddp_scripts._common import dump, named_cb, run
from tests.helpers import make_data, make_learner


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def main(argv: list[str]) -> None:
    # 75 validation items: 38 + 37 per rank, no padding repeats
    data = make_data(n=128, n_valid=75, bs=16)
    learn = make_learner(".", data=data, metrics=[accuracy, MulticlassAccuracy(num_classes=2, average="micro")])
    learn.fit(1, accelerator="cpu", devices=2, strategy="ddp")
    weights = {k: v.tolist() for k, v in learn.model.state_dict().items()}
    record = named_cb(learn, "recorder", Recorder).values[-1]  # the fit's epoch (validate starts a new history)
    learn.trainer_options.update(accelerator="cpu", devices=2, strategy="ddp")
    vals = learn.validate()
    preds, targs = learn.get_preds()
    dump({"rank": dist.get_rank(), "weights": weights, "validate": vals,
          "record": record,
          "preds": preds.tolist(), "targs": targs.tolist()})  # fmt: skip


if __name__ == "__main__":
    run(main)

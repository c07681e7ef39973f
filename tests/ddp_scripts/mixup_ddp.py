"""``test_mixup_ddp``: MixUp in a 2-rank fit; per rank: the seed, every lambda drawn, weights, history."""

from __future__ import annotations

import torch

from bridge.distributed import global_rank
from callbacks import MixUp, Recorder
from tests.ddp_scripts._common import LamLog, dump, named_cb, run
from tests.helpers import make_data, make_learner


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    log = LamLog()
    learn = make_learner(".", data=make_data(n=512, bs=32), cbs=[MixUp(), log], metrics=accuracy, lr=3e-2)
    torch.manual_seed(0)  # the global seed both ranks share (make_model seeds too)
    learn.fit(4, accelerator="cpu", devices=2, strategy="ddp")
    dump(
        {
            "rank": global_rank(),
            "initial_seed": torch.initial_seed(),
            "lams": log.lams,
            "params": [p.detach().flatten().tolist() for p in learn.model.parameters()],
            "values": named_cb(learn, "recorder", Recorder).values,
        }
    )


if __name__ == "__main__":
    run(main)

"""``test_ddp_guarantees`` (resume): a 2-rank fit straight through, and one stopped mid-epoch then resumed."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint

from bridge import Callback, CancelFitException, Learner
from callbacks import Recorder
from tests.ddp_scripts._common import dump, flat_params, named_cb, run
from tests.helpers import make_data, make_learner

DDP: dict[str, Any] = dict(accelerator="cpu", devices=2, strategy="ddp")


class Seen(Callback):
    """Records (epoch, iter, a column of xb) of each training batch; cancels the fit at ``stop``."""

    def __init__(self, stop: tuple[int, int] | None = None) -> None:
        self.seen: list[list[Any]] = []
        self.stop = stop

    def before_batch(self) -> None:
        if self.training:
            if (self.epoch, self.iter) == self.stop:
                raise CancelFitException()  # both ranks: the run stops after epoch 1's batch 1
            self.seen.append([self.epoch, self.iter, self.xb[0][:, 1].tolist()])


def learner(path: str, cb: Seen) -> Learner:
    os.makedirs(path, exist_ok=True)
    return make_learner(path, data=make_data(n=192, n_valid=64, bs=16), cbs=[cb], lr=1e-2)


def main(argv: list[str]) -> None:
    straight = learner("a", Seen())
    straight.fit(3, **DDP)  # the default per-epoch checkpoint, written under DDP
    default_ckpt = torch.load("a/checkpoints/last.ckpt", weights_only=True)

    stopped = learner("b", Seen(stop=(1, 2)))
    every_step = ModelCheckpoint(dirpath="b/checkpoints", filename="last", every_n_train_steps=1,
                                 enable_version_counter=False)  # fmt: skip
    stopped.fit(3, cbs=[every_step], **DDP)
    dist.barrier()
    resumed = learner("b", Seen())
    resumed.fit(3, resume=True, **DDP)

    dump({
        "rank": dist.get_rank(),
        "default_ckpt_epoch": default_ckpt["epoch"],
        "straight_seen": named_cb(straight, "seen", Seen).seen, "resumed_seen": named_cb(resumed, "seen", Seen).seen,
        "straight_weights": flat_params(straight.model), "resumed_weights": flat_params(resumed.model),
        "straight_values": named_cb(straight, "recorder", Recorder).values,
        "resumed_values": named_cb(resumed, "recorder", Recorder).values,
        "files": sorted(os.listdir("b/checkpoints")),
    })  # fmt: skip


if __name__ == "__main__":
    run(main)

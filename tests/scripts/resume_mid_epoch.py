"""``test_resume``: a 3-epoch one-cycle fit checkpointing every step, in mode ARGV[0]: ``full``, ``crash``, ``resume``.

``crash`` SIGKILLs the process before epoch 1's training batch 3. Writes ``result_{mode}.json``: the weights,
which items each trained batch held, and the Recorder's lrs, losses and values.
"""

from __future__ import annotations

import json
import os
import signal

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from bridge import Callback
from callbacks import Recorder
from tests.ddp_scripts._common import named_cb, run
from tests.helpers import make_data, make_learner


class Batches(Callback):
    """Which items each trained batch held; in mode ``crash``, SIGKILLs the run before epoch 1's batch 3."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seen: list[list[object]] = []

    def before_batch(self) -> None:
        if self.training:
            if self.mode == "crash" and self.epoch == 1 and self.iter == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            self.seen.append([self.epoch, self.iter, self.xb[0][:, 1].tolist()])


def main(argv: list[str]) -> None:
    mode = argv[0]
    torch.manual_seed(0)
    data = make_data(n=192, n_valid=64, bs=16)  # 12 shuffled training batches per epoch
    learn = make_learner(".", data=data, lr=3e-3, cbs=[Batches(mode)])
    ckpt = ModelCheckpoint(
        dirpath=str(learn.checkpoint_dir), filename="last", every_n_train_steps=1, enable_version_counter=False
    )
    if mode == "resume":
        learn.fit_one_cycle(3, lr_max=1e-2, resume=True)
    else:
        learn.fit_one_cycle(3, lr_max=1e-2, cbs=[ckpt])
    recorder = named_cb(learn, "recorder", Recorder)
    result = {
        "weights": {k: v.tolist() for k, v in learn.model.state_dict().items()},
        "seen": named_cb(learn, "batches", Batches).seen,
        "lrs": recorder.lrs,
        "losses": recorder.losses,
        "values": recorder.values,
    }
    with open(f"result_{mode}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    run(main)

"""``test_resume``: a 4-epoch one-cycle fit in mode ARGV[0]: ``full``, ``crash`` (SIGKILL before epoch 2) or ``resume``.

Writes ``result_{mode}.json``: the weights, the Recorder's values and lrs, and SaveModelCallback's best.
"""

from __future__ import annotations

import json
import os
import signal

import torch

from bridge import Callback
from callbacks import EarlyStoppingCallback, Recorder, SaveModelCallback
from tests.ddp_scripts._common import named_cb, run
from tests.helpers import make_data, make_learner


class KillAt(Callback):
    """SIGKILLs this process before epoch 2."""

    def before_epoch(self) -> None:
        if self.epoch == 2:  # epochs 0 and 1 are done and checkpointed
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    mode = argv[0]
    torch.manual_seed(0)
    data = make_data(n=192, n_valid=64, bs=16)  # shuffled training batches
    cbs = [SaveModelCallback(fname="best"), EarlyStoppingCallback(patience=3)]
    learn = make_learner(".", data=data, cbs=cbs, lr=3e-3)
    if mode == "crash":
        learn.fit_one_cycle(4, lr_max=1e-2, cbs=[KillAt()])
    else:
        learn.fit_one_cycle(4, lr_max=1e-2, resume=(mode == "resume"))
    recorder = named_cb(learn, "recorder", Recorder)
    result = {
        "weights": {k: v.tolist() for k, v in learn.model.state_dict().items()},
        "values": recorder.values,
        "lrs": recorder.lrs,
        "best": named_cb(learn, "save_model", SaveModelCallback).best,
    }
    with open(f"result_{mode}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    run(main)

"""``test_interrupt``: SIGINT (Ctrl-C) at epoch 1's batch 2 of a 3-epoch fit, then ``fit(3, resume=True)``.

Writes ``result_rank0.json``: what was raised, the events, whether the SIGINT handler came back, the
history, the checkpoint's epoch and TensorBoard's valid_loss, then the history and events after the resume.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bridge import Callback
from callbacks import Recorder
from tests.ddp_scripts._common import dump, named_cb, run
from tests.helpers import make_data, make_learner


class CtrlC(Callback):
    """Sends this process SIGINT once, before epoch 1's training batch 2; records after_epoch / after_fit."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.armed = True

    def before_batch(self) -> None:
        if self.armed and self.training and self.epoch == 1 and self.iter == 2:
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends

    def after_fit(self) -> None:
        self.events.append("after_fit")

    def after_epoch(self) -> None:
        self.events.append(f"after_epoch {self.epoch}")


def main(argv: list[str]) -> None:
    handler = signal.getsignal(signal.SIGINT)
    ctrl_c = CtrlC()
    learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=16), cbs=[ctrl_c], logger=True)
    out: dict[str, Any] = {}
    try:
        learn.fit(3)
        out["raised"] = None
    except KeyboardInterrupt:
        out["raised"] = "KeyboardInterrupt"
    out["events"] = list(ctrl_c.events)
    out["handler_restored"] = signal.getsignal(signal.SIGINT) is handler
    out["values"] = named_cb(learn, "recorder", Recorder).values
    ckpt = torch.load("checkpoints/last.ckpt", weights_only=True)
    out["ckpt_epoch"] = ckpt["epoch"]
    logs = [str(p.parent) for p in Path(".").rglob("events.out.tfevents.*")]
    acc = EventAccumulator(logs[0])
    acc.Reload()
    out["tb_valid"] = [e.value for e in acc.Scalars("valid_loss")]
    learn.fit(3, resume=True)  # the same learner, in the same process, carries on
    out["after_resume"] = named_cb(learn, "recorder", Recorder).values
    out["events_after"] = list(ctrl_c.events)
    dump(out)


if __name__ == "__main__":
    run(main)

"""``test_fsdp``'s killed run: the 3-epoch FSDP2 fit of ``fsdp_checks`` ("straight"), SIGKILLed by the test in epoch 2.

Both ranks stop after batch 1 of epoch 2 and wait; rank 0 first writes ``killed_at.json``
(atomically). By then the epoch-1 sharded checkpoint (``killed/checkpoints/last.ckpt/``) is
complete: Lightning writes it after epoch 1's ``after_epoch``, every rank joins its write, and
epoch 2 has run two steps since. The test then kills the whole process group with SIGKILL (no
``after_fit``, no exit handlers) and ``fsdp_checks.py killed`` resumes the run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch.distributed as dist

from bridge import Callback
from tests.ddp_scripts._common import run
from tests.ddp_scripts.fsdp_checks import learner, strategy

MARKER = "killed_at.json"
#: How long the stopped ranks wait for the kill; then they exit on their own, never training on.
WAIT_S = 120.0


class StopAndWait(Callback):
    """After training batch 1 of epoch 2: rank 0 writes the marker, then every rank waits to be killed."""

    def after_batch(self) -> None:
        if not (self.training and self.epoch == 2 and self.iter == 1):
            return
        if dist.get_rank() == 0:
            state = {"epoch": self.epoch, "iter": self.iter, "train_iter": self.train_iter, "pid": os.getpid()}
            with open(MARKER + ".tmp", "w") as f:
                json.dump(state, f)
            os.replace(MARKER + ".tmp", MARKER)
        time.sleep(WAIT_S)
        os._exit(3)  # not killed: give up without writing anything more


def main(argv: list[str]) -> None:
    opts: dict[str, Any] = {"accelerator": "cpu", "devices": 2, "enable_checkpointing": True}
    learner(path="killed").fit(3, strategy=strategy("fsdp"), cbs=StopAndWait(), **opts)
    raise SystemExit("fsdp_killed: the fit ended; it should have been killed in epoch 2")


if __name__ == "__main__":
    run(main)

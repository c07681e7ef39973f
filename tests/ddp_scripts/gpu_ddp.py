"""``tests/gpu/checks.check_ddp``: ``ddp`` on N devices, plain and with a CancelBatch on rank 1 only.

Usage: ``python gpu_ddp.py ACCELERATOR N_DEVICES`` (``gpu`` for the real check, ``cpu`` to exercise it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from bridge import SGD, Callback, CancelBatchException
from tests.ddp_scripts._common import dump, run, trainer_of
from tests.helpers import make_data, make_learner


class CancelOnRank1(Callback):
    """Cancels training batch 1 of the first epoch on rank 1 only; records the cancel events."""

    order = 5

    def __init__(self) -> None:
        self.events: list[str] = []
        self.fired = False

    def after_pred(self) -> None:
        if dist.get_rank() == 1 and self.training and self.train_iter == 1 and not self.fired:
            self.fired = True
            raise CancelBatchException()

    def after_cancel_batch(self) -> None:
        self.events.append("after_cancel_batch")


def main(argv: list[str]) -> None:
    acc, n = argv[0], int(argv[1])
    out: dict[str, Any] = {"rank": None}
    for name, cbs in (("plain", []), ("cancel", [CancelOnRank1()])):
        # 3 training batches of 32 per rank and epoch, on any number of devices
        learn = make_learner(".", data=make_data(n=96 * n, n_valid=32 * n, bs=32), cbs=cbs, opt_func=SGD, lr=0.1)
        steps = [0]

        def count_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            steps[0] += 1

        learn.create_opt().register_step_post_hook(count_step)
        learn.fit(2, accelerator=acc, devices=n, strategy="ddp")
        out["rank"] = dist.get_rank()
        out[name] = {
            "steps": steps[0],
            "weights": torch.cat([p.detach().cpu().flatten() for p in learn.model.parameters()]).tolist(),
            "fired": cbs[0].fired if cbs else False,
            "cancel_events": cbs[0].events if cbs else [],
            "device": str(trainer_of(learn).strategy.root_device),
        }
    dump(out)


if __name__ == "__main__":
    run(main)

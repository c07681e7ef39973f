"""``test_multinode``: one "node" of a 2-node job (``num_nodes=2, devices=1``), started by ``torchrun``.

The test starts two of these on 127.0.0.1: ``torchrun --nnodes 2 --node-rank R --nproc-per-node 1
--master-addr 127.0.0.1 --master-port P tests/ddp_scripts/multinode.py``. Lightning finds
torchrun's environment (``TorchElasticEnvironment``) and launches nothing itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import bridge
from bridge import SGD, Callback
from tests.ddp_scripts._common import dump, flat_params, run
from tests.helpers import make_data, make_learner

WRITES: list[str] = []


class CancelOnRank1(Callback):
    """Raise ``exc`` on global rank 1 only, once, at ``event`` of the first epoch's training batch ``it``."""

    order = 5

    def __init__(self, exc: str, event: str, it: int) -> None:
        self.exc, self.event, self.it, self.fired = exc, event, it, False
        self.steps = 0

    def _maybe(self, event: str) -> None:
        if (dist.get_rank() == 1 and not self.fired and event == self.event and self.training
                and self.iter == self.it and self.epoch == 0):  # fmt: skip
            self.fired = True
            raise getattr(bridge, self.exc)()

    def before_batch(self) -> None:
        self._maybe("before_batch")

    def after_step(self) -> None:
        self.steps += 1
        self._maybe("after_step")


def main(argv: list[str]) -> None:
    real_save = torch.save

    def counting_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        WRITES.append(Path(str(f)).name)
        real_save(obj, f, *args, **kwargs)

    torch.save = counting_save
    opts: dict[str, Any] = {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp"}
    out: dict[str, Any] = {"cancels": {}}
    for case in [("CancelBatchException", "before_batch", 1), ("CancelEpochException", "after_step", 0)]:
        learn = make_learner(".", data=make_data(n=256, n_valid=64, bs=32), opt_func=SGD, lr=0.2)
        cancel = CancelOnRank1(*case)
        learn.fit(2, cbs=cancel, **opts)
        out["cancels"][case[0]] = {"fired": cancel.fired, "steps": cancel.steps, "weights": flat_params(learn.model)}
    print("SAVED", learn.save("multinode"), flush=True)
    learn.trainer_options.update(opts)
    preds, targs = learn.get_preds()
    out["preds"], out["targs"] = preds.tolist(), targs.tolist()
    out["writes"] = [name for name in WRITES if ".pth" in name]
    out["rank"], out["world"] = dist.get_rank(), dist.get_world_size()
    dump(out)


if __name__ == "__main__":
    run(main)

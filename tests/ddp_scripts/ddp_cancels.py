"""``test_ddp_guarantees`` (cancels): each cancel exception raised on rank 1 only, one 2-rank fit per case."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

import bridge
from bridge import SGD, Callback
from bridge.events import EVENT_NAMES
from tests.ddp_scripts._common import dump, flat_params, run
from tests.helpers import make_data, make_learner

# (exception, event, epoch, phase, iter): raised on rank 1 only
Case = tuple[str, str, int, str, int]
CASES: list[Case] = [
    ("CancelBatchException", "after_pred", 0, "train", 1),
    ("CancelBackwardException", "before_backward", 0, "train", 1),
    ("CancelStepException", "before_step", 0, "train", 1),
    ("CancelTrainException", "after_batch", 0, "train", 1),
    ("CancelValidException", "after_loss", 0, "valid", 0),
    ("CancelEpochException", "after_step", 0, "train", 0),
    ("CancelFitException", "after_loss", 1, "train", 2),
]


class Trace(Callback):
    """Records every event; on rank 1 raises the case's exception once, at the case's place."""

    order = 5

    def __init__(self, case: Case, rank: int) -> None:
        self.case, self.rank, self.fired = case, rank, False
        self.events: list[str] = []

    def _rec(self, event: str) -> None:
        phase = "train" if self.training else "valid"
        self.events.append(event)
        exc, ev, epoch, ph, it = self.case
        if (self.rank == 1 and not self.fired and event == ev and self.epoch == epoch and phase == ph
                and self.iter == it):  # fmt: skip
            self.fired = True
            raise getattr(bridge, exc)()


def _recorder(event: str) -> Callable[[Trace], None]:
    def record(self: Trace) -> None:
        self._rec(event)

    return record


for _event in EVENT_NAMES:
    if _event != "after_create":
        setattr(Trace, _event, _recorder(_event))


def main(argv: list[str]) -> None:
    out: dict[str, Any] = {}
    for case in CASES:
        rank = int(os.environ.get("LOCAL_RANK", 0))
        trace = Trace(case, rank)
        learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=32), cbs=[trace], opt_func=SGD, lr=0.1)
        steps = [0]

        def count_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            steps[0] += 1

        learn.create_opt().register_step_post_hook(count_step)
        learn.fit(2, accelerator="cpu", devices=2, strategy="ddp")
        out[case[0]] = {
            "events": trace.events, "steps": steps[0], "epoch": learn.epoch, "fired": trace.fired,
            "weights": flat_params(learn.model),
        }  # fmt: skip
    dump({"rank": dist.get_rank(), "cases": out})


if __name__ == "__main__":
    run(main)

"""``test_ddp_guarantees`` (failure): rank 1 raises at batch 3 of a long fit; the job must end, not hang.

Usage: ``python ddp_fail.py STRATEGY`` (``ddp`` or ``ddp_spawn``). Exits non-zero by design.
"""

from __future__ import annotations

import sys

from bridge import Callback
from tests.helpers import make_data, make_learner


class Boom(Callback):
    """Raises on global rank 1 after its training batch 3."""

    def after_batch(self) -> None:
        if self.trainer.global_rank == 1 and self.train_iter == 3:
            raise ValueError("rank one exploded at batch 3")


def main(argv: list[str]) -> None:
    (strategy,) = argv
    learn = make_learner(".", data=make_data(n=512, n_valid=64, bs=16), cbs=[Boom()])
    learn.fit(50, accelerator="cpu", devices=2, strategy=strategy)


if __name__ == "__main__":
    main(sys.argv[1:])

"""``test_ddp_smoke``: a 2-rank fit of 2 epochs with every event traced; per rank: events, weights, history.

Then, in the same launch, a fit with the article's (seed) callbacks deciding on one rank only:
rank 1 refuses its second batch (``begin_batch`` -> False), rank 0 sets ``learn.stop`` after its
third step; both decisions must take effect on both ranks alike. And a fit with fastai 2.8's own
callbacks (ParamScheduler, EarlyStoppingCallback) and fastai's CancelBatchException raised on
rank 1 only: schedules, the stop and the cancel decide alike on both ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge import Callback, fit
from bridge.events import EVENT_NAMES
from callbacks import Recorder
from tests.ddp_scripts._common import dump, flat_params, named_cb, run, trainer_of
from tests.helpers import make_data, make_learner


class Trace(Callback):
    """Appends the name of every event it receives."""

    def __init__(self) -> None:
        self.events: list[str] = []


def _recorder(event: str) -> Callable[[Trace], None]:
    def record(self: Trace) -> None:
        self.events.append(event)

    return record


for _event in EVENT_NAMES:
    if _event != "after_create":
        setattr(Trace, _event, _recorder(_event))


class RankValue(Callback):
    """Logs a value that differs by rank: log_epoch averages it over the ranks, as self.log(sync_dist=True)."""

    def after_epoch(self) -> None:
        self.learn.log_epoch({}, extra={"rank_mean": float(self.learn.trainer.global_rank)})


class SeedDecides:
    """One of the article's callbacks (``begin_fit(learn)``, truthy returns to go on), rank-dependent."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def begin_fit(self, learn: Any) -> bool:
        self.learn, self.steps, self.batches, self.valid, self.in_valid = learn, 0, 0, 0, False
        return True

    def begin_validate(self) -> bool:
        self.in_valid = True
        return True

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        if self.in_valid:
            self.valid += 1
            return True
        self.batches += 1
        return not (self.rank == 1 and self.batches == 2)

    def after_step(self) -> bool:
        self.steps += 1
        if self.rank == 0 and self.steps == 3:
            self.learn.stop = True
        return True


def fastai_fit(rank: int) -> dict[str, Any]:
    """fastai's own callbacks under DDP (imported from the installed fastai package)."""
    from fastai.callback.core import Callback as FastaiCallback
    from fastai.callback.core import CancelBatchException
    from fastai.callback.schedule import ParamScheduler, SchedLin
    from fastai.callback.tracker import EarlyStoppingCallback

    class CancelOnRank1(FastaiCallback):  # type: ignore[misc]  # fastai is untyped
        def before_fit(self) -> None:
            self.steps = 0

        def after_pred(self) -> None:
            if self.training and rank == 1 and self.iter == 1:
                raise CancelBatchException()

        def after_step(self) -> None:
            self.steps += 1

    class Lrs(FastaiCallback):  # type: ignore[misc]
        order = 60

        def before_fit(self) -> None:
            self.lrs: list[float] = []
            self.epochs = 0

        def after_batch(self) -> None:
            if self.training:
                self.lrs.append(float(self.learn.opt.hypers[0]["lr"]))

        def after_epoch(self) -> None:
            self.epochs += 1

    cancel, lrs = CancelOnRank1(), Lrs()
    ddp = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    learn = make_learner(".", data=make_data(n=384, n_valid=64, bs=32), lr=1e-2, **ddp)
    sched = ParamScheduler({"lr": SchedLin(1e-2, 1e-3)})
    learn.fit(6, cbs=[sched, EarlyStoppingCallback(patience=0, min_delta=10.0), cancel, lrs])
    return {"steps": cancel.steps, "lrs": lrs.lrs, "epochs": lrs.epochs, "weights": flat_params(learn.model)}


def main(argv: list[str]) -> None:
    trace = Trace()
    learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=32), cbs=[trace, RankValue()], lr=1e-2)
    learn.fit(2, accelerator="cpu", devices=2, strategy="ddp")
    recorder = named_cb(learn, "recorder", Recorder)
    rank = trainer_of(learn).global_rank
    # What Lightning's monitoring callbacks read (no all-reduce of them: the Recorder's values are global).
    monitored = {name: float(v) for name, v in trainer_of(learn).callback_metrics.items()}
    seed = SeedDecides(rank)
    ddp = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    seed_learn = make_learner(".", data=make_data(n=384, n_valid=64, bs=32), lr=1e-2, **ddp)
    fit(1, seed_learn, cb=[seed])
    dump(
        {
            "events": trace.events,
            "weights": flat_params(learn.model),
            "values": recorder.values,
            "losses": recorder.losses,
            "callback_metrics": monitored,
            "world": trainer_of(learn).world_size,
            "rank": rank,
            "seed": {"steps": seed.steps, "batches": seed.batches, "valid": seed.valid},
            "seed_weights": flat_params(seed_learn.model),
            "fastai": fastai_fit(rank),
        }
    )


if __name__ == "__main__":
    run(main)

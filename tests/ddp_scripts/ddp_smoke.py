"""``test_ddp_smoke``: a 2-rank fit of 2 epochs with every event traced; per rank: events, weights, history."""

from __future__ import annotations

from collections.abc import Callable

from bridge import Callback
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


def main(argv: list[str]) -> None:
    trace = Trace()
    learn = make_learner(".", data=make_data(n=192, n_valid=64, bs=32), cbs=[trace], lr=1e-2)
    learn.fit(2, accelerator="cpu", devices=2, strategy="ddp")
    recorder = named_cb(learn, "recorder", Recorder)
    dump(
        {
            "events": trace.events,
            "weights": flat_params(learn.model),
            "values": recorder.values,
            "losses": recorder.losses,
            "world": trainer_of(learn).world_size,
            "rank": trainer_of(learn).global_rank,
        }
    )


if __name__ == "__main__":
    run(main)

"""ResumableDataLoader details: worker processes, a restored position no pass used, plain resume semantics."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from bridge import Callback, CancelFitException, ResumableDataLoader
from tests.helpers import make_data, make_learner


class Seen(Callback):
    def __init__(self, stop: tuple[int, int] | None = None) -> None:
        self.seen: list[list[Any]] = []
        self.stop = stop

    def before_batch(self) -> None:
        if self.training:
            if (self.epoch, self.iter) == self.stop:
                raise CancelFitException()
            self.seen.append([self.epoch, self.iter, self.xb[0][:, 1].tolist()])


def _learner(path: Path, cb: Seen, workers: int) -> Any:
    data = make_data(n=96, n_valid=32, bs=16, num_workers=workers)  # 6 shuffled batches per epoch
    return make_learner(path, data=data, cbs=[cb], lr=1e-2)


def test_mid_epoch_resume_with_worker_processes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    straight = _learner(tmp_path / "a", Seen(), workers=2)
    straight.fit(3)
    torch.manual_seed(0)
    stopped = _learner(tmp_path / "b", Seen(stop=(1, 2)), workers=2)
    every_step = ModelCheckpoint(
        dirpath=str(stopped.checkpoint_dir), filename="last", every_n_train_steps=1, enable_version_counter=False
    )
    stopped.fit(3, cbs=[every_step])
    torch.manual_seed(123)  # the resumed process's own seed does not matter: the checkpoint's RNG does
    resumed = _learner(tmp_path / "b", Seen(), workers=2)
    resumed.fit(3, resume=True)
    a, b = straight.seen.seen, resumed.seen.seen
    assert b[0][:2] == [1, 2] and b == a[a.index(b[0]) :]  # the next unseen batch, then the same order
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)  # bit-identical with persistent workers too
    assert straight.recorder.values == resumed.recorder.values


def test_a_restored_position_no_pass_used_does_not_shorten_the_next_fit(tmp_path: Path) -> None:
    seen = Seen()
    learn = _learner(tmp_path, seen, workers=0)
    dl = learn.dls.train_dl
    assert isinstance(dl, ResumableDataLoader)
    dl.load_state_dict({"served": 4, "rng": torch.get_rng_state(), "rng_iter": torch.get_rng_state()})
    learn.fit(1)  # a fresh fit (not a resume): the whole epoch
    assert [s[1] for s in seen.seen] == list(range(6))


def test_position_survives_state_dict_round_trip() -> None:
    ds = torch.utils.data.TensorDataset(torch.arange(10))
    torch.manual_seed(0)
    dl = ResumableDataLoader(ds, batch_size=2, shuffle=True)
    it = iter(dl)
    first = [next(it)[0].tolist() for _ in range(2)]
    state = dl.state_dict()
    rest = [b[0].tolist() for b in it]
    again = ResumableDataLoader(ds, batch_size=2, shuffle=True)
    torch.manual_seed(99)  # the global RNG has moved on: the replay uses the saved state
    again.load_state_dict(state)
    assert state["served"] == 2 and [b[0].tolist() for b in again] == rest
    assert sorted(itertools.chain(*first, *rest)) == list(range(10))  # one pass: every item once

"""No device->host sync per batch in the default ``Learner.fit`` path (issue 8).

A read of a tensor's value on the host (``.item()``, ``.tolist()``, ``float(t)``,
``bool(t)``, ``int(t)``, ``.numpy()``, ``.cpu()``) waits for the device. On a CPU box the
wait is free, so these tests count the calls instead: every such method of
``torch.Tensor`` is wrapped and each call is attributed to the frame that made it. The
Recorder keeps the loss on the device and reads it back once per ``log_every_n_steps``
batches and at the end of each training phase; the validation loss and metrics are read
once per epoch. So the number of reads must not depend on the number of batches.

torch's own optimizers read their CPU ``step`` counter with ``.item()`` every step (a
host tensor even on CUDA, so not a sync); calls made from ``torch/optim`` are left out.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO, make_data, make_learner

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")
OURS = (str(REPO / "bridge") + "/", str(REPO / "callbacks") + "/")
OPTIM = str(Path(torch.optim.__file__).parent) + "/"


class ReadCounter:
    """Counts host reads of tensors, split into ours (bridge/, callbacks/) and everyone's."""

    def __init__(self) -> None:
        self.ours: Counter[tuple[str, str, int]] = Counter()
        self.others: Counter[tuple[str, str, int]] = Counter()

    def wrap(self, name: str, fn: Any) -> Any:
        def counted(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            code = sys._getframe(1).f_code
            where = (name, code.co_filename, sys._getframe(1).f_lineno)
            if code.co_filename.startswith(OURS):
                self.ours[where] += 1
            elif not code.co_filename.startswith(OPTIM):
                self.others[where] += 1
            return fn(t, *args, **kwargs)

        return counted

    @property
    def n_ours(self) -> int:
        return sum(self.ours.values())

    @property
    def n_all(self) -> int:
        return self.n_ours + sum(self.others.values())


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``count_reads(fit)`` runs ``fit()`` with every host read of a tensor counted."""

    def run(fit: Any) -> ReadCounter:
        counter = ReadCounter()
        with monkeypatch.context() as m:
            for name in READS:
                m.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
            fit()
        return counter

    yield run


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def _fit(tmp_path: Path, n_batches: int, every: int, n_epoch: int, count_reads: Any, **kw: Any) -> Any:
    bs = 8
    data = make_data(n=n_batches * bs, n_valid=n_batches * bs, bs=bs)
    learn = make_learner(tmp_path, data=data, metrics=[accuracy], log_every_n_steps=every, **kw)
    counter = count_reads(lambda: learn.fit(n_epoch))
    assert len(learn.recorder.losses) == n_batches * n_epoch  # every loss was read back, in batches
    return counter


def _show(counter: ReadCounter) -> str:
    return "\n".join(f"{n}x {name} at {file}:{line}" for (name, file, line), n in counter.ours.most_common())


@pytest.mark.parametrize("logger", [False, True], ids=["no_logger", "tensorboard"])
def test_reads_do_not_grow_with_batches(tmp_path: Path, count_reads: Any, logger: bool) -> None:
    # log_every_n_steps above the epoch length: the Recorder flushes only at the end of each
    # training phase, so a 5-batch and a 30-batch fit must read tensors equally often.
    n_epoch, n_metrics = 2, 1
    short = _fit(tmp_path / "short", 5, 1000, n_epoch, count_reads, logger=logger)
    long = _fit(tmp_path / "long", 30, 1000, n_epoch, count_reads, logger=logger)
    assert long.n_ours == short.n_ours, "the bridge reads tensors per batch:\n" + _show(long)
    # Per epoch: one flush of the train losses, one read of [valid_loss, *metrics].
    assert long.n_ours <= n_epoch * (1 + 1 + n_metrics), _show(long)
    # Nothing else in the default path (Lightning included) reads per batch either.
    assert long.n_all == short.n_all, sorted((long.others - short.others).items())


def test_one_read_per_flush(tmp_path: Path, count_reads: Any) -> None:
    # Flushes every 4 batches: 8 batches -> 2 flushes, 24 batches -> 6 flushes.
    every = 4
    few = _fit(tmp_path / "few", 8, every, 1, count_reads)
    many = _fit(tmp_path / "many", 24, every, 1, count_reads)
    extra_flushes = (24 - 8) // every
    assert 0 < many.n_ours - few.n_ours <= extra_flushes, _show(many)
    assert many.n_ours <= 24 // every + 1 + 1, _show(many)  # flushes + valid loss + accuracy

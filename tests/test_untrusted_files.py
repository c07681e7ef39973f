"""Files fastlight reads through Lightning (resume, ckpt_path) are loaded with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from bridge import Callback
from tests.helpers import make_data, make_learner


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.mkdir, ("PWNED_DIR",))


class _Batches(Callback):
    def __init__(self) -> None:
        self.n = 0

    def before_batch(self) -> None:
        self.n += 1


def test_resume_refuses_a_checkpoint_whose_unpickling_runs_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    learn = make_learner(tmp_path, data=make_data(n=64, n_valid=32, bs=16))
    learn.fit(1)
    last = learn.checkpoint_dir / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["payload"] = _Evil()  # a real checkpoint, plus one object whose unpickling would run code
    torch.save(ckpt, last)
    before = [p.detach().clone() for p in learn.model.parameters()]
    batches = _Batches()
    with pytest.raises(pickle.UnpicklingError, match=r"last\.ckpt.*weights_only=True"):
        learn.fit(2, resume=True, cbs=[batches])
    assert not (tmp_path / "PWNED_DIR").exists()  # nothing in the file ran
    assert batches.n == 0 and all(torch.equal(a, p) for a, p in zip(before, learn.model.parameters(), strict=True))


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint"])
def test_unreadable_checkpoint_names_the_file(tmp_path: Path, damage: str) -> None:
    learn = make_learner(tmp_path, data=make_data(n=64, n_valid=32, bs=16))
    learn.fit(1)
    bad = tmp_path / "bad.ckpt"
    data = (learn.checkpoint_dir / "last.ckpt").read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"epoch,train_loss\n0,0.5\n")
    with pytest.raises(RuntimeError, match=r"bad\.ckpt.*is not a readable checkpoint"):
        learn.fit(2, ckpt_path=bad)


def test_checkpoint_of_another_architecture_lists_the_keys(tmp_path: Path) -> None:
    from torch import nn

    other = make_learner(tmp_path / "other", model=nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))
    other.fit(1)
    learn = make_learner(tmp_path / "mine", model=nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2)))
    with pytest.raises(RuntimeError, match=r"size mismatch|Missing key|Unexpected key") as info:
        learn.fit(2, ckpt_path=other.checkpoint_dir / "last.ckpt")
    assert "model.0.weight" in str(info.value) or "model.2" in str(info.value)

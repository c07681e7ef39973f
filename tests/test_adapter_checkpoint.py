"""The adapter's state in Lightning checkpoints: one key per Trainer, each callback's state keyed inside.

A resume (``trainer.fit(..., ckpt_path=...)``) restores every callback that matches one in the
checkpoint, whatever else was added or removed; a checkpoint written under the old key (the
callbacks' names in it) still resumes; a Trainer takes one adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from bridge import Callback, LightningAdapter
from tests.adapter_modules import LoggedMetrics, flat
from tests.helpers import make_data


class Steps(Callback):
    """Counts training batches over fits; its count is its checkpoint state."""

    def __init__(self) -> None:
        self.n = 0

    def after_batch(self) -> None:
        if self.training:
            self.n += 1

    def state_dict(self) -> dict[str, int]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.n = state["n"]


class Quiet(Callback):
    """A callback with no state."""


def fit(tmp_path: Path, adapter: LightningAdapter, epochs: int, ckpt_path: Path | None = None) -> pl.Trainer:
    data = make_data(n=96, n_valid=64, bs=32)  # 3 training batches an epoch
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[adapter, ModelCheckpoint(dirpath=tmp_path, save_last=True)],
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                         enable_progress_bar=False, logger=False)  # fmt: skip
    torch.manual_seed(1)
    trainer.fit(LoggedMetrics(), data.train_dl, data.valid_dl, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    "resumed_with",
    [
        lambda steps: [steps],
        lambda steps: [steps, Quiet()],  # one more callback
        lambda steps: {"cbs": [steps], "recorder": False},  # no Recorder this time
    ],
    ids=["same", "one-more", "no-recorder"],
)
def test_a_resume_with_other_callbacks_restores_the_ones_that_match(tmp_path: Path, resumed_with: Any) -> None:
    fit(tmp_path, LightningAdapter([Steps()]), 2)
    steps = Steps()
    spec = resumed_with(steps)
    adapter = LightningAdapter(**spec) if isinstance(spec, dict) else LightningAdapter(spec)
    fit(tmp_path / "resumed", adapter, 4, ckpt_path=tmp_path / "last.ckpt")
    assert steps.n == 4 * 3  # 2 epochs restored + 2 trained


def test_a_checkpoint_with_the_old_adapter_key_still_resumes(tmp_path: Path) -> None:
    fit(tmp_path, LightningAdapter([Steps()]), 2)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    ckpt["callbacks"]["LightningAdapter[TrainEvalCallback, Steps, Recorder]"] = ckpt["callbacks"].pop(
        "LightningAdapter"
    )
    torch.save(ckpt, tmp_path / "old.ckpt")
    steps = Steps()
    fit(tmp_path / "resumed", LightningAdapter([steps]), 3, ckpt_path=tmp_path / "old.ckpt")
    assert steps.n == 3 * 3


def test_two_adapters_in_one_trainer_are_refused_when_the_trainer_is_built(tmp_path: Path) -> None:
    # Lightning's own check (state keys must be unique), before any fit: both would wrap one module.
    with pytest.raises(RuntimeError, match=r"more than one stateful callback of type `LightningAdapter`"):
        pl.Trainer(callbacks=[LightningAdapter([Steps()]), LightningAdapter([Quiet()])], logger=False,
                   default_root_dir=tmp_path)  # fmt: skip


class CountedSteps(LoggedMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return super().training_step(batch, batch_idx)


def test_a_resume_inside_an_epoch_trains_the_rest_of_it_as_lightning_does(tmp_path: Path) -> None:
    # Lightning calls no on_train_epoch_start for the epoch a mid-epoch checkpoint resumes.
    data = make_data(n=192, n_valid=64, bs=32)  # 6 training batches an epoch

    def run(cbs: list[Any] | None, ckpt: Path | None, folder: str) -> tuple[CountedSteps, pl.Trainer]:
        saver = ModelCheckpoint(dirpath=tmp_path / folder, every_n_train_steps=9, save_top_k=-1)
        callbacks: list[Any] = [LightningAdapter(cbs)] if cbs is not None else []
        trainer = pl.Trainer(max_epochs=2, callbacks=[*callbacks, saver], enable_model_summary=False,
                             num_sanity_val_steps=0, default_root_dir=tmp_path, enable_progress_bar=False,
                             logger=False)  # fmt: skip
        torch.manual_seed(1)
        module = CountedSteps()
        trainer.fit(module, data.train_dl, data.valid_dl, ckpt_path=ckpt)
        return module, trainer

    run(None, None, "first")
    ckpt = tmp_path / "first" / "epoch=1-step=9.ckpt"
    plain, t0 = run(None, ckpt, "plain")
    steps = Steps()
    adapted, t1 = run([steps], ckpt, "adapted")
    assert (t1.global_step, adapted.steps) == (t0.global_step, plain.steps) == (12, 3)
    assert torch.equal(flat(adapted), flat(plain))
    assert steps.n == 3  # a fresh callback, no adapter state in this checkpoint: the 3 batches trained

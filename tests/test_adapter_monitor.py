"""Trackers through LightningAdapter: monitor what the module logs, save the module's weights, messages, NaN."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from bridge import LightningAdapter
from callbacks import EarlyStoppingCallback, SaveModelCallback
from tests.adapter_modules import BatchOnly, DictSteps, LoggedMetrics, ManualOne, NaNValidation, flat
from tests.helpers import make_data


class EpochEnd(pl.Callback):
    """Plain Lightning: the module's logged ``key`` and its weights at each training epoch end."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.values: list[float] = []
        self.weights: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.values.append(float(trainer.callback_metrics[self.key]))
        self.weights.append(flat(pl_module).clone())


def fit(
    tmp_path: Path, module: pl.LightningModule, cbs: list[Any] | None, epochs: int, *extra: pl.Callback, **kw: Any
) -> tuple[LightningAdapter | None, pl.Trainer]:
    """Fit ``module`` (3 train, 2 valid batches an epoch); ``cbs=None``: no adapter at all."""
    data = make_data(n=96, n_valid=64, bs=32)
    adapter = None if cbs is None else LightningAdapter(cbs, **kw)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[*([adapter] if adapter else []), *extra],
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path, enable_progress_bar=False, logger=False)  # fmt: skip
    torch.manual_seed(1)
    trainer.fit(module, data.train_dl, data.valid_dl)
    return adapter, trainer


def fastai_rule(values: list[float], less: bool, min_delta: float, patience: int) -> tuple[list[int], int | None]:
    """fastai's tracker decision, written out: the epochs that improve, and the epoch that stops (or None)."""
    best, wait, better = (math.inf if less else -math.inf), 0, []
    for epoch, v in enumerate(values):
        if (v + min_delta < best) if less else (v - min_delta > best):
            best, wait = v, 0
            better.append(epoch)
        else:
            wait += 1
            if wait >= patience:
                return better, epoch
    return better, None


@pytest.mark.parametrize(
    ("make", "monitor", "min_delta", "patience"),
    [
        (LoggedMetrics, "val/acc", 0.0, 1),
        (LoggedMetrics, "val_loss", 0.02, 2),
        (DictSteps, "val_loss", 0.02, 2),
        (ManualOne, "val_loss", 0.1, 2),
    ],
)
def test_early_stopping_on_a_logged_key_stops_where_fastais_rule_says(
    tmp_path: Path, make: type[pl.LightningModule], monitor: str, min_delta: float, patience: int
) -> None:
    plain = EpochEnd(monitor)
    fit(tmp_path / "plain", make(), None, 10, plain)
    less = "loss" in monitor
    _, stop = fastai_rule(plain.values, less, min_delta, patience)
    assert stop is not None and stop < 9  # the data make the fit stop early: the test can tell
    es = EarlyStoppingCallback(monitor=monitor, min_delta=min_delta, patience=patience)
    seen = EpochEnd(monitor)
    _, trainer = fit(tmp_path / "adapted", make(), [es], 10, seen)
    assert es.stopped_epoch == stop
    assert len(seen.values) == stop + 1 and trainer.current_epoch == stop + 1
    assert seen.values == plain.values[: stop + 1]  # the same run up to the stop


def test_default_valid_loss_is_the_modules_logged_validation_loss(tmp_path: Path) -> None:
    # validation_step returns None: `valid_loss` is the logged "val_loss" (LoggedMetrics) or "val/loss" (BatchOnly).
    for make, key in ((LoggedMetrics, "val_loss"), (BatchOnly, "val/loss")):
        es, seen = EarlyStoppingCallback(patience=100), EpochEnd(key)
        fit(tmp_path / key.replace("/", "_"), make(), [es], 4, seen)
        assert not any(math.isnan(v) for v in seen.values)
        assert es.best == min(seen.values)


def test_a_monitor_the_module_never_logged_fails_at_the_first_epoch_end_with_the_names(tmp_path: Path) -> None:
    seen = EpochEnd("val_loss")
    with pytest.raises(
        ValueError, match=r"`monitor`='val_acc' was not logged this epoch; available: .*val/acc.*val_loss"
    ):
        fit(tmp_path, LoggedMetrics(), [EarlyStoppingCallback(monitor="val_acc")], 5, seen)
    assert seen.values == []  # the adapter's epoch end comes first: it failed at epoch 0


def test_a_nan_is_reported_and_the_stop_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    es = EarlyStoppingCallback(monitor="val_loss", patience=1)
    with pytest.warns(UserWarning, match=r"`monitor`='val_loss' is NaN at epoch 1; a NaN is never an improvement"):
        fit(tmp_path, NaNValidation(), [es], 5)
    assert es.stopped_epoch == 1
    assert "No improvement since epoch 0: early stopping" in capsys.readouterr().out


@pytest.mark.parametrize("make", [LoggedMetrics, DictSteps, BatchOnly, ManualOne])
def test_save_model_writes_the_modules_weights_once_per_improvement_and_reloads_the_best(
    tmp_path: Path, make: type[pl.LightningModule], capsys: pytest.CaptureFixture[str]
) -> None:
    key = "val/loss" if make is BatchOnly else "val_loss"
    plain = EpochEnd(key)
    _, trainer = fit(tmp_path / "plain", make(), None, 5, plain)
    better, _ = fastai_rule(plain.values, True, 0.012, patience=100)
    assert len(better) >= 2  # several improvements: one file write each

    save, seen = SaveModelCallback(monitor=key, fname="best", min_delta=0.012), EpochEnd(key)
    module = make()
    adapter, _ = fit(tmp_path / "adapted", module, [save], 5, seen)
    assert adapter is not None
    assert adapter.learn.path == tmp_path / "adapted"  # the Trainer's default_root_dir
    file = tmp_path / "adapted" / "models" / "best.pth"
    assert save.last_saved_path == file
    saved = torch.load(file, weights_only=True)
    assert set(saved) == set(module.state_dict())  # the LightningModule's own state_dict
    best = better[-1]
    assert torch.equal(torch.cat([saved[k].flatten() for k, _ in module.named_parameters()]), seen.weights[best])
    assert torch.equal(flat(module), seen.weights[best])  # reloaded at the end of fit
    out = capsys.readouterr().out
    assert [int(line.split()[5]) for line in out.splitlines() if line.startswith("Better model found")] == better


def test_save_model_writes_one_file_per_improvement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.files

    writes: list[Path] = []
    real = bridge.files.atomic_save

    def spy(obj: Any, path: Path) -> Path:
        writes.append(Path(path))
        return real(obj, path)

    monkeypatch.setattr(bridge.files, "atomic_save", spy)
    plain = EpochEnd("val_loss")
    fit(tmp_path / "plain", LoggedMetrics(), None, 5, plain)
    better, _ = fastai_rule(plain.values, True, 0.012, patience=100)
    assert 2 <= len(better) < 5
    save = SaveModelCallback(monitor="val_loss", min_delta=0.012)
    fit(tmp_path / "a", LoggedMetrics(), [save], 5, path=tmp_path / "mine")
    assert writes == [tmp_path / "mine" / "models" / "model.pth"] * len(better)  # `path=` wins over the Trainer's


def test_adapter_path_must_be_a_folder() -> None:
    with pytest.raises(TypeError, match=r"`path` must be a folder \(str or os.PathLike\) or None, got 3"):
        LightningAdapter([], path=3)  # type: ignore[arg-type]


def test_trackers_change_nothing_but_what_they_do(tmp_path: Path) -> None:
    # A tracker that never stops and a module with a plateau scheduler: same weights as without the adapter.
    plain = EpochEnd("val_loss")
    _, t0 = fit(tmp_path / "p", LoggedMetrics(), None, 3, plain)
    seen = EpochEnd("val_loss")
    fit(tmp_path / "a", LoggedMetrics(), [EarlyStoppingCallback(monitor="val_loss", patience=10)], 3, seen)
    assert seen.values == plain.values
    assert all(torch.equal(a, b) for a, b in zip(seen.weights, plain.weights))
    assert np.isfinite(seen.values).all()


def test_the_recorder_prints_no_epoch_table_under_the_adapter_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/porting.md: the module owns its output; a tracker's message still prints (rank 0).
    save = SaveModelCallback(monitor="val_loss", fname="best")
    adapter, _ = fit(tmp_path / "quiet", LoggedMetrics(), [save], 3)
    assert adapter is not None and len(adapter.learn.recorder.values) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("Better model found") for line in lines)

    from bridge.output import EpochTable

    loud = LightningAdapter([])
    loud.learn.logger = EpochTable(loud.learn)  # fastai's learn.logger: the table, when asked for
    trainer = pl.Trainer(max_epochs=2, callbacks=[loud], enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path / "loud", enable_progress_bar=False,
                         logger=False)  # fmt: skip
    data = make_data(n=96, n_valid=64, bs=32)
    trainer.fit(LoggedMetrics(), data.train_dl, data.valid_dl)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "time"]
    rows = [line.split() for line in lines[1:] if line[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1]
    assert [float(r[1]) for r in rows] == pytest.approx([v[0] for v in loud.learn.recorder.values], abs=1e-6)

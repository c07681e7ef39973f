"""Tracker callbacks: SaveModel, EarlyStopping, ReduceLROnPlateau, TerminateOnNaN; state across a restart.

A "scripted" metric returns a fixed value per epoch, so the expected decisions are known in
closed form independently of training.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from bridge import SGD, Callback
from callbacks import (
    CSVLogger,
    EarlyStoppingCallback,
    ReduceLROnPlateau,
    SaveModelCallback,
    TerminateOnNaNCallback,
    TrackerCallback,
)
from tests.helpers import make_learner


def scripted(values: list[float], name: str = "scripted_loss") -> tuple[Any, dict[str, Any]]:
    """A metric function whose value at epoch e is ``values[e]`` (the learner is set later)."""
    holder: dict[str, Any] = {}

    def metric(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values[holder["learn"].epoch], dtype=torch.float64)

    metric.__name__ = name
    return metric, holder


def scripted_learner(tmp_path: Path, values: list[float], name: str = "scripted_loss", **kw: Any) -> Any:
    metric, holder = scripted(values, name)
    learn = make_learner(tmp_path, metrics=[metric], **kw)
    holder["learn"] = learn
    return learn


class EpochLog(Callback):
    """After every epoch (after the Recorder, before the trackers): epoch, weights, lr of each group."""

    order = 55

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.lrs: list[list[float]] = []
        self.cancelled = False

    def after_epoch(self) -> None:
        self.epochs.append(self.learn.epoch)
        self.weights.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})
        self.lrs.append([float(g["lr"]) for g in self.learn.opt.param_groups])

    def after_cancel_fit(self) -> None:
        self.cancelled = True


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- construction ------------------------------------------------------------------------------
def test_comp_inferred_from_name_and_min_delta_sign() -> None:
    assert TrackerCallback("valid_loss").comp is np.less
    assert TrackerCallback("error_rate").comp is np.less
    assert TrackerCallback("accuracy").comp is np.greater
    assert TrackerCallback("valid_loss", min_delta=0.1).min_delta == -0.1
    assert TrackerCallback("accuracy", min_delta=0.1).min_delta == 0.1
    assert TrackerCallback("accuracy", comp=operator.lt, min_delta=0.1).min_delta == -0.1
    assert [SaveModelCallback.order, ReduceLROnPlateau.order, EarlyStoppingCallback.order] == [61, 62, 63]
    assert TerminateOnNaNCallback.order == -9


BAD_ARGS = [
    (TrackerCallback, {"monitor": 3}, TypeError, "monitor"),
    (TrackerCallback, {"monitor": ""}, TypeError, "monitor"),
    (TrackerCallback, {"min_delta": -0.1}, ValueError, "min_delta"),
    (TrackerCallback, {"min_delta": "0.1"}, ValueError, "min_delta"),
    (TrackerCallback, {"comp": "less"}, TypeError, "comp"),
    (TrackerCallback, {"reset_on_fit": 1}, TypeError, "reset_on_fit"),
    (EarlyStoppingCallback, {"patience": -1}, ValueError, "patience"),
    (EarlyStoppingCallback, {"patience": 1.5}, ValueError, "patience"),
    (EarlyStoppingCallback, {"patience": True}, ValueError, "patience"),
    (ReduceLROnPlateau, {"factor": 1.0}, ValueError, "factor"),
    (ReduceLROnPlateau, {"factor": 0.5}, ValueError, "factor"),
    (ReduceLROnPlateau, {"min_lr": -1e-3}, ValueError, "min_lr"),
    (ReduceLROnPlateau, {"patience": -2}, ValueError, "patience"),
    (SaveModelCallback, {"fname": ""}, TypeError, "fname"),
    (SaveModelCallback, {"fname": None}, TypeError, "fname"),
    (SaveModelCallback, {"fname": "models/"}, TypeError, "fname"),
    (SaveModelCallback, {"every_epoch": 0}, ValueError, "every_epoch"),
    (SaveModelCallback, {"every_epoch": 1.5}, ValueError, "every_epoch"),
    (SaveModelCallback, {"every_epoch": True, "at_end": True}, ValueError, "at_end"),
    (SaveModelCallback, {"with_opt": "yes"}, TypeError, "with_opt"),
]


@pytest.mark.parametrize(("cls", "kwargs", "exc", "word"), BAD_ARGS)
def test_bad_arguments_fail_at_construction(cls: type, kwargs: dict[str, Any], exc: type, word: str) -> None:
    with pytest.raises(exc, match=f"{cls.__name__}: `{word}`|`{word}`"):
        cls(**kwargs)


def test_unknown_monitor_fails_at_before_fit_listing_names(tmp_path: Path) -> None:
    learn = scripted_learner(tmp_path, [0.5])
    names = "train_loss, valid_loss, scripted_loss"
    with pytest.raises(ValueError, match=f"'accuracy' is not recorded; available: {names}"):
        learn.fit(1, cbs=SaveModelCallback(monitor="accuracy"))


# -- SaveModelCallback -------------------------------------------------------------------------
def test_save_model_keeps_best_and_reloads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    learn = scripted_learner(tmp_path, [0.5, 0.3, 0.4])
    log, cb = EpochLog(), SaveModelCallback(monitor="scripted_loss")
    saves: list[str] = []
    orig = learn.save
    learn.save = lambda name, **kw: saves.append(name) or orig(name, **kw)
    learn.fit(3, cbs=[cb, log])
    assert saves == ["model", "model"]  # epochs 0 and 1 improved, epoch 2 did not
    assert cb.best == pytest.approx(0.3)
    assert same_weights(learn.model.state_dict(), log.weights[1])
    assert not same_weights(log.weights[2], log.weights[1])
    on_disk = torch.load(tmp_path / "models" / "model.pth", weights_only=True)
    assert same_weights(on_disk, log.weights[1])
    out = capsys.readouterr().out
    assert "Better model found at epoch 0" in out and "Better model found at epoch 1" in out
    assert "epoch 2" not in out.split("Better model found at epoch 1")[1].split("\n")[0]
    assert list((tmp_path / "models").iterdir()) == [tmp_path / "models" / "model.pth"]  # no temp file left


def test_save_model_never_saves_nan_and_respects_min_delta(tmp_path: Path) -> None:
    learn = scripted_learner(tmp_path, [math.nan, 0.5, math.nan, 0.45, 0.3])
    log, cb = EpochLog(), SaveModelCallback(monitor="scripted_loss", min_delta=0.1)
    learn.fit(5, cbs=[cb, log])
    # nan never improves; 0.45 is not below 0.5 - 0.1; 0.3 is.
    assert cb.best == pytest.approx(0.3)
    assert same_weights(learn.model.state_dict(), log.weights[4])
    learn2 = scripted_learner(tmp_path / "b", [math.nan, 0.5, math.nan, 0.45])
    log2, cb2 = EpochLog(), SaveModelCallback(monitor="scripted_loss", min_delta=0.1)
    learn2.fit(4, cbs=[cb2, log2])
    assert cb2.best == pytest.approx(0.5)
    assert same_weights(learn2.model.state_dict(), log2.weights[1])
    assert torch.isfinite(torch.cat([p.flatten() for p in learn2.model.state_dict().values()])).all()


def test_save_model_every_epoch_and_at_end(tmp_path: Path) -> None:
    learn = scripted_learner(tmp_path, [0.5] * 4)
    log = EpochLog()
    learn.fit(4, cbs=[SaveModelCallback(every_epoch=2, fname="snap"), log])
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["snap_0.pth", "snap_2.pth"]
    assert same_weights(torch.load(tmp_path / "models" / "snap_2.pth", weights_only=True), log.weights[2])
    assert same_weights(learn.model.state_dict(), log.weights[3])  # nothing reloaded

    learn = scripted_learner(tmp_path / "b", [0.5, 0.1, 0.9])
    log = EpochLog()
    learn.fit(3, cbs=[SaveModelCallback(monitor="scripted_loss", at_end=True, with_opt=True), log])
    saved = torch.load(tmp_path / "b" / "models" / "model.pth", weights_only=True)
    assert set(saved) == {"model", "opt"}
    assert same_weights(saved["model"], log.weights[2])  # at_end: the final model, not the best


def test_trackers_do_nothing_outside_fit_and_in_lr_finder(tmp_path: Path) -> None:
    learn = scripted_learner(tmp_path, [0.5, 0.4], cbs=[SaveModelCallback(monitor="scripted_loss")])
    learn.validate()
    learn.get_preds()
    assert not (tmp_path / "models").exists()

    class LRFinder(Callback):  # what the lr finder exposes as learn.lr_finder
        def after_batch(self) -> None: ...

    learn.fit(2, cbs=[LRFinder()])
    assert not (tmp_path / "models").exists()
    learn.fit(1)
    assert (tmp_path / "models" / "model.pth").exists()


# -- EarlyStoppingCallback ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "name", "patience", "stop"),
    [
        ([0.5, 0.6, 0.4, 0.45, 0.46, 0.1], "scripted_loss", 2, 4),  # waits 1,0,1,2 -> stops at 4
        ([0.5, 0.6, 0.4, 0.45, 0.46, 0.1], "scripted_loss", 3, None),
        ([0.1, 0.2, 0.2, 0.3, 0.1, 0.1], "scripted_acc", 1, 2),  # greater is better; ties do not improve
    ],
)
def test_early_stopping_stops_after_patience(
    tmp_path: Path, values: list[float], name: str, patience: int, stop: int | None
) -> None:
    learn = scripted_learner(tmp_path, values, name=name)
    log, cb = EpochLog(), EarlyStoppingCallback(monitor=name, patience=patience)
    learn.fit(len(values), cbs=[cb, log])
    last = len(values) - 1 if stop is None else stop
    assert log.epochs == list(range(last + 1))
    assert cb.stopped_epoch == stop and log.cancelled == (stop is not None)


# -- ReduceLROnPlateau -------------------------------------------------------------------------
def test_reduce_lr_on_plateau_divides_every_group_floored_at_min_lr(tmp_path: Path) -> None:
    learn = scripted_learner(tmp_path, [0.5, 0.6, 0.4, 0.7, 0.8, 0.9], opt_func=SGD, lr=0.1)
    log = EpochLog()
    learn.fit(6, cbs=[ReduceLROnPlateau(monitor="scripted_loss", patience=1, factor=10.0, min_lr=5e-4), log])
    n_groups = len(learn.opt.param_groups)
    assert n_groups == 2  # weights, and bias (no weight decay)
    # lr used in each epoch: cut after epochs 1, 3, 4 (floored), 5 (already at the floor).
    expected = [0.1, 0.1, 0.01, 0.01, 1e-3, 5e-4]
    assert [lr[0] for lr in log.lrs] == pytest.approx(expected)
    assert all(lr == pytest.approx([e] * n_groups) for lr, e in zip(log.lrs, expected))
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([5e-4] * n_groups)


# -- TerminateOnNaNCallback --------------------------------------------------------------------
class NaNAt(nn.Module):
    """Cross-entropy that returns NaN at one (epoch, iteration, phase)."""

    def __init__(self, at: tuple[int, int, bool]) -> None:
        super().__init__()
        self.at = at
        self.learn: Any = None
        self.ce = nn.CrossEntropyLoss()

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.ce(pred, y)
        learn = self.learn
        if (learn.epoch, learn.iter, learn.training) == self.at:
            return loss * float("nan")
        return loss


@pytest.mark.parametrize(("training", "it"), [(True, 2), (False, 1)])
def test_terminate_on_nan_stops_before_the_bad_step(tmp_path: Path, training: bool, it: int) -> None:
    loss = NaNAt((1, it, training))
    learn = make_learner(tmp_path, loss_func=loss)
    loss.learn = learn
    log, term = EpochLog(), TerminateOnNaNCallback()
    save = SaveModelCallback()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    learn.fit(4, cbs=[term, save, log, ckpt], enable_checkpointing=True)
    assert term.stopped_at == (1, it)
    assert log.epochs == [0] and log.cancelled
    n_iter = len(learn.dls.train_dl)
    assert len(learn.recorder.losses) == n_iter + (2 if training else n_iter)
    assert all(math.isfinite(v) for v in learn.recorder.losses)
    for p in learn.model.parameters():
        assert torch.isfinite(p).all() and p.grad is None
    assert same_weights(learn.model.state_dict(), log.weights[0])  # best reloaded
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in last.values())


def test_terminate_on_nan_uses_no_collective_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("collective called without DDP")

    monkeypatch.setattr(torch.distributed, "all_reduce", forbidden)
    loss = NaNAt((0, 3, True))
    learn = make_learner(tmp_path, loss_func=loss)
    loss.learn = learn
    term = TerminateOnNaNCallback()
    learn.fit(2, cbs=term)
    assert term.stopped_at == (0, 3)


# -- state across a restart (guarantee 6) ------------------------------------------------------
class Crash(Callback):
    def __init__(self, at_epoch: int | None) -> None:
        self.at_epoch = at_epoch

    def before_epoch(self) -> None:
        if self.learn.epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def _run(tmp_path: Path, crash_at: int | None = None, ckpt_path: Path | None = None) -> tuple[Any, ...]:
    # Uninterrupted: best at epoch 0, waits 1 and 2 -> stops at epoch 2, epoch 3 never runs.
    # Resumed without the trackers' state, epoch 2 (0.7) would be a new best and epoch 3 would run.
    learn = scripted_learner(tmp_path, [0.5, 0.6, 0.7, 0.4])
    log = EpochLog()
    es = EarlyStoppingCallback(monitor="scripted_loss", patience=2)
    sm = SaveModelCallback(monitor="scripted_loss")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    cbs = [es, sm, ckpt, Crash(crash_at), log, CSVLogger()]
    learn.fit(4, cbs=cbs, ckpt_path=ckpt_path, enable_checkpointing=True)
    return learn, es, sm, log


def test_trackers_resume_from_checkpoint_as_if_never_stopped(tmp_path: Path) -> None:
    _, es_full, sm_full, log_full = _run(tmp_path / "full")
    assert es_full.stopped_epoch == 2 and log_full.epochs == [0, 1, 2]

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "crash", crash_at=2)
    last = tmp_path / "crash" / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed, es, sm, log = _run(tmp_path / "crash", ckpt_path=last)

    assert log.epochs == [2]
    assert es.stopped_epoch == es_full.stopped_epoch == 2
    assert (es.best, es.wait) == (es_full.best, es_full.wait) == (pytest.approx(0.5), 2)
    assert sm.best == sm_full.best == pytest.approx(0.5)
    full_best = torch.load(tmp_path / "full" / "models" / "model.pth", weights_only=True)
    resumed_best = torch.load(tmp_path / "crash" / "models" / "model.pth", weights_only=True)
    assert same_weights(full_best, resumed_best)
    assert same_weights(resumed.model.state_dict(), full_best)
    # The CSV log holds the whole history after the restart, as in the uninterrupted run.
    full_csv = (tmp_path / "full" / "history.csv").read_text().splitlines()
    resumed_csv = (tmp_path / "crash" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in resumed_csv] == [line.split(",")[0] for line in full_csv]
    assert [line.split(",")[0] for line in full_csv] == ["epoch", "0", "1", "2"]
    assert [r.split(",")[:4] for r in resumed_csv[:3]] == [r.split(",")[:4] for r in full_csv[:3]]

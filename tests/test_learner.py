"""Learner basics: fit, validate, get_preds, predict, save/load, callbacks management."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from bridge import Callback, DataBunch, Learner
from callbacks import Recorder
from tests.helpers import make_data, make_learner, make_model


def _valid_tensors(data: DataBunch) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.valid_ds.tensors  # type: ignore[attr-defined]
    return x, y


def test_fit_learns_and_validate_matches_closed_form(tmp_path: Path) -> None:
    def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (pred.argmax(-1) == y).float().mean()

    # 70 validation items in batches of 32: 32, 32, 6 -> averages must be sample-weighted.
    data = make_data(n=256, n_valid=70, bs=32)
    learn = make_learner(
        tmp_path, data=data, lr=5e-2, metrics=[accuracy, MulticlassAccuracy(num_classes=2, average="micro")]
    )
    learn.fit(3)
    x, y = _valid_tensors(data)
    with torch.no_grad():
        pred = learn.model.eval()(x)
    expected = [F.cross_entropy(pred, y).item(), accuracy(pred, y).item(), accuracy(pred, y).item()]
    assert learn.recorder.values[-1][1:] == pytest.approx(expected, abs=1e-6)
    assert expected[1] > 0.85  # it learned
    assert learn.recorder.metric_names == ["epoch", "train_loss", "valid_loss", "accuracy", "accuracy", "time"]
    assert len(learn.recorder.values) == 3 and len(learn.recorder.losses) == 3 * 8 == len(learn.recorder.lrs)
    got = learn.validate()
    assert got == pytest.approx(expected, abs=1e-6)
    # As fastai 2.8: an evaluation starts a new history, its one row (no train_loss: no training ran).
    assert learn.recorder.values == [pytest.approx(expected, abs=1e-6)] and learn.recorder.losses == []


def test_recorder_smooth_loss_is_fastai_ema(tmp_path: Path) -> None:
    class Losses(Callback):
        order = 60
        raw: list[float] = []
        smooth: list[torch.Tensor] = []  # the tensors learn.smooth_loss gave, kept: later batches must not change them
        before: list[torch.Tensor] = []  # read before the Recorder's after_batch: the previous batch's value

        def before_batch(self) -> None:
            if self.training and self.train_iter % 2:
                self.before.append(self.learn.smooth_loss)

        def after_batch(self) -> None:
            if self.training:
                self.raw.append(float(self.learn.loss.detach()))
                if self.train_iter % 3:  # read at some batches only (it is computed when read)
                    self.smooth.append(self.learn.smooth_loss)

    cb = Losses()
    cb.raw, cb.smooth, cb.before = [], [], []
    learn = make_learner(tmp_path, cbs=[cb], log_every_n_steps=5)
    learn.fit(2)
    beta, val, expected = 0.98, 0.0, []
    for i, v in enumerate(cb.raw, start=1):
        val = beta * val + (1 - beta) * v
        expected.append(val / (1 - beta**i))
    assert learn.recorder.losses == pytest.approx(expected, rel=1e-5)
    read = [e for i, e in enumerate(expected, start=1) if i % 3]
    assert [float(t) for t in cb.smooth] == pytest.approx(read, rel=1e-5) and len(read) == 8
    # before_batch at train_iter 1, 3, ... (counted from 0) sees the value of the batch before.
    assert [float(t) for t in cb.before] == pytest.approx(expected[0:-1:2], rel=1e-5) and len(cb.before) == 6
    assert float(learn.smooth_loss) == pytest.approx(expected[-1], rel=1e-5)
    assert learn.recorder.values[0][0] == pytest.approx(expected[5], rel=1e-5)  # 6 batches per epoch


def test_smooth_loss_read_rarely_is_the_same_ema(tmp_path: Path) -> None:
    # Losses nobody read are taken in at the next read or read-back (every 5 steps here), many at once.
    class Sparse(Callback):
        order = 60

        def __init__(self) -> None:
            self.raw: list[float] = []
            self.read: dict[int, float] = {}

        def after_batch(self) -> None:
            if self.training:
                self.raw.append(float(self.learn.loss.detach()))
                if self.train_iter in (3, 4, 12, 16, 18):  # gaps of 3, 1, 8 (across two read-backs), 4, 2
                    self.read[self.train_iter] = float(self.learn.smooth_loss)

    cb = Sparse()
    learn = make_learner(tmp_path, data=make_data(n=288), cbs=[cb], log_every_n_steps=5)
    learn.fit(2)  # 9 batches an epoch
    beta, val, expected = 0.98, 0.0, []
    for i, v in enumerate(cb.raw, start=1):
        val = beta * val + (1 - beta) * v
        expected.append(val / (1 - beta**i))
    assert cb.read == pytest.approx({i: expected[i - 1] for i in (3, 4, 12, 16, 18)}, rel=1e-5)
    assert float(learn.smooth_loss) == pytest.approx(expected[-1], rel=1e-5) and len(expected) == 18

    class First(Callback):
        def before_batch(self) -> None:
            if self.training and self.train_iter == 0:
                self.seen = float(self.learn.smooth_loss)

    unread = Sparse()  # 6 batches: reads after batches 3 and 4 only, so the last two are never read
    learn = make_learner(tmp_path, cbs=[unread])
    learn.fit(1)
    first = First()
    learn.fit(1, cbs=first)  # as fastai's: the last fit's value until this fit's first batch
    val = 0.0
    for v in unread.raw[:6]:
        val = beta * val + (1 - beta) * v
    assert first.seen == pytest.approx(val / (1 - beta**6), rel=1e-5)


def test_get_preds_in_dataset_order_and_predict(tmp_path: Path) -> None:
    data = make_data(n=64, n_valid=50, bs=16)
    learn = make_learner(tmp_path, data=data)
    learn.fit(1)
    preds, targs = learn.get_preds()
    x, y = _valid_tensors(data)
    with torch.no_grad():
        expected = learn.model.eval()(x)
    assert torch.allclose(preds, expected, atol=1e-6)
    assert torch.equal(targs, y)
    probs, _ = learn.get_preds(act=lambda t: t.softmax(-1))
    assert torch.allclose(probs.sum(-1), torch.ones(50))
    decoded, index, item_probs = learn.predict(x[3])  # fastai's triple (CrossEntropyLoss: softmax + argmax)
    assert decoded == int(index) == int(expected[3].argmax())
    assert torch.allclose(item_probs, expected[3].softmax(-1), atol=1e-6)
    assert learn.recorder.values and len(learn.recorder.values) == 1  # evaluation leaves history alone


def test_save_load_roundtrip(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    learn.fit(1)
    path = learn.save("stage1")
    assert path == tmp_path / "models" / "stage1.pth" and path.exists()
    assert not list(path.parent.glob("*.tmp"))
    saved = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_state = learn.opt.state_dict()["state"][0]["exp_avg"].clone()
    learn.fit(1)
    assert not torch.equal(saved["0.weight"], learn.model.state_dict()["0.weight"])
    learn.load("stage1")
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, saved[k])
    assert torch.equal(learn.opt.state_dict()["state"][0]["exp_avg"], opt_state)
    p2 = learn.save("noopt", with_opt=False)
    assert set(torch.load(p2, weights_only=True)) == set(saved)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.mkdir, ("PWNED_DIR",))


def test_load_refuses_pickled_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    learn = make_learner(tmp_path)
    evil = tmp_path / "models" / "evil.pth"
    evil.parent.mkdir(parents=True)
    torch.save({"model": _Evil()}, evil)
    with pytest.raises(ValueError, match="evil.pth.*weights_only"):
        learn.load("evil")
    assert not (tmp_path / "PWNED_DIR").exists()


def test_callback_management_and_aliases(tmp_path: Path) -> None:
    class LR(Callback):  # would shadow learn.lr
        def before_fit(self) -> None:
            pass

    class CountBatches(Callback):
        def __init__(self) -> None:
            self.n = 0

        def after_batch(self) -> None:
            self.n += 1

    with pytest.warns(UserWarning, match="learn.lr"):
        learn = make_learner(tmp_path, cbs=[LR()])
    assert learn.lr == 1e-3
    temp = CountBatches()
    learn.fit(1, cbs=[temp])
    assert temp.n == 6 + 2 and temp not in learn.cbs and not hasattr(learn, "count_batches")
    own_recorder = Recorder()
    learn.fit(1, cbs=[own_recorder])
    assert isinstance(learn.recorder, Recorder) and learn.recorder is not own_recorder
    with learn.removed_cbs([learn.recorder]):
        assert not any(isinstance(c, Recorder) for c in learn.cbs)
    assert any(isinstance(c, Recorder) for c in learn.cbs)
    learn.remove_cb(Recorder)
    assert not hasattr(learn, "recorder")


def test_show_training_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    learn = make_learner(tmp_path)
    learn.show_training_loop()
    out = capsys.readouterr().out
    assert "after_batch" in out and "TrainEvalCallback, Recorder" in out


def test_epoch_table_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    learn = make_learner(tmp_path, metrics=[MulticlassAccuracy(num_classes=2)])
    learn.fit(2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [ln.split()[0] for ln in lines[1:3]] == ["0", "1"]
    assert "\r" not in "".join(lines)


def test_lr_and_wd_reach_the_optimizer(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, wd=0.1)
    learn.fit(1, lr=0.05)
    groups = learn.opt.param_groups
    assert [g["lr"] for g in groups] == [0.05, 0.05]
    # fastai: no weight decay on bias parameters unless wd_bn_bias=True
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert groups[0]["betas"] == (0.9, 0.99) and groups[0]["eps"] == 1e-5
    assert isinstance(learn.opt, torch.optim.AdamW)


def test_default_tensorboard_logger(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    learn = Learner(make_data(), make_model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    enable_progress_bar=False, log_every_n_steps=2)  # fmt: skip
    learn.fit(2)
    runs = list((tmp_path / "lightning_logs").glob("version_*"))
    assert len(runs) == 1
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "lr", "valid_loss"} <= tags
    valid = [e.value for e in acc.Scalars("valid_loss")]
    assert valid == pytest.approx([v[1] for v in learn.recorder.values], rel=1e-6)
    steps = [e.step for e in acc.Scalars("train_loss")]
    assert [e.value for e in acc.Scalars("train_loss")] == pytest.approx(
        [learn.recorder.losses[s - 1] for s in steps], rel=1e-6
    )


def test_lightning_callbacks_in_cbs_go_to_the_trainer(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="valid_loss", save_top_k=1, filename="best")
    learn = make_learner(tmp_path, cbs=[ckpt])
    learn.fit(2)
    assert ckpt.best_model_score is not None
    assert float(ckpt.best_model_score) == pytest.approx(min(v[1] for v in learn.recorder.values), rel=1e-6)
    assert (tmp_path / "ckpt" / "best.ckpt").exists()


def test_databunch_infers_c_and_aliases() -> None:
    x, y = torch.randn(20, 3), torch.arange(20) % 4
    data = DataBunch.from_datasets(TensorDataset(x, y), TensorDataset(x, y), bs=8)
    assert data.c == 4 and data.train is data.train_dl and data.valid is data.valid_dl
    assert data[0] is data.train_dl and data[1] is data.valid_dl
    xb, yb = data.one_batch()
    assert xb.shape == (8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DataBunch.from_datasets(TensorDataset(x, y.float()), TensorDataset(x, y), bs=8).c is None


def test_data_module_batch_transfer_hooks_run_and_are_chosen_per_fit(tmp_path: Path) -> None:
    # LearnerModule keeps Lightning's choice of hook owner (module or data module) for one Trainer:
    # an override on the DataBunch is used, and a later fit with another DataBunch chooses again.
    class Negated(DataBunch):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            x, y = batch
            return -x, y

    class FirstXb(Callback):
        def __init__(self) -> None:
            self.seen: list[torch.Tensor] = []

        def before_batch(self) -> None:
            if self.training and self.iter == 0:
                self.seen.append(self.xb[0].clone())

    plain = make_data(n=64, n_valid=32, bs=64)
    negated = Negated(plain.train_dl, plain.valid_dl)
    first = FirstXb()
    learn = make_learner(tmp_path, data=negated, cbs=[first])
    learn.fit(1)
    learn.dls = plain
    learn.fit(1)
    x = plain.train_ds.tensors[0]  # type: ignore[attr-defined]
    assert [s.shape for s in first.seen] == [x.shape, x.shape]
    assert torch.equal(first.seen[0].sort(0).values, (-x).sort(0).values)  # the data module's hook ran
    assert torch.equal(first.seen[1].sort(0).values, x.sort(0).values)  # the next fit's data module has none


def test_the_trainer_profiles_nothing_unless_given_a_profiler(tmp_path: Path) -> None:
    from lightning.pytorch.profilers import SimpleProfiler

    from bridge.profiler import NoProfiler

    learn = make_learner(tmp_path)
    learn.fit(1)
    assert isinstance(learn.trainer.profiler, NoProfiler)
    profiler = SimpleProfiler()
    learn = make_learner(tmp_path, profiler=profiler)
    learn.fit(1)
    assert learn.trainer.profiler is profiler
    assert any("training_step" in name for name in profiler.recorded_durations)  # it did profile the fit
    learn = make_learner(tmp_path, barebones=True, enable_checkpointing=False)  # barebones refuses any profiler
    learn.fit(1)
    assert learn.trainer.barebones

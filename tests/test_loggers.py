"""CSVLogger and TensorBoardCallback: files match the Recorder's numbers, written atomically."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger as PLCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import TensorDataset

from bridge import Callback, DataBunch
from callbacks import CSVLogger, TensorBoardCallback
from tests.helpers import make_data, make_learner, make_model


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


class FileRows(Callback):
    """Counts the CSV's data rows right after each epoch (after the CSVLogger wrote)."""

    order = 70

    def __init__(self, path: Path) -> None:
        self.path, self.counts = path, []

    def after_epoch(self) -> None:
        self.counts.append(len(read_rows(self.path)) - 1)


# -- CSVLogger ---------------------------------------------------------------------------------
def test_csv_logger_one_row_per_epoch_equal_to_recorder(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, metrics=[accuracy])
    seen = FileRows(tmp_path / "history.csv")
    learn.fit(3, cbs=[CSVLogger(), seen])
    assert seen.counts == [1, 2, 3]  # written (and readable) after every epoch
    rows = read_rows(tmp_path / "history.csv")
    assert rows[0] == learn.recorder.metric_names == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [[float(x) for x in r[1:4]] for r in rows[1:]] == learn.recorder.values  # exact (repr floats)
    assert all(len(r[4].split(":")) == 2 for r in rows[1:])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["history.csv"]  # no temp file


def test_csv_logger_alias_read_log_append_and_not_in_validate(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, metrics=[accuracy], cbs=CSVLogger("logs/h.csv", append=True))
    learn.fit(2)
    first = [list(v) for v in learn.recorder.values]
    learn.fit(1)
    log = learn.csv_logger.read_log()
    if hasattr(log, "to_dict"):  # a pandas DataFrame where pandas is installed (fastai's return)
        log = log.to_dict("records")
    assert [row["epoch"] for row in log] == [0, 1, 0]  # appended, header not repeated
    assert [[row["train_loss"], row["valid_loss"], row["accuracy"]] for row in log] == [*first, *learn.recorder.values]
    before = (tmp_path / "logs" / "h.csv").read_text()
    learn.validate()
    learn.get_preds()
    assert (tmp_path / "logs" / "h.csv").read_text() == before

    learn.remove_cb(learn.csv_logger)
    learn.fit(1, cbs=CSVLogger("logs/h.csv"))  # append=False: starts over
    assert len(read_rows(tmp_path / "logs" / "h.csv")) == 2


def test_csv_logger_read_log_returns_a_dataframe_with_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    learn = make_learner(tmp_path)
    learn.fit(1, cbs=(cb := CSVLogger()))
    fake = types.ModuleType("pandas")
    fake.read_csv = lambda path: ("frame", Path(path))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pandas", fake)
    assert cb.read_log() == ("frame", tmp_path / "history.csv")


def test_csv_logger_bad_arguments() -> None:
    with pytest.raises(TypeError, match="CSVLogger: `fname`"):
        CSVLogger("")
    with pytest.raises(TypeError, match="CSVLogger: `append`"):
        CSVLogger(append="yes")  # type: ignore[arg-type]


# -- TensorBoardCallback -----------------------------------------------------------------------
def events(log_dir: Path | str) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_on_lightning_logger_scalars_hparams_histograms(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", default_hp_metric=False)
    learn = make_learner(tmp_path, metrics=[accuracy], logger=logger, log_every_n_steps=2)
    learn.fit(2, cbs=TensorBoardCallback(hist_every=4, log_preds=True, n_preds=3))
    acc = events(logger.log_dir)
    rec = learn.recorder
    loss = scalars(acc, "train_loss")
    assert [s for s, _ in loss] == list(range(2, len(rec.losses) + 1, 2))  # every log_every_n_steps
    for step, value in loss:
        assert value == pytest.approx(rec.losses[step - 1], rel=1e-6)
    n_iter = learn.n_iter_per_epoch()  # 6 batches: histograms at steps 4, 8, 12
    for col, name in ((1, "valid_loss"), (2, "accuracy")):
        logged = scalars(acc, name)
        assert [v for _, v in logged] == pytest.approx([row[col] for row in rec.values], rel=1e-6)
        assert [s for s, _ in logged] == [n_iter - 1, 2 * n_iter - 1]  # Lightning: global_step - 1
    hist_tags = acc.Tags()["histograms"]
    assert {"weights/0.weight", "grads/0.weight", "weights/2.bias", "grads/2.bias"} <= set(hist_tags)
    assert [h.step for h in acc.Histograms("weights/0.weight")] == list(range(4, 2 * n_iter + 1, 4))
    final = acc.Histograms("weights/2.bias")[-1].histogram_value
    assert final.num == 2 and final.sum == pytest.approx(float(learn.model[2].bias.detach().sum()), rel=1e-5)
    text = acc.Tensors("predictions/text_summary")
    assert [t.step for t in text] == [n_iter - 1, 2 * n_iter - 1]
    table = text[-1].tensor_proto.string_val[0].decode()
    assert table.count("\n") == 2 + 3 - 1  # header, separator, n_preds rows
    hparams = (Path(logger.log_dir) / "hparams.yaml").read_text()
    assert "lr: 0.001" in hparams and "n_epoch: 2" in hparams and "bs: 32" in hparams


def test_tensorboard_own_writer_without_logger_and_images(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 4, 4, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    data = DataBunch.from_datasets(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=16)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    learn = make_learner(tmp_path, data=data, model=model, metrics=[accuracy])
    learn.fit(2, cbs=TensorBoardCallback(log_images=True, n_images=5, trace_model=True))
    acc = events(tmp_path / "runs")
    rec = learn.recorder
    loss = scalars(acc, "train_loss")
    assert [s for s, _ in loss] == list(range(1, len(rec.losses) + 1))  # own writer: every step
    assert [v for _, v in loss] == pytest.approx(rec.losses, rel=1e-6)
    assert [v for _, v in scalars(acc, "lr")] == pytest.approx(rec.lrs, rel=1e-6)
    for col, name in ((1, "valid_loss"), (2, "accuracy")):
        logged = scalars(acc, name)
        assert [v for _, v in logged] == pytest.approx([row[col] for row in rec.values], rel=1e-6)
        assert [s for s, _ in logged] == [1, 3]  # as Lightning: global_step - 1 at each epoch end (2 batches)
    imgs = acc.Images("input_images")
    assert [i.step for i in imgs] == [0, 2]
    assert all((i.height, i.width) == (4, 5 * 4) for i in imgs)  # 5 images side by side
    assert acc.Graph() is not None
    assert "_hparams_/experiment" in acc.summary_metadata


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"hist_every": 0}, ValueError, "hist_every"),
        ({"n_preds": -1}, ValueError, "n_preds"),
        ({"log_images": 1}, TypeError, "log_images"),
        ({"log_dir": 3}, TypeError, "log_dir"),
    ],
)
def test_tensorboard_bad_arguments(kwargs: dict[str, Any], exc: type, word: str) -> None:
    with pytest.raises(exc, match=f"TensorBoardCallback: `{word}`"):
        TensorBoardCallback(**kwargs)


class OddParams(nn.Module):
    """The test model plus unused parameters (no grad): all nan, partly finite, and an empty one (empty grad)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = make_model()
        self.unused_nan = nn.Parameter(torch.full((3,), float("nan")))
        self.partial = nn.Parameter(torch.tensor([1.0, float("inf"), float("nan"), -2.5]))
        self.empty = nn.Parameter(torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.empty.sum()


def test_tensorboard_histograms_every_step_of_finite_values_only(tmp_path: Path) -> None:
    # TensorBoard cannot bin an empty or an all-nan tensor: these used to crash the fit.
    learn = make_learner(tmp_path, model=OddParams())
    learn.fit(1, cbs=TensorBoardCallback(hist_every=1))
    acc = events(tmp_path / "runs")
    n_iter = learn.n_iter_per_epoch()
    tags = set(acc.Tags()["histograms"])
    for name in ("body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"):
        assert f"weights/{name}" in tags and f"grads/{name}" in tags
        assert [h.step for h in acc.Histograms(f"weights/{name}")] == list(range(1, n_iter + 1))
    assert not tags & {"weights/unused_nan", "grads/unused_nan", "weights/empty", "grads/empty"}
    final = acc.Histograms("weights/body.2.bias")[-1].histogram_value
    bias = learn.model.body[2].bias.detach()
    assert final.num == 2 and final.sum == pytest.approx(float(bias.sum()), rel=1e-5)
    assert (final.min, final.max) == pytest.approx((float(bias.min()), float(bias.max())), rel=1e-6)
    assert torch.isnan(learn.model.unused_nan).all()  # left alone: no grad, no step
    partial = acc.Histograms("weights/partial")[-1].histogram_value
    assert (partial.num, partial.sum, partial.min, partial.max) == (2, -1.5, -2.5, 1.0)  # the finite values only


def test_a_fit_shorter_than_log_every_n_steps_still_shows_its_train_loss(tmp_path: Path) -> None:
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", default_hp_metric=False)
    learn = make_learner(tmp_path, logger=logger)  # log_every_n_steps: Lightning's 50; 6 batches an epoch
    learn.fit(2)
    rec, n_iter = learn.recorder, learn.n_iter_per_epoch()
    loss = scalars(events(logger.log_dir), "train_loss")
    assert [s for s, _ in loss] == [n_iter, 2 * n_iter]  # one point at the end of each epoch
    assert [v for _, v in loss] == pytest.approx([rec.losses[n_iter - 1], rec.losses[-1]], rel=1e-6)


# -- learn.log_epoch: what Lightning's self.log(on_epoch=True) leaves, written directly (docs/performance.md) ----
class LogsEpochValues(Callback):
    def after_validate(self) -> None:  # not at the epoch end: through Lightning's self.log
        self.learn.log_epoch({"v": 0.5 * (self.epoch + 1)})

    def after_epoch(self) -> None:
        self.learn.log_epoch({"a": 0.25 * (self.epoch + 1)}, extra={"b": 2.0 + self.epoch})


class SelfLogs(pl.LightningModule):
    """Bare Lightning logging the same epoch value with its own ``self.log``: the oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = make_model()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.lin(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("v", 0.5 * (self.current_epoch + 1), on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.log("a", 0.25 * (self.current_epoch + 1), on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_log_epoch_leaves_what_lightnings_self_log_leaves(tmp_path: Path) -> None:
    data = make_data()
    learn = make_learner(tmp_path, data, logger=PLCSVLogger(tmp_path, name="learner"), log_every_n_steps=2)
    learn.fit(3, cbs=LogsEpochValues())
    bare = pl.Trainer(
        max_epochs=3,
        logger=PLCSVLogger(tmp_path, name="bare"),
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    bare.fit(SelfLogs(), data.train_dl, data.valid_dl)

    def rows(trainer: pl.Trainer, name: str) -> list[tuple[str, str, str]]:
        with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as f:  # type: ignore[union-attr]
            return [(r["epoch"], r["step"], r[name]) for r in csv.DictReader(f) if r[name]]

    assert rows(learn.trainer, "a") == rows(bare, "a") == [("0", "5", "0.25"), ("1", "11", "0.5"), ("2", "17", "0.75")]
    assert rows(learn.trainer, "v") == rows(bare, "v") == [("0", "5", "0.5"), ("1", "11", "1.0"), ("2", "17", "1.5")]
    for metrics in ("logged_metrics", "callback_metrics"):
        mine, theirs = getattr(learn.trainer, metrics)["a"], getattr(bare, metrics)["a"]
        assert (mine.dtype, mine.device, float(mine)) == (theirs.dtype, theirs.device, 0.75)
    assert float(learn.trainer.callback_metrics["b"]) == 4.0  # extra: for monitoring callbacks only
    assert "b" not in learn.trainer.logged_metrics
    with open(Path(learn.trainer.logger.log_dir) / "metrics.csv", newline="") as f:  # type: ignore[union-attr]
        assert "b" not in next(csv.reader(f))

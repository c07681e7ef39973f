"""Lightning interop both ways: loggers, a user's own Trainer, Lightning callbacks, output, summary.

Order rule between Lightning callbacks (in ``cbs``) and fastai-style callbacks, as checked
below: at each Lightning hook, Lightning runs the callbacks' hook first and then the
module's, so a Lightning callback's ``on_fit_start`` / ``on_train_epoch_start`` /
``on_validation_epoch_end`` / ``on_train_epoch_end`` / ``on_fit_end`` comes *before*
fastai's ``before_fit`` / ``before_epoch`` / ``after_validate`` / ``after_epoch`` /
``after_fit``; the batch events run inside ``training_step``, between
``on_train_batch_start`` and ``on_train_batch_end``. The exception is Lightning's
monitoring callbacks (``EarlyStopping``, ``ModelCheckpoint``): their ``on_train_epoch_end``
runs *after* the module's, i.e. after ``after_epoch``, so they see the epoch's
``valid_loss`` and metrics that the Recorder logs there. fastai's ``order`` sorts only
fastai-style callbacks among themselves.
"""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, StochasticWeightAveraging
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from bridge import Callback
from bridge.summary import callbacks_per_event, summary
from tests.helpers import make_learner, script_command, script_env


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class Trace(Callback):
    """Appends ``fa:<event>`` to a shared list for the events it defines."""

    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    def before_fit(self) -> None:
        self.trace.append("fa:before_fit")

    def before_epoch(self) -> None:
        self.trace.append("fa:before_epoch")

    def before_train(self) -> None:
        self.trace.append("fa:before_train")

    def after_step(self) -> None:
        self.trace.append("fa:after_step")

    def after_batch(self) -> None:
        self.trace.append("fa:after_batch")

    def before_validate(self) -> None:
        self.trace.append("fa:before_validate")

    def after_validate(self) -> None:
        self.trace.append("fa:after_validate")

    def after_epoch(self) -> None:
        self.trace.append("fa:after_epoch")

    def after_fit(self) -> None:
        self.trace.append("fa:after_fit")


# -- (a) Lightning loggers through `logger=` ------------------------------------------------------
def test_csv_and_tensorboard_loggers_together_get_the_recorder_values(tmp_path: Path) -> None:
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    tb_logger = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    learn = make_learner(tmp_path, metrics=[accuracy], logger=[csv_logger, tb_logger], log_every_n_steps=1)
    learn.fit(3)
    rec, n_iter = learn.recorder, learn.n_iter_per_epoch()
    epoch_steps = [(e + 1) * n_iter - 1 for e in range(3)]  # Lightning logs epoch values at global_step - 1

    rows = csv_rows(csv_logger)
    epoch_rows = [r for r in rows if r["valid_loss"]]
    assert [int(r["epoch"]) for r in epoch_rows] == [0, 1, 2]
    assert [int(r["step"]) for r in epoch_rows] == epoch_steps
    for col, name in ((1, "valid_loss"), (2, "accuracy")):
        assert [float(r[name]) for r in epoch_rows] == pytest.approx([v[col] for v in rec.values], rel=1e-6)
    step_rows = [r for r in rows if r["train_loss"]]
    assert [int(r["step"]) for r in step_rows] == list(range(1, len(rec.losses) + 1))
    assert [float(r["train_loss"]) for r in step_rows] == pytest.approx(rec.losses, rel=1e-6)

    acc = EventAccumulator(tb_logger.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    for col, name in ((1, "valid_loss"), (2, "accuracy")):
        events = acc.Scalars(name)
        assert [e.step for e in events] == epoch_steps
        assert [e.value for e in events] == pytest.approx([v[col] for v in rec.values], rel=1e-6)
    assert [e.value for e in acc.Scalars("train_loss")] == pytest.approx(rec.losses, rel=1e-6)


# -- (b) DataBunch + the Learner's module under a user's own Trainer.fit --------------------------
def test_learner_module_trains_under_a_users_own_trainer(tmp_path: Path) -> None:
    trace: list[str] = []
    learn = make_learner(tmp_path / "own", cbs=[Trace(trace)], metrics=[accuracy])
    before = [p.detach().clone() for p in learn.model.parameters()]
    trainer = pl.Trainer(  # a plain Lightning Trainer, Lightning's defaults (sanity check included)
        max_epochs=2, default_root_dir=str(tmp_path / "own"), enable_progress_bar=False, logger=False
    )
    trainer.fit(learn.module, datamodule=learn.dls)

    n_iter, n_valid = len(learn.dls.train_dl), len(learn.dls.valid_dl)
    epoch = ["fa:before_epoch", "fa:before_train", *["fa:after_step", "fa:after_batch"] * n_iter]
    epoch += ["fa:before_validate", *["fa:after_batch"] * n_valid, "fa:after_validate", "fa:after_epoch"]
    assert trace == ["fa:before_fit", *epoch * 2, "fa:after_fit"]  # no events during the sanity check
    assert learn.n_epoch == 2 and len(learn.recorder.values) == 2 and len(learn.recorder.losses) == 2 * n_iter
    assert all(not torch.equal(b, p) for b, p in zip(before, learn.model.parameters(), strict=True))

    # The same fit through Learner.fit gives the same numbers: the user's Trainer is a full fit.
    ref = make_learner(tmp_path / "ref", metrics=[accuracy])
    ref.fit(2)
    assert learn.recorder.values == ref.recorder.values
    assert learn.recorder.losses == ref.recorder.losses
    assert learn.recorder.values[1][1] < learn.recorder.values[0][1]  # valid loss went down
    assert float(trainer.callback_metrics["valid_loss"]) == pytest.approx(learn.recorder.values[-1][1], rel=1e-6)


# -- (c) Lightning callbacks in `cbs`, next to fastai-style ones ----------------------------------
class LightningTrace(pl.Callback):
    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("pl:on_fit_start")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("pl:on_train_epoch_start")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.trace.append("pl:on_train_batch_start")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.trace.append("pl:on_train_batch_end")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("pl:on_validation_epoch_end")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("pl:on_train_epoch_end")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("pl:on_fit_end")


class TracedEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping, recording when it checks and the valid_loss it sees."""

    def __init__(self, trace: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trace, self.seen = trace, []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trace.append("es:on_train_epoch_end")
        self.seen.append(float(trainer.callback_metrics["valid_loss"]))
        super().on_train_epoch_end(trainer, pl_module)


def test_lightning_callbacks_run_next_to_fastai_ones_in_the_documented_order(tmp_path: Path) -> None:
    trace: list[str] = []
    # patience=0 with an impossible min_delta: Lightning stops after the second epoch of four.
    stopper = TracedEarlyStopping(trace, monitor="valid_loss", patience=0, min_delta=10.0)
    learn = make_learner(tmp_path, metrics=[accuracy], cbs=[LightningTrace(trace), stopper, Trace(trace)])
    learn.fit(4)

    n_iter, n_valid = len(learn.dls.train_dl), len(learn.dls.valid_dl)
    train_batch = ["pl:on_train_batch_start", "fa:after_step", "fa:after_batch", "pl:on_train_batch_end"]
    epoch = ["pl:on_train_epoch_start", "fa:before_epoch", "fa:before_train", *train_batch * n_iter]
    epoch += ["fa:before_validate", *["fa:after_batch"] * n_valid, "pl:on_validation_epoch_end"]
    epoch += ["fa:after_validate", "pl:on_train_epoch_end", "fa:after_epoch", "es:on_train_epoch_end"]
    assert trace == ["pl:on_fit_start", "fa:before_fit", *epoch * 2, "pl:on_fit_end", "fa:after_fit"]
    # EarlyStopping saw each epoch's valid_loss (logged at after_epoch) and stopped the fastai loop cleanly.
    assert stopper.seen == pytest.approx([v[1] for v in learn.recorder.values], rel=1e-6)
    assert len(learn.recorder.values) == 2 and stopper.stopped_epoch == 1


def test_learning_rate_monitor_sees_the_fastai_schedule_one_batch_late(tmp_path: Path) -> None:
    logger = CSVLogger(str(tmp_path), name="csv")
    learn = make_learner(tmp_path, logger=logger, log_every_n_steps=1)
    learn.fit_one_cycle(2, lr_max=1e-2, cbs=LearningRateMonitor(logging_interval="step"))
    lrs = learn.recorder.lrs
    assert len(set(lrs)) == len(lrs)  # the schedule changes the lr every batch
    # The monitor reads the optimizer at on_train_batch_start; fastai's ParamScheduler sets the
    # batch's lr at before_batch, inside training_step. So step s shows the lr of batch s-1.
    # The Learner's optimizer has two param groups (with / without weight decay).
    for group in ("pg1", "pg2"):
        logged = [(int(r["step"]), float(r[f"lr-AdamW/{group}"])) for r in csv_rows(logger) if r[f"lr-AdamW/{group}"]]
        assert [s for s, _ in logged] == list(range(len(lrs)))
        assert [v for _, v in logged] == pytest.approx([lrs[max(s - 1, 0)] for s, _ in logged], rel=1e-12)


def test_stochastic_weight_averaging_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    # The Learner's module uses manual optimization: Lightning never steps SWA's SWALR schedule
    # there (swa_lrs would be silently ignored) and SWA's batch-norm epoch would train.
    learn = make_learner(tmp_path)
    with pytest.raises(TypeError, match="StochasticWeightAveraging") as info:
        learn.fit(2, cbs=StochasticWeightAveraging(swa_lrs=1e-2))
    assert "manual optimization" in str(info.value)
    assert learn.recorder.values == []  # refused before training


# -- (d) the epoch table when stdout is a log file ------------------------------------------------
def run_fit(tmp_path: Path, tty: bool) -> str:
    env = script_env(COLUMNS="100")
    cmd = script_command("interop_fit", str(tmp_path))
    if not tty:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout
    leader, follower = pty.openpty()
    # A real terminal's size: tqdm draws nothing in a 0-column window.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc2 = subprocess.Popen(cmd, env=env, stdout=follower, stderr=subprocess.DEVNULL, cwd=tmp_path)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc2.wait(timeout=120) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_epoch_table_is_clean_in_a_log_file_and_the_bar_shows_in_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "pipe").mkdir()
    out = run_fit(tmp_path / "pipe", tty=False)
    assert "\r" not in out and "\x1b" not in out  # no bar remnants, no cursor movement
    lines = out.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "time"]
    assert [line.split()[0] for line in lines[1:4]] == ["0", "1", "2"] and lines[4:] == ["done"]

    (tmp_path / "tty").mkdir()
    shown = run_fit(tmp_path / "tty", tty=True)
    # In a terminal the default is Lightning's bar: TQDM's, or Rich's where `rich` is installed.
    assert "Epoch 2: 100%" in shown or "Epoch 2/2" in shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # Rich's bar redraws with escape sequences
    table = [line.rsplit("\r", 1)[-1] for line in plain.replace("\r\n", "\n").split("\n")]
    assert [line.split()[0] for line in table if line.split()[:1] in (["epoch"], ["0"], ["1"], ["2"])] == [
        "epoch",
        "0",
        "1",
        "2",
    ]


# -- Learner.summary ----------------------------------------------------------------------------
class Stepper(Callback):
    order = 30

    def before_fit(self) -> None: ...

    def after_step(self) -> None: ...


class OldStyle:  # a fastai v1 callback: shows under the v2 events it maps to, by its own name
    def on_batch_end(self, **kwargs: Any) -> None: ...


def test_summary_shows_lightning_model_summary_and_callbacks_per_event(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    learn = make_learner(tmp_path, model=model, cbs=[Stepper(), OldStyle(), LearningRateMonitor()])
    rng = torch.get_rng_state()
    text = summary(learn)
    assert torch.equal(torch.get_rng_state(), rng)  # drawing the example batch left torch's RNG alone

    total = sum(p.numel() for p in model.parameters())  # 8*16+16 + 16*2+2 = 178
    frozen = sum(p.numel() for p in model[0].parameters())
    assert (total, frozen) == (178, 144)
    counts = {line.split(None, 1)[1]: line.split()[0] for line in text.splitlines() if line.endswith(" params")}
    assert counts["Trainable params"] == str(total - frozen)
    assert counts["Non-trainable params"] == str(frozen)
    assert counts["Total params"] == str(total)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.count("|") >= 6}
    assert {"model.0", "model.1", "model.2"} <= set(rows)  # max_depth=2: the model's children
    assert "[32, 8]" in rows["model.0"] and "[32, 16]" in rows["model.0"]  # in / out sizes of one batch
    assert "[32, 2]" in rows["model.2"]

    per_event = callbacks_per_event(learn)
    assert per_event["before_fit"] == ["TrainEvalCallback", "Stepper", "Recorder"]  # by order: -10, 30, 50
    assert per_event["after_step"] == ["Stepper"]
    assert "OldStyle" in per_event["after_batch"] and "Stepper" not in per_event["after_batch"]
    assert "before_step" not in per_event  # events nobody subscribes to are left out
    section = text.split("Callbacks per event")[1]
    lines = {line.split()[0]: line.split(None, 1)[1] for line in section.splitlines()[1:] if line.startswith("  ")}
    assert lines["after_step"] == "Stepper" and lines["before_fit"] == "TrainEvalCallback, Stepper, Recorder"
    assert "Lightning callbacks (run by the Trainer): LearningRateMonitor" in text
    short = summary(learn, max_depth=1, with_shapes=False)
    names = [line.split("|")[1].strip() for line in short.splitlines() if line.count("|") >= 4]
    assert names == ["Name", "model", "metrics"] and "In sizes" not in short


def test_summary_bad_max_depth(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    with pytest.raises(ValueError, match="summary: `max_depth` must be an int >= -1"):
        summary(learn, max_depth="all")  # type: ignore[arg-type]


def test_learner_summary_method_is_the_summary(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, cbs=[Stepper()])
    text = learn.summary(max_depth=1, with_shapes=False)
    assert text == summary(learn, max_depth=1, with_shapes=False)
    total = sum(p.numel() for p in learn.model.parameters())
    assert f"{total} " in text and "Total params" in text
    assert "Stepper" in text.split("Callbacks per event")[1]
    with pytest.raises(ValueError, match="max_depth"):
        learn.summary(max_depth=-5)


def test_model_checkpoint_with_a_time_interval_is_refused(tmp_path: Path) -> None:
    import datetime

    from lightning.pytorch.callbacks import ModelCheckpoint

    learn = make_learner(tmp_path)
    ckpt = ModelCheckpoint(train_time_interval=datetime.timedelta(seconds=1))
    with pytest.raises(TypeError, match=r"train_time_interval.*every_n_train_steps"):
        learn.fit(1, cbs=[ckpt])

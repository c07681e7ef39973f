"""Recorder plots render headless to PNG with the right axes and series."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest

from tests.helpers import make_learner


def test_plot_loss_and_sched(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, enable_progress_bar=True)
    with learn.no_bar():
        learn.fit_one_cycle(2, lr_max=1e-2)
    assert learn.trainer.progress_bar_callback is None and learn.trainer_options["enable_progress_bar"] is True
    fig = learn.recorder.plot_loss(skip_start=2)
    ax = fig.axes[0]
    train, valid = ax.get_lines()
    assert list(train.get_xdata()) == list(range(2, 12)) and list(train.get_ydata()) == learn.recorder.losses[2:]
    assert list(valid.get_xdata()) == [6, 12] and list(valid.get_ydata()) == [v[1] for v in learn.recorder.values]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("steps", "loss")
    fig.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    sched = learn.recorder.plot_sched()
    labels = [a.get_ylabel() for a in sched.axes if a.get_visible()]
    assert labels == ["lr", "mom"]
    assert list(sched.axes[0].get_lines()[0].get_ydata()) == pytest.approx(learn.recorder.hps["lr"])
    sched.savefig(tmp_path / "sched.png")
    with pytest.raises(KeyError, match="wd"):
        learn.recorder.plot_sched(["wd"])
    with pytest.raises(ValueError, match="skip_start"):
        learn.recorder.plot_loss(skip_start=-1)

"""fastai's LR finder: exponential schedule, divergence stop, exact restore, suggestions, plot."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure

from bridge import Callback
from bridge.optim import SGD
from callbacks import LRFinder, SuggestionMethod, lr_find, minimum, slide, steep, valley
from tests.helpers import make_data, make_learner


def _snapshot(learn: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt = learn.opt.state_dict()
    opt_state = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()} for k, s in opt["state"].items()}
    return model, {"state": opt_state, "groups": [dict(g) for g in opt["param_groups"]]}


class CountEvents(Callback):
    order = 80

    def before_fit(self) -> None:
        self.events: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.events[name] = self.events.get(name, 0) + 1

    def after_cancel_validate(self) -> None:
        self._count("after_cancel_validate")

    def after_cancel_fit(self) -> None:
        self._count("after_cancel_fit")


def test_lr_find_schedule_restore_and_learner_untouched(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    learn.fit(1, lr=1e-2)  # the optimizer has state (Adam moments) that lr_find must give back
    before = _snapshot(learn)
    cbs_before = list(learn.cbs)
    counter = CountEvents()
    learn.add_cb(counter)
    num_it = 20
    res = learn.lr_find(start_lr=1e-5, end_lr=1e-1, num_it=num_it, stop_div=False, show_plot=False)
    after = _snapshot(learn)
    # bit-identical model and optimizer state (moments, step counts, hyper-parameters)
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1]["groups"] == after[1]["groups"]
    for k, s in before[1]["state"].items():
        for n, t in s.items():
            assert torch.equal(t, after[1]["state"][k][n]) if torch.is_tensor(t) else t == after[1]["state"][k][n]
    learn.remove_cb(counter)
    assert list(learn.cbs) == cbs_before and learn.lr == 1e-3
    # exponential schedule over num_it iterations (6 batches per epoch -> 4 epochs), no validation
    expected = [1e-5 * (1e-1 / 1e-5) ** (i / num_it) for i in range(num_it)]
    assert learn.recorder.lrs == pytest.approx(expected, rel=1e-9)
    assert learn.recorder.hps["lr"] == pytest.approx(expected, rel=1e-9)
    assert len(learn.recorder.losses) == num_it
    # no validation: fastai's rows hold the train loss only; the full rows show nan for valid_loss
    assert len(learn.recorder.values) == 3 and all(len(row) == 1 for row in learn.recorder.values)
    assert all(math.isnan(row[1]) for row in learn.recorder.full_values)
    assert counter.events == {"after_cancel_validate": 3, "after_cancel_fit": 1}
    # the suggestion: fastai's valley on the curve without its first num_it//10 and last 5 points
    lrs = torch.tensor(learn.recorder.lrs[num_it // 10 : -5])
    losses = torch.tensor(learn.recorder.losses[num_it // 10 : -5])
    assert res._fields == ("valley",)
    assert res.valley == valley(lrs, losses, num_it)[0]
    # a later fit trains normally from the restored state
    learn.fit(1)
    assert len(learn.recorder.lrs) == 6


def test_lr_find_stops_when_loss_diverges(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, opt_func=lambda ps, lr: SGD(ps, lr=lr))
    w0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
    num_it = 100
    learn.lr_find(start_lr=1e-3, end_lr=1e5, num_it=num_it, show_plot=False)
    losses = learn.recorder.losses
    assert 6 < len(losses) < num_it  # stopped early
    last, best_before = losses[-1], min(losses[:-1])
    assert math.isnan(last) or last > 4 * best_before * 0.999  # the batch that diverged ...
    assert all(v <= 4 * min(losses[: i + 1]) * 1.001 for i, v in enumerate(losses[:-1]))  # ... and no earlier one
    assert all(torch.equal(w0[k], v) for k, v in learn.model.state_dict().items())


def test_suggestion_functions_closed_form() -> None:
    lrs = [10 ** (-6 + k / 10) for k in range(50)]
    # decreasing over points 0..30, then increasing: the longest valley ends at 30; fastai takes
    # start = end - length = -1, d = 31, index = -1 + int(31/3) + int(31/6) = 14
    losses = [3.0 - k / 20 for k in range(31)] + [1.5 + (k + 1) / 10 for k in range(19)]
    assert valley(lrs, losses, 50) == (pytest.approx(lrs[14]), (pytest.approx(lrs[14]), pytest.approx(losses[14])))
    lr_min = lrs[30]
    assert minimum(lrs, losses, 50) == (pytest.approx(lr_min / 10), (pytest.approx(lr_min), pytest.approx(1.5)))
    # steepest descent per log(lr): the largest drop between consecutive points
    steep_losses = [1.0, 0.95, 0.5, 0.45, 0.4]
    assert steep(lrs[:5], steep_losses, 5) == (pytest.approx(lrs[1]), (pytest.approx(lrs[1]), pytest.approx(0.95)))
    # a straight line has a constant gradient: slide stops at once, lr_diff=15 points from the end
    line = [2.0 - k / 100 for k in range(50)]
    lr, (lr_pt, loss_pt) = slide(lrs, line, 50)
    assert lr == pytest.approx(lrs[-16]) and lr_pt == lr and loss_pt == pytest.approx(line[-16])
    assert SuggestionMethod.Steep is steep
    with pytest.raises(ValueError, match="slide: needs at least 16"):
        slide(lrs[:10], line[:10], 10)
    with pytest.raises(ValueError, match="differ in length"):
        valley(lrs[:3], line[:4], 3)


def test_lr_find_several_suggestions_plot_and_png(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    funcs = (minimum, steep, valley, functools.partial(slide, lr_diff=5))
    res = learn.lr_find(num_it=30, end_lr=1.0, show_plot=True, suggest_funcs=funcs)
    assert res._fields == ("minimum", "steep", "valley", "slide")
    assert all(math.isfinite(v) and 1e-8 <= v <= 1.0 for v in res), res
    fig = learn.recorder.plot_lr_find(suggestions=[(res.valley, 1.0)], nms=["valley"])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    curve = ax.lines[0]
    assert list(curve.get_xdata()) == pytest.approx(learn.recorder.lrs[:-5])
    assert list(curve.get_ydata()) == pytest.approx(learn.recorder.losses[:-5])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["valley"]
    out = tmp_path / "lr_find.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert learn.lr_find(num_it=10, show_plot=False, suggest_funcs=()) is None


def test_lr_finder_state_dict_carries_the_curve(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    cb = LRFinder(num_it=12, end_lr=1e-1)
    learn.fit(2, cbs=cb)
    state = cb.state_dict()
    assert state["lrs"] == learn.recorder.lrs and state["losses"] == learn.recorder.losses
    assert len(state["lrs"]) == 12 and state["hps"]["lr"] == pytest.approx(state["lrs"])
    other = LRFinder()
    other.load_state_dict(state)
    assert other.lrs == state["lrs"] and other.losses == state["losses"] and other.best_loss == state["best_loss"]


def test_lr_finder_per_group_start_lr(tmp_path: Path) -> None:
    from torch import nn

    def splitter(m: nn.Module) -> list[list[nn.Parameter]]:
        return [list(m[0].parameters()), list(m[2].parameters())]

    learn = make_learner(tmp_path, splitter=splitter, data=make_data(n=64))
    seen: list[list[float]] = []

    class Groups(Callback):
        order = 55  # before LRFinder's after_batch, which ends the fit on the last batch

        def after_batch(self) -> None:
            if self.learn.training:
                seen.append([g["lr"] for g in self.learn.opt.param_groups])

    learn.fit(4, cbs=[LRFinder(start_lr=[1e-6, 1e-5], end_lr=[1e-2, 1e-1], num_it=8), Groups()])
    assert len(seen) == 8
    for i, lrs in enumerate(seen):
        a, b = 1e-6 * 1e4 ** (i / 8), 1e-5 * 1e4 ** (i / 8)
        assert lrs == pytest.approx([a, a, b, b], rel=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_it": 1}, "num_it"),
        ({"num_it": 2.5}, "num_it"),
        ({"start_lr": 1.0, "end_lr": 1e-3}, "start_lr"),
        ({"start_lr": 1e-3, "end_lr": 1e-3}, "start_lr"),
        ({"start_lr": -1.0}, "start_lr"),
        ({"end_lr": math.nan}, "end_lr"),
        ({"start_lr": [1e-6, 1e-5], "end_lr": 1.0}, "start_lr"),
    ],
)
def test_lr_finder_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LRFinder(**kwargs)


def test_lr_find_rejects_bad_suggest_funcs(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=16))
    with pytest.raises(TypeError, match="suggest_funcs"):
        lr_find(learn, suggest_funcs=("valley",))  # type: ignore[arg-type]

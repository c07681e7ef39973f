"""fastai's schedules: closed-form values per iteration, discriminative rates, freezing, validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bridge import Callback
from bridge.lr_ranges import expand_to_groups, group_splits, lr_range, n_splits
from bridge.optim import NO_WD, SGD
from callbacks import (
    ParamScheduler,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    combine_scheds,
    combined_cos,
)
from tests.helpers import make_data, make_learner

N_ITER = 6  # make_data(): 192 samples, bs 32


def cos_anneal(a: float, b: float, p: float) -> float:
    """Half-cosine from a to b, written independently of the library's formula."""
    return b + (a - b) * (1 + math.cos(math.pi * p)) / 2


def one_cycle(pos: float, pct: float, lo: float, hi: float, end: float) -> float:
    return cos_anneal(lo, hi, pos / pct) if pos < pct else cos_anneal(hi, end, (pos - pct) / (1 - pct))


class AllGroupLRs(Callback):
    """Learning rate of every param group at each training batch (after the scheduler)."""

    order = 70
    run_valid = False

    def before_fit(self) -> None:
        self.lrs: list[list[float]] = []

    def after_batch(self) -> None:
        self.lrs.append([g["lr"] for g in self.learn.opt.param_groups])


def two_group_splitter(m: nn.Module) -> list[list[nn.Parameter]]:
    return [list(m[0].parameters()), list(m[2].parameters())]


# -- scheduling functions ----------------------------------------------------------------------------
def test_sched_functions_closed_form() -> None:
    for pos in (0.0, 0.3, 0.5, 1.0):
        assert SchedLin(2.0, 6.0)(pos) == pytest.approx(2.0 + 4.0 * pos)
        assert SchedCos(2.0, 6.0)(pos) == pytest.approx(cos_anneal(2.0, 6.0, pos))
        assert SchedNo(2.0, 6.0)(pos) == 2.0
        assert SchedExp(1e-4, 1e-1)(pos) == pytest.approx(math.exp(math.log(1e-4) + pos * math.log(1e3)))
        assert SchedPoly(2.0, 6.0, 3)(pos) == pytest.approx(2.0 + 4.0 * pos**3)
    arr = SchedCos(np.array([1.0, 10.0]), np.array([0.0, 0.0]))(0.5)
    assert arr.tolist() == pytest.approx([0.5, 5.0])


def test_combine_scheds_and_combined_cos() -> None:
    f = combine_scheds([0.25, 0.25, 0.5], [SchedLin(0, 1), SchedNo(7, 7), SchedLin(1, 0)])
    assert [f(p) for p in (0.0, 0.125, 0.3, 0.5, 0.75, 1.0)] == pytest.approx([0, 0.5, 7, 1, 0.5, 0])
    g = combined_cos(0.3, 1.0, 5.0, 0.1)
    for pos in np.linspace(0, 1, 11):
        assert g(float(pos)) == pytest.approx(one_cycle(float(pos), 0.3, 1.0, 5.0, 0.1))
    assert combined_cos(0.0, 1.0, 5.0, 0.1)(0.0) == pytest.approx(5.0)  # no warm-up segment


@pytest.mark.parametrize(
    "pcts,scheds,err",
    [
        ([0.5, 0.4], [SchedNo(1, 1), SchedNo(1, 1)], ValueError),
        ([1.2, -0.2], [SchedNo(1, 1), SchedNo(1, 1)], ValueError),
        ([0.5, 0.5], [SchedNo(1, 1)], ValueError),
        ([1.0], [3.0], TypeError),
    ],
)
def test_combine_scheds_validation(pcts: Any, scheds: Any, err: type[Exception]) -> None:
    with pytest.raises(err, match="combine_scheds"):
        combine_scheds(pcts, scheds)


@pytest.mark.parametrize(
    "scheds", [{}, {"lr": 1e-3}, {"lr": [SchedNo(1, 1), "x"]}, [SchedNo(1, 1)], {3: SchedNo(1, 1)}]
)
def test_param_scheduler_rejects_bad_scheds(scheds: Any) -> None:
    with pytest.raises(TypeError, match="ParamScheduler"):
        ParamScheduler(scheds)


def test_param_scheduler_unknown_hyper_fails_at_before_fit(tmp_path: Any) -> None:
    learn = make_learner(tmp_path)
    with pytest.raises(ValueError, match=r"ParamScheduler.*foo"):
        learn.fit(1, cbs=ParamScheduler({"foo": SchedNo(1.0, 1.0)}))


# -- recipes against closed form ---------------------------------------------------------------------
def test_fit_one_cycle_lrs_and_moms_closed_form(tmp_path: Any) -> None:
    learn = make_learner(tmp_path)
    lr_max, div, div_final, pct = 1e-2, 25.0, 1e5, 0.25
    learn.fit_one_cycle(2, lr_max=lr_max, div=div, div_final=div_final, pct_start=pct)
    n = 2 * N_ITER
    expected_lr = [one_cycle(i / n, pct, lr_max / div, lr_max, lr_max / div_final) for i in range(n)]
    expected_mom = [one_cycle(i / n, pct, 0.95, 0.85, 0.95) for i in range(n)]
    assert learn.recorder.lrs == pytest.approx(expected_lr, rel=1e-9)
    assert learn.recorder.hps["lr"] == pytest.approx(expected_lr, rel=1e-9)
    assert learn.recorder.hps["mom"] == pytest.approx(expected_mom, rel=1e-9)
    assert learn.opt.param_groups[0]["betas"][0] == pytest.approx(expected_mom[-1])  # Adam's beta1 is fastai's mom
    assert not any(isinstance(c, ParamScheduler) for c in learn.cbs)  # only for that fit
    assert learn.lr == 1e-3


def test_fit_one_cycle_default_lr_moms_and_sgd_momentum(tmp_path: Any) -> None:
    learn = make_learner(tmp_path, opt_func=lambda ps, lr: SGD(ps, lr=lr, mom=0.9), lr=3e-3, moms=(0.9, 0.8, 0.7))
    learn.fit_one_cycle(1)
    expected = [one_cycle(i / N_ITER, 0.25, 3e-3 / 25, 3e-3, 3e-3 / 1e5) for i in range(N_ITER)]
    assert learn.recorder.lrs == pytest.approx(expected, rel=1e-9)
    moms = [one_cycle(i / N_ITER, 0.25, 0.9, 0.8, 0.7) for i in range(N_ITER)]
    assert learn.recorder.hps["mom"] == pytest.approx(moms, rel=1e-9)
    assert learn.opt.param_groups[0]["momentum"] == pytest.approx(moms[-1])


def test_fit_flat_cos_and_sgdr_closed_form(tmp_path: Any) -> None:
    learn = make_learner(tmp_path)
    learn.fit_flat_cos(1, lr=4e-3, pct_start=0.5)
    expected = [4e-3 if i / N_ITER < 0.5 else cos_anneal(4e-3, 4e-8, (i / N_ITER - 0.5) / 0.5) for i in range(N_ITER)]
    assert learn.recorder.lrs == pytest.approx(expected, rel=1e-9)

    learn.fit_sgdr(2, 1, lr_max=1e-2)  # cycles of 1 then 2 epochs: 3 epochs
    n = 3 * N_ITER
    expected = []
    for i in range(n):
        pos = i / n
        start, width = (0.0, 1 / 3) if pos < 1 / 3 else (1 / 3, 2 / 3)
        expected.append(cos_anneal(1e-2, 0.0, (pos - start) / width))
    assert learn.recorder.lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert len(learn.recorder.values) == 3


def test_discriminative_lrs_over_splitter_groups(tmp_path: Any) -> None:
    learn = make_learner(tmp_path, splitter=two_group_splitter)
    rec = AllGroupLRs()
    learn.fit_one_cycle(1, lr_max=slice(1e-4, 1e-2), cbs=rec)
    # 2 splitter groups -> 4 torch groups (weights, then bias without weight decay, per group)
    assert [bool(g.get(NO_WD)) for g in learn.opt.param_groups] == [False, True, False, True]
    assert group_splits(learn) == [0, 0, 1, 1]
    for i, lrs in enumerate(rec.lrs):
        f = one_cycle(i / N_ITER, 0.25, 1 / 25, 1.0, 1e-5)
        assert lrs == pytest.approx([1e-4 * f, 1e-4 * f, 1e-2 * f, 1e-2 * f], rel=1e-9)
    assert learn.opt.param_groups[1]["weight_decay"] == 0.0
    learn.fit_one_cycle(1, lr_max=slice(1e-2), cbs=rec)  # slice(stop): stop/10 for all groups but the last
    assert rec.lrs[0] == pytest.approx([1e-3 / 25, 1e-3 / 25, 1e-2 / 25, 1e-2 / 25], rel=1e-9)


def test_lr_range_and_group_mapping(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.Linear(16, 2))

    def splitter(m: nn.Module) -> list[list[nn.Parameter]]:
        return [list(m[0].parameters()), list(m[1].parameters()), list(m[2].parameters())]

    learn = make_learner(tmp_path, model=model, splitter=splitter)
    learn.create_opt()
    # group 0: decayed only; group 1: norm params only (no wd); group 2: weight + bias
    assert [bool(g.get(NO_WD)) for g in learn.opt.param_groups] == [False, True, False, True]
    assert group_splits(learn) == [0, 1, 2, 2]
    assert n_splits(learn) == 3
    assert lr_range(learn, slice(1e-5, 1e-3)) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert lr_range(learn, slice(1e-3)) == pytest.approx([1e-4, 1e-4, 1e-3])
    assert lr_range(learn, 0.1) == 0.1
    assert expand_to_groups(learn, [1, 2, 3]) == [1, 2, 3, 3]
    assert expand_to_groups(learn, [1, 2, 3, 4]) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="2 values for 3 param groups"):
        expand_to_groups(learn, [1, 2])
    # a list of schedules, one per splitter group
    rec = AllGroupLRs()
    learn.fit(1, cbs=[ParamScheduler({"lr": [SchedNo(1e-3, 0), SchedNo(2e-3, 0), SchedLin(0.0, 6e-3)]}), rec])
    assert rec.lrs[3] == pytest.approx([1e-3, 2e-3, 3e-3, 3e-3])


def test_freeze_to_keeps_norm_trainable_and_fine_tune_recipe(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))

    def splitter(m: nn.Module) -> list[list[nn.Parameter]]:
        return [list(m[0].parameters()) + list(m[1].parameters()), list(m[2].parameters())]

    class Snap(Callback):
        order = 70

        def before_fit(self) -> None:
            self.grad_flags = [p.requires_grad for p in self.learn.model.parameters()]
            self.w0 = self.learn.model[0].weight.detach().clone()
            self.bn0 = self.learn.model[1].weight.detach().clone()
            self.first_lrs: list[float] | None = None

        def after_batch(self) -> None:
            if self.first_lrs is None and self.learn.training:
                self.first_lrs = [g["lr"] for g in self.learn.opt.param_groups]

        def after_fit(self) -> None:
            model = self.learn.model
            same_w0, same_bn = torch.equal(self.w0, model[0].weight), torch.equal(self.bn0, model[1].weight)
            self.log = [*getattr(self, "log", []), (self.grad_flags, same_w0, same_bn, self.first_lrs)]

    snap = Snap()
    learn = make_learner(tmp_path, model=model, splitter=splitter, cbs=[snap])
    learn.freeze()
    # linear0 weight/bias frozen; batch-norm weight/bias trainable; last layer trainable
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True, True, True]
    learn.unfreeze()
    assert all(p.requires_grad for p in model.parameters())

    learn.fine_tune(1, base_lr=2e-3, freeze_epochs=1)
    (flags1, w_same1, bn_same1, lrs1), (flags2, w_same2, _, lrs2) = snap.log
    assert flags1 == [False, False, True, True, True, True] and w_same1 and not bn_same1
    assert all(flags2) and not w_same2
    # stage 1: slice(2e-3) -> [2e-4, 2e-3], div 25; stage 2: slice(1e-3/100, 1e-3), div 5 (groups: w, b|bn, w, b)
    assert lrs1 == pytest.approx([2e-4 / 25] * 2 + [2e-3 / 25] * 2, rel=1e-9)
    assert lrs2 == pytest.approx([1e-5 / 5] * 2 + [1e-3 / 5] * 2, rel=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pct_start": 1.5}, "pct_start"),
        ({"pct_start": -0.1}, "pct_start"),
        ({"div": 0}, "div"),
        ({"div_final": -1.0}, "div_final"),
        ({"lr_max": -1e-3}, "lr_max"),
        ({"lr_max": slice(1e-4, 1e-2, 2)}, "lr_max"),
        ({"moms": (0.9, 0.8)}, "moms"),
    ],
)
def test_fit_one_cycle_validation(tmp_path: Any, kwargs: dict[str, Any], match: str) -> None:
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=16))
    with pytest.raises(ValueError, match=match):
        learn.fit_one_cycle(1, **kwargs)


def test_recipe_validation(tmp_path: Any) -> None:
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=16))
    with pytest.raises(ValueError, match="n_cycles"):
        learn.fit_sgdr(0, 1)
    with pytest.raises(ValueError, match="pct_start"):
        learn.fit_flat_cos(1, pct_start=2)
    with pytest.raises(ValueError, match="base_lr"):
        learn.fine_tune(1, base_lr=0)
    with pytest.raises(TypeError, match="freeze_to"):
        learn.freeze_to(1.5)  # type: ignore[arg-type]


def test_param_scheduler_state_roundtrip_and_validate_untouched(tmp_path: Any) -> None:
    sched = ParamScheduler({"lr": SchedLin(1e-3, 2e-3)})
    learn = make_learner(tmp_path, cbs=[sched])
    learn.fit(1)
    hps = list(learn.recorder.hps["lr"])
    assert hps == pytest.approx([1e-3 + 1e-3 * i / N_ITER for i in range(N_ITER)], rel=1e-9)
    learn.validate()  # a validation pass is not a fit: the recorded schedule stays
    assert learn.recorder.hps["lr"] == hps
    other = ParamScheduler({"lr": SchedLin(0, 1)})
    other.load_state_dict(sched.state_dict())
    assert other.hps["lr"] == pytest.approx(hps)

"""The table of bad arguments: every public constructor and function of ``bridge`` and ``callbacks``.

Each row is the call, the exception type, and a regex the message must match: it names
the argument, echoes what was given, and (in most rows) says what is accepted. Rows in
``AT_CONSTRUCTION`` fail when called; rows in ``AT_BEFORE_FIT`` are accepted by the
constructor (they depend on the learner) and fail at ``before_fit`` of a tiny real fit,
before any training step: no batch is seen and the weights are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bridge import SGD, Adam, AvgMetric, Callback, DataBunch, Learner, LightningAdapter
from bridge.precision import set_precision
from callbacks import (
    CSVLogger,
    CutMix,
    EarlyStoppingCallback,
    GradientAccumulation,
    GradientClip,
    LRFinder,
    MixUp,
    ParamScheduler,
    Recorder,
    ReduceLROnPlateau,
    SaveModelCallback,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    TensorBoardCallback,
    TrackerCallback,
    combine_scheds,
    combined_cos,
)
from tests.helpers import make_learner

DS = TensorDataset(torch.randn(8, 8), torch.zeros(8, dtype=torch.long))
S = SchedLin(1e-3, 1e-2)
NAN = math.nan


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(2))]


#: (id, call(tmp_path), exception, regex). Calls taking a learner build a fresh quiet one.
Row = tuple[str, Callable[[Path], Any], type[Exception], str]


def _learn(p: Path, **kw: Any) -> Learner:
    return make_learner(p, enable_checkpointing=False, **kw)


AT_CONSTRUCTION: list[Row] = [
    # -- trackers -------------------------------------------------------------------------------
    ("tracker_monitor_int", lambda p: TrackerCallback(monitor=3), TypeError, r"`monitor`.*metric name.*got 3"),
    ("tracker_monitor_empty", lambda p: TrackerCallback(monitor=""), TypeError, r"`monitor`.*non-empty.*got ''"),
    ("tracker_comp_str", lambda p: TrackerCallback(comp="less"), TypeError, r"`comp`.*np\.less.*got 'less'"),
    (
        "tracker_comp_arity",
        lambda p: TrackerCallback(comp=lambda: True),
        TypeError,
        r"`comp`.*comp\(value, best\).*got <function.*raised TypeError",
    ),
    ("tracker_comp_float", lambda p: TrackerCallback(comp=float), TypeError, r"`comp`.*np\.greater.*float"),
    ("tracker_min_delta_neg", lambda p: TrackerCallback(min_delta=-0.1), ValueError, r"`min_delta`.*>= 0.*-0\.1"),
    ("tracker_min_delta_nan", lambda p: TrackerCallback(min_delta=NAN), ValueError, r"`min_delta`.*finite.*nan"),
    ("tracker_min_delta_str", lambda p: TrackerCallback(min_delta="0"), ValueError, r"`min_delta`.*number.*'0'"),
    ("tracker_reset_on_fit", lambda p: TrackerCallback(reset_on_fit=1), TypeError, r"`reset_on_fit`.*bool.*got 1"),
    ("save_fname_empty", lambda p: SaveModelCallback(fname=""), TypeError, r"`fname`.*non-empty file name.*''"),
    ("save_fname_nul", lambda p: SaveModelCallback(fname="a\x00b"), TypeError, r"`fname`.*no NUL.*'a\\x00b'"),
    ("save_fname_dotdot", lambda p: SaveModelCallback(fname=".."), TypeError, r"`fname`.*not a folder.*'\.\.'"),
    ("save_fname_dir", lambda p: SaveModelCallback(fname="models/"), TypeError, r"`fname`.*'models/'"),
    ("save_fname_none", lambda p: SaveModelCallback(fname=None), TypeError, r"`fname`.*got None"),
    ("save_every_zero", lambda p: SaveModelCallback(every_epoch=0), ValueError, r"`every_epoch`.*int n >= 1.*got 0"),
    ("save_every_float", lambda p: SaveModelCallback(every_epoch=1.5), ValueError, r"`every_epoch`.*bool.*1\.5"),
    ("save_at_end", lambda p: SaveModelCallback(at_end="yes"), TypeError, r"`at_end`.*bool.*'yes'"),
    ("save_with_opt", lambda p: SaveModelCallback(with_opt=None), TypeError, r"`with_opt`.*bool.*None"),
    (
        "save_every_and_at_end",
        lambda p: SaveModelCallback(every_epoch=True, at_end=True),
        ValueError,
        r"`every_epoch` and `at_end` cannot both be set",
    ),
    ("early_patience_neg", lambda p: EarlyStoppingCallback(patience=-1), ValueError, r"`patience`.*int >= 0.*-1"),
    ("early_patience_float", lambda p: EarlyStoppingCallback(patience=2.0), ValueError, r"`patience`.*int.*2\.0"),
    ("early_patience_bool", lambda p: EarlyStoppingCallback(patience=True), ValueError, r"`patience`.*True"),
    ("plateau_factor_one", lambda p: ReduceLROnPlateau(factor=1.0), ValueError, r"`factor`.*> 1.*1\.0"),
    ("plateau_factor_str", lambda p: ReduceLROnPlateau(factor="10"), ValueError, r"`factor`.*number.*'10'"),
    ("plateau_min_lr_neg", lambda p: ReduceLROnPlateau(min_lr=-1e-3), ValueError, r"`min_lr`.*>= 0.*-0\.001"),
    ("plateau_patience_none", lambda p: ReduceLROnPlateau(patience=None), ValueError, r"`patience`.*None"),
    # -- gradients ------------------------------------------------------------------------------
    ("clip_zero", lambda p: GradientClip(max_norm=0), ValueError, r"`max_norm`.*> 0.*got 0"),
    ("clip_negative", lambda p: GradientClip(max_norm=-1.0), ValueError, r"`max_norm`.*> 0.*-1\.0"),
    ("clip_nan", lambda p: GradientClip(max_norm=NAN), ValueError, r"`max_norm`.*nan"),
    ("clip_str", lambda p: GradientClip(max_norm="1"), ValueError, r"`max_norm`.*number.*'1'"),
    ("clip_norm_type", lambda p: GradientClip(norm_type=0), ValueError, r"`norm_type`.*> 0.*inf.*got 0"),
    ("acc_zero", lambda p: GradientAccumulation(n_acc=0), ValueError, r"`n_acc`.*int >= 1.*got 0"),
    ("acc_negative", lambda p: GradientAccumulation(n_acc=-32), ValueError, r"`n_acc`.*-32"),
    ("acc_float", lambda p: GradientAccumulation(n_acc=8.0), ValueError, r"`n_acc`.*int.*8\.0"),
    # -- mixing ---------------------------------------------------------------------------------
    ("mixup_alpha_zero", lambda p: MixUp(alpha=0), ValueError, r"`alpha`.*finite number > 0.*got 0"),
    ("mixup_alpha_neg", lambda p: MixUp(alpha=-1.0), ValueError, r"`alpha`.*> 0.*-1\.0"),
    ("mixup_alpha_inf", lambda p: MixUp(alpha=math.inf), ValueError, r"`alpha`.*finite.*inf"),
    ("mixup_alpha_str", lambda p: MixUp(alpha="0.4"), ValueError, r"`alpha`.*number.*'0\.4'"),
    ("mixup_seed_neg", lambda p: MixUp(seed=-1), ValueError, r"`seed`.*int >= 0 or None.*-1"),
    ("mixup_seed_float", lambda p: MixUp(seed=1.5), ValueError, r"`seed`.*1\.5"),
    ("cutmix_alpha", lambda p: CutMix(alpha=0.0), ValueError, r"CutMix: `alpha`.*> 0.*0\.0"),
    ("cutmix_seed", lambda p: CutMix(seed="x"), ValueError, r"CutMix: `seed`.*'x'"),
    # -- loggers --------------------------------------------------------------------------------
    ("csv_fname_int", lambda p: CSVLogger(fname=3), TypeError, r"`fname`.*file name.*got 3"),
    ("csv_fname_dir", lambda p: CSVLogger(fname="logs/"), TypeError, r"`fname`.*not a folder.*'logs/'"),
    ("csv_fname_dot", lambda p: CSVLogger(fname="."), TypeError, r"`fname`.*not a folder.*'\.'"),
    ("csv_fname_nul", lambda p: CSVLogger(fname="h\x00.csv"), TypeError, r"`fname`.*NUL"),
    ("csv_append", lambda p: CSVLogger(append="no"), TypeError, r"`append`.*bool.*'no'"),
    ("recorder_beta", lambda p: Recorder(beta=1.0), ValueError, r"`beta`.*\[0, 1\).*1\.0"),
    ("recorder_valid_metrics", lambda p: Recorder(valid_metrics=None), TypeError, r"`valid_metrics`.*bool.*None"),
    ("recorder_beta_str", lambda p: Recorder(beta="a"), ValueError, r"`beta`.*number in \[0, 1\).*'a'"),
    ("recorder_beta_bool", lambda p: Recorder(beta=True), ValueError, r"`beta`.*number in \[0, 1\).*True"),
    ("recorder_train_metrics_int", lambda p: Recorder(train_metrics=1), TypeError, r"`train_metrics`.*bool.*got 1"),
    ("recorder_add_time_str", lambda p: Recorder(add_time="no"), TypeError, r"`add_time`.*bool.*'no'"),
    ("tb_log_dir", lambda p: TensorBoardCallback(log_dir=3), TypeError, r"`log_dir`.*folder path.*got 3"),
    ("tb_log_dir_nul", lambda p: TensorBoardCallback(log_dir="a\x00b"), ValueError, r"`log_dir`.*NUL.*'a\\x00b'"),
    ("tb_trace_model", lambda p: TensorBoardCallback(trace_model="y"), TypeError, r"`trace_model`.*bool.*'y'"),
    ("tb_n_preds", lambda p: TensorBoardCallback(n_preds=0), ValueError, r"`n_preds`.*int >= 1.*got 0"),
    ("tb_hist_every", lambda p: TensorBoardCallback(hist_every=-1), ValueError, r"`hist_every`.*or None.*-1"),
    # -- lr finder ------------------------------------------------------------------------------
    ("finder_num_it_one", lambda p: LRFinder(num_it=1), ValueError, r"`num_it`.*int >= 2.*got 1"),
    ("finder_num_it_float", lambda p: LRFinder(num_it=10.0), ValueError, r"`num_it`.*int.*10\.0"),
    ("finder_start_zero", lambda p: LRFinder(start_lr=0), ValueError, r"`start_lr`.*positive finite.*got 0"),
    ("finder_end_neg", lambda p: LRFinder(end_lr=-1), ValueError, r"`end_lr`.*positive.*-1"),
    ("finder_end_nan", lambda p: LRFinder(end_lr=NAN), ValueError, r"`end_lr`.*finite.*nan"),
    (
        "finder_order",
        lambda p: LRFinder(start_lr=1.0, end_lr=0.1),
        ValueError,
        r"`start_lr` must be below `end_lr`.*1\.0.*0\.1",
    ),
    (
        "finder_mixed",
        lambda p: LRFinder(start_lr=[1e-7], end_lr=10),
        ValueError,
        r"`start_lr` and `end_lr`.*lists.*\[1e-07\]",
    ),
    ("finder_stop_div", lambda p: LRFinder(stop_div="yes"), TypeError, r"`stop_div`.*bool.*'yes'"),
    ("lr_find_num_it", lambda p: _learn(p).lr_find(num_it=1, show_plot=False), ValueError, r"`num_it`.*>= 2.*1"),
    (
        "lr_find_suggest",
        lambda p: _learn(p).lr_find(suggest_funcs=["valley"], show_plot=False),
        TypeError,
        r"`suggest_funcs`.*functions f\(lrs, losses, num_it\).*'valley'",
    ),
    # -- schedules ------------------------------------------------------------------------------
    ("sched_lin_start", lambda p: SchedLin("a", 1.0), TypeError, r"SchedLin: `start`.*number.*numpy array.*'a'"),
    ("sched_cos_end_list", lambda p: SchedCos(0.0, [1, 2]), TypeError, r"SchedCos: `end`.*not a list.*\[1, 2\]"),
    ("sched_no_start", lambda p: SchedNo(None, 0), TypeError, r"SchedNo: `start`.*None"),
    (
        "sched_exp_zero",
        lambda p: SchedExp(0, 1.0),
        ValueError,
        r"SchedExp: `start` must be non-zero.*start=0, end=1\.0",
    ),
    ("sched_exp_sign", lambda p: SchedExp(-1.0, 1.0), ValueError, r"SchedExp: .*same sign.*start=-1\.0"),
    ("sched_poly_power", lambda p: SchedPoly(0.0, 1.0, -1), ValueError, r"SchedPoly: `power`.*>= 0.*-1"),
    ("sched_poly_power_str", lambda p: SchedPoly(0.0, 1.0, "2"), ValueError, r"`power`.*number.*'2'"),
    ("combine_pcts_scalar", lambda p: combine_scheds(0.5, [S]), TypeError, r"`pcts`.*list of fractions.*0\.5"),
    ("combine_pcts_str", lambda p: combine_scheds(["a"], [S]), TypeError, r"`pcts`.*numbers.*\['a'\]"),
    ("combine_pcts_sum", lambda p: combine_scheds([0.5, 0.4], [S, S]), ValueError, r"`pcts`.*sum to 1.*0\.4"),
    ("combine_pcts_nan", lambda p: combine_scheds([NAN, 1.0], [S, S]), ValueError, r"`pcts`.*>= 0.*nan"),
    ("combine_scheds_call", lambda p: combine_scheds([1.0], [3.0]), TypeError, r"`scheds`.*callable.*3\.0"),
    ("combine_scheds_type", lambda p: combine_scheds([1.0], S), TypeError, r"`scheds`.*list of schedules"),
    ("combine_lengths", lambda p: combine_scheds([0.5, 0.5], [S]), ValueError, r"`pcts` and `scheds`.*2 and 1"),
    (
        "combined_cos_pct",
        lambda p: combined_cos(1.5, 1.0, 2.0, 0.0),
        ValueError,
        r"combined_cos: `pct`.*\[0, 1\].*1\.5",
    ),
    ("combined_cos_start", lambda p: combined_cos(0.5, "a", 1.0, 0.0), TypeError, r"combined_cos: `start`.*'a'"),
    ("combined_cos_middle", lambda p: combined_cos(0.5, 1.0, None, 0.0), TypeError, r"combined_cos: `middle`.*None"),
    ("param_sched_empty", lambda p: ParamScheduler({}), TypeError, r"`scheds`.*non-empty dict.*\{\}"),
    ("param_sched_list", lambda p: ParamScheduler([S]), TypeError, r"`scheds`.*dict.*\[sched_lin"),
    ("param_sched_value", lambda p: ParamScheduler({"lr": 1e-3}), TypeError, r"`scheds\['lr'\]`.*callable.*0\.001"),
    ("param_sched_key", lambda p: ParamScheduler({3: S}), TypeError, r"keys of `scheds`.*lr, mom.*got 3"),
    # -- fit recipes (checked before anything is trained) --------------------------------------
    ("one_cycle_epochs", lambda p: _learn(p).fit_one_cycle(0), ValueError, r"`n_epoch`.*int >= 1.*got 0"),
    ("one_cycle_lr_neg", lambda p: _learn(p).fit_one_cycle(1, -1e-3), ValueError, r"`lr_max`.*positive.*-0\.001"),
    ("one_cycle_lr_str", lambda p: _learn(p).fit_one_cycle(1, "1e-3"), ValueError, r"`lr_max`.*'1e-3'"),
    (
        "one_cycle_lr_step",
        lambda p: _learn(p).fit_one_cycle(1, slice(1e-3, 1e-2, 2)),
        ValueError,
        r"`lr_max` as a slice.*slice\(start, stop\).*slice\(0\.001, 0\.01, 2\)",
    ),
    (
        "one_cycle_lr_groups",
        lambda p: _learn(p).fit_one_cycle(1, [1e-3, 1e-2, 1e-1]),
        ValueError,
        r"`lr_max`=\[0\.001, 0\.01, 0\.1\].*3 values for 1 param groups",
    ),
    ("one_cycle_div", lambda p: _learn(p).fit_one_cycle(1, div=0), ValueError, r"`div`.*positive.*got 0"),
    ("one_cycle_div_final", lambda p: _learn(p).fit_one_cycle(1, div_final=-1), ValueError, r"`div_final`.*-1"),
    ("one_cycle_div_tiny", lambda p: _learn(p).fit_one_cycle(1, div=1e-137), ValueError, r"`div`=1e-137.*float32"),
    (
        "one_cycle_pct_high",
        lambda p: _learn(p).fit_one_cycle(1, pct_start=1.5),
        ValueError,
        r"`pct_start`.*\[0, 1\].*1\.5",
    ),
    ("one_cycle_pct_low", lambda p: _learn(p).fit_one_cycle(1, pct_start=-0.1), ValueError, r"`pct_start`.*-0\.1"),
    ("one_cycle_wd", lambda p: _learn(p).fit_one_cycle(1, wd=-0.1), ValueError, r"`wd`.*>= 0 or None.*-0\.1"),
    ("one_cycle_wd_str", lambda p: _learn(p).fit_one_cycle(1, wd="0.1"), ValueError, r"`wd`.*'0\.1'"),
    (
        "one_cycle_moms_len",
        lambda p: _learn(p).fit_one_cycle(1, moms=(0.9, 0.8)),
        ValueError,
        r"`moms`.*3 numbers.*\(0\.9, 0\.8\)",
    ),
    (
        "one_cycle_moms_range",
        lambda p: _learn(p).fit_one_cycle(1, moms=(1.5, 0.8, 0.9)),
        ValueError,
        r"`moms`.*\[0, 1\].*1\.5",
    ),
    ("one_cycle_moms_str", lambda p: _learn(p).fit_one_cycle(1, moms=("a", "b", "c")), ValueError, r"`moms`.*'a'"),
    ("flat_cos_epochs", lambda p: _learn(p).fit_flat_cos(0), ValueError, r"fit_flat_cos: `n_epoch`.*got 0"),
    ("flat_cos_lr", lambda p: _learn(p).fit_flat_cos(1, lr=0), ValueError, r"`lr`.*positive.*got 0"),
    ("flat_cos_div_final", lambda p: _learn(p).fit_flat_cos(1, div_final=0), ValueError, r"`div_final`.*got 0"),
    ("flat_cos_pct", lambda p: _learn(p).fit_flat_cos(1, pct_start=2), ValueError, r"`pct_start`.*\[0, 1\].*got 2"),
    ("flat_cos_wd", lambda p: _learn(p).fit_flat_cos(1, wd=-1), ValueError, r"`wd`.*-1"),
    ("sgdr_cycles", lambda p: _learn(p).fit_sgdr(0, 1), ValueError, r"`n_cycles`.*int >= 1.*got 0"),
    ("sgdr_len", lambda p: _learn(p).fit_sgdr(1, 0), ValueError, r"`cycle_len`.*int >= 1.*got 0"),
    ("sgdr_mult", lambda p: _learn(p).fit_sgdr(1, 1, cycle_mult=1.5), ValueError, r"`cycle_mult`.*int.*1\.5"),
    ("sgdr_lr", lambda p: _learn(p).fit_sgdr(1, 1, lr_max=NAN), ValueError, r"`lr_max`.*finite.*nan"),
    ("sgdr_wd", lambda p: _learn(p).fit_sgdr(1, 1, wd=-1), ValueError, r"`wd`.*-1"),
    ("fine_tune_epochs", lambda p: _learn(p).fine_tune(0), ValueError, r"fine_tune: `epochs`.*int >= 1.*got 0"),
    ("fine_tune_base_lr", lambda p: _learn(p).fine_tune(1, base_lr=0), ValueError, r"`base_lr`.*positive.*got 0"),
    ("fine_tune_freeze", lambda p: _learn(p).fine_tune(1, freeze_epochs=-1), ValueError, r"`freeze_epochs`.*>= 0.*-1"),
    ("fine_tune_lr_mult", lambda p: _learn(p).fine_tune(1, lr_mult=0), ValueError, r"`lr_mult`.*got 0"),
    ("fine_tune_pct", lambda p: _learn(p).fine_tune(1, pct_start=2.0), ValueError, r"`pct_start`.*2\.0"),
    ("fine_tune_div", lambda p: _learn(p).fine_tune(1, div=0), ValueError, r"`div`.*got 0"),
    ("fine_tune_lr_max", lambda p: _learn(p).fine_tune(1, lr_max=1e-3), TypeError, r"`lr_max` is set by fine_tune"),
    ("fine_tune_wd", lambda p: _learn(p).fine_tune(1, wd=-1.0), ValueError, r"`wd`.*-1\.0"),
    ("fine_tune_unknown", lambda p: _learn(p).fine_tune(1, devcies=2), TypeError, r"unknown keyword `devcies`"),
    ("freeze_to_float", lambda p: _learn(p).freeze_to(1.5), TypeError, r"freeze_to: `n`.*int.*1\.5"),
    ("freeze_to_str", lambda p: _learn(p).freeze_to("1"), TypeError, r"`n`.*'1'"),
    # -- optimizers, metrics, precision --------------------------------------------------------
    ("adam_lr", lambda p: Adam(_params(), lr=-1), ValueError, r"Adam: `lr`.*>= 0.*-1"),
    ("adam_lr_str", lambda p: Adam(_params(), lr="0.1"), ValueError, r"Adam: `lr`.*finite number.*'0\.1'"),
    ("adam_mom", lambda p: Adam(_params(), mom=1.0), ValueError, r"`mom`.*\[0, 1\).*1\.0"),
    ("adam_sqr_mom", lambda p: Adam(_params(), sqr_mom=-0.1), ValueError, r"`sqr_mom`.*\[0, 1\).*-0\.1"),
    ("adam_eps", lambda p: Adam(_params(), eps=-1e-8), ValueError, r"`eps`.*>= 0.*-1e-08"),
    ("adam_wd", lambda p: Adam(_params(), wd=NAN), ValueError, r"`wd`.*finite.*nan"),
    ("adam_decouple", lambda p: Adam(_params(), decouple_wd="yes"), TypeError, r"`decouple_wd`.*bool.*'yes'"),
    ("sgd_lr", lambda p: SGD(_params(), lr=NAN), ValueError, r"SGD: `lr`.*finite.*nan"),
    ("sgd_mom", lambda p: SGD(_params(), mom=-0.9), ValueError, r"SGD: `mom`.*>= 0.*-0\.9"),
    ("sgd_wd_bool", lambda p: SGD(_params(), wd=True), ValueError, r"SGD: `wd`.*True"),
    ("avg_metric_func", lambda p: AvgMetric(3), TypeError, r"`func`.*function f\(pred, \*yb\).*got 3"),
    ("avg_metric_class", lambda p: AvgMetric(Recorder), TypeError, r"`func`.*Recorder"),
    ("avg_metric_name", lambda p: AvgMetric(torch.mean, name=""), TypeError, r"`name`.*non-empty str.*''"),
    (
        "avg_metric_returns_none",
        lambda p: make_learner(p, metrics=[lambda pred, y: None]).fit(1),
        TypeError,
        r"`func` must return a number or a tensor.*NoneType",
    ),
    (
        "precision_name",
        lambda p: set_precision(_learn(p), "fp16"),
        ValueError,
        r"`precision` must be one of.*16-mixed.*'fp16'",
    ),
    # -- bridge (core): Learner, fit, DataBunch, LightningAdapter -------------------------------
    ("learner_opt_func", lambda p: make_learner(p, opt_func=3), TypeError, r"`opt_func`.*callable.*got 3"),
    ("learner_splitter", lambda p: make_learner(p, splitter="last"), TypeError, r"`splitter`.*callable.*'last'"),
    (
        "learner_lr_slice",
        lambda p: make_learner(p, lr=slice(1e-3)),
        TypeError,
        r"`lr` as a slice.*fit_one_cycle with a splitter",
    ),
    (
        "fit_lr_slice_step",
        lambda p: _learn(p).fit(1, lr=slice(1e-4, 1e-3, 2)),
        ValueError,
        r"fit: `lr` as a slice.*slice\(start, stop\)",
    ),
    ("learner_wd_str", lambda p: make_learner(p, wd="0.1"), ValueError, r"`wd`.*>= 0 or None.*'0\.1'"),
    ("learner_lr_neg", lambda p: make_learner(p, lr=-1e-3), ValueError, r"`lr`.*finite number >= 0.*got -0\.001"),
    ("learner_metric_none", lambda p: make_learner(p, metrics=[None]), TypeError, r"`metrics\[0\]`.*NoneType"),
    (
        "fit_resume_and_path",
        lambda p: _learn(p).fit(1, resume=True, ckpt_path="x.ckpt"),
        ValueError,
        r"`resume=True` or `ckpt_path",
    ),
    ("fit_n_epoch_str", lambda p: _learn(p).fit("2"), ValueError, r"`n_epoch`.*int >= 1.*'2'"),
    (
        "databunch_c",
        lambda p: DataBunch(DataLoader(DS), DataLoader(DS), c=0),
        ValueError,
        r"`c`.*positive int or None.*got 0",
    ),
    (
        "databunch_n_inp",
        lambda p: DataBunch(DataLoader(DS), DataLoader(DS), n_inp=0),
        ValueError,
        r"`n_inp`.*int >= 1.*got 0",
    ),
    (
        "databunch_test_dl",
        lambda p: DataBunch(DataLoader(DS), DataLoader(DS), test_dl=DS),
        TypeError,
        r"`test_dl`.*DataLoader.*TensorDataset",
    ),
    (
        "from_datasets_val_bs",
        lambda p: DataBunch.from_datasets(DS, DS, val_bs=0),
        ValueError,
        r"`val_bs`.*int >= 1.*got 0",
    ),
    ("from_datasets_bs_float", lambda p: DataBunch.from_datasets(DS, DS, bs=8.0), ValueError, r"`bs`.*int >= 1.*8\.0"),
    (
        "from_datasets_workers",
        lambda p: DataBunch.from_datasets(DS, DS, num_workers=-1),
        ValueError,
        r"`num_workers`.*>= 0.*-1",
    ),
    ("adapter_loss", lambda p: LightningAdapter(loss_func=3), TypeError, r"`loss_func`.*callable or None.*int"),
    ("adapter_n_inp", lambda p: LightningAdapter(n_inp=0), ValueError, r"`n_inp`.*int >= 1.*got 0"),
    ("adapter_split", lambda p: LightningAdapter(split=lambda b: b), ValueError, r"both `split` and `join`"),
    ("callback_no_events", lambda p: _learn(p).add_cb(object()), TypeError, r"object defines no known event method"),
    ("learner_path_int", lambda p: make_learner(p, path=3), TypeError, r"`path`.*str or os\.PathLike.*got int"),
    ("learner_path_nul", lambda p: make_learner(p, path="a\x00b"), ValueError, r"`path`.*without NUL.*'a\\x00b'"),
    ("learner_model_dir_none", lambda p: make_learner(p, model_dir=None), TypeError, r"`model_dir`.*got NoneType"),
    (
        "learner_moms_short",
        lambda p: make_learner(p, moms=(0.9,)),
        ValueError,
        r"`moms` must be 3 numbers in \[0, 1\] \(start, middle, end\), got \(0\.9,\)",
    ),
    ("learner_moms_range", lambda p: make_learner(p, moms=(0.9, 1.5, 0.9)), ValueError, r"`moms`.*1\.5"),
    ("learner_moms_str", lambda p: make_learner(p, moms="abc"), ValueError, r"`moms`.*'abc'"),
    ("learner_wd_nan", lambda p: make_learner(p, wd=NAN), ValueError, r"Learner: `wd`.*finite.*>= 0 or None.*nan"),
    ("learner_wd_inf", lambda p: make_learner(p, wd=math.inf), ValueError, r"Learner: `wd`.*finite.*inf"),
    ("fit_wd_str", lambda p: _learn(p).fit(1, wd="a"), ValueError, r"fit: `wd`.*finite number >= 0 or None.*'a'"),
    ("fit_wd_neg", lambda p: _learn(p).fit(1, wd=-1e-2), ValueError, r"fit: `wd`.*-0\.01"),
    ("fit_ckpt_path_int", lambda p: _learn(p).fit(1, ckpt_path=3), TypeError, r"fit: `ckpt_path`.*path.*got int"),
    (
        "fit_ckpt_path_missing",
        lambda p: _learn(p).fit(1, ckpt_path=p / "nope.ckpt"),
        FileNotFoundError,
        r"fit: `ckpt_path` '.*nope\.ckpt' is not a checkpoint file.*'last', 'best', 'hpc', 'registry'",
    ),
    ("fit_ckpt_path_dir", lambda p: _learn(p).fit(1, ckpt_path=str(p)), FileNotFoundError, r"`ckpt_path`.*not a"),
    (
        "learner_splitter_arity",
        lambda p: _learn(p, splitter=lambda: []).fit(1),
        TypeError,
        r"Learner: `splitter`\(model\) must return lists of parameters: .*takes 0 positional",
    ),
    (
        "learner_splitter_not_lists",
        lambda p: _learn(p, splitter=lambda m: 3).fit(1),
        TypeError,
        r"`splitter`\(model\) must return lists of parameters: 'int' object is not iterable",
    ),
    (
        "learner_splitter_items",
        lambda p: _learn(p, splitter=lambda m: [[1.0]]).fit(1),
        TypeError,
        r"`splitter`\(model\) must return lists of parameters, got a float",
    ),
    (
        "learner_opt_func_signature",
        lambda p: _learn(p, opt_func=lambda params: None).fit(1),
        TypeError,
        r"`opt_func` must be callable as opt_func\(param_groups, lr=\.\.\.\): .*unexpected keyword argument 'lr'",
    ),
    (
        "learner_loss_print",
        lambda p: _learn(p, loss_func=print).fit(1),
        TypeError,
        r"Learner: `loss_func` must return a tensor, got NoneType",
    ),
    (
        "learner_loss_float",
        lambda p: _learn(p, loss_func=lambda pred, y: 0.5).fit(1),
        TypeError,
        r"`loss_func` must return a tensor, got float",
    ),
    (
        "learner_loss_arity",
        lambda p: _learn(p, loss_func=lambda pred: pred.sum()).fit(1),
        TypeError,
        r"`loss_func`\(pred, \*yb\) raised TypeError: .*takes 1 positional argument",
    ),
    (
        "validate_loss_float",
        lambda p: _learn(p, loss_func=lambda pred, y: 0.5).validate(),
        TypeError,
        r"`loss_func` must return a tensor, got float",
    ),
    ("learner_cbs_int", lambda p: make_learner(p, cbs=[3]), TypeError, r"^`cbs`: int defines no known event method"),
    ("fit_cbs_int", lambda p: _learn(p).fit(1, cbs=[3]), TypeError, r"^`cbs`: int defines no known event method"),
    ("adapter_cbs_int", lambda p: LightningAdapter(cbs=[3]), TypeError, r"^`cbs`: int defines no known event method"),
    (
        "from_datasets_collate",
        lambda p: DataBunch.from_datasets(DS, DS, collate_fn=0),
        TypeError,
        r"`collate_fn` must be callable.*or None, got 0",
    ),
    (
        "from_datasets_workers_bool",
        lambda p: DataBunch.from_datasets(DS, DS, num_workers=True),
        ValueError,
        r"`num_workers`.*int >= 0.*True",
    ),
    ("from_datasets_str", lambda p: DataBunch.from_datasets("abc", DS), TypeError, r"`train_ds`.*Dataset.*str 'abc'"),
    (
        "from_datasets_0d_tensor",
        lambda p: DataBunch.from_datasets(DS, torch.tensor(3.0)),
        TypeError,
        r"`valid_ds` must be a torch Dataset with a length, got Tensor",
    ),
    ("from_datasets_shuffle", lambda p: DataBunch.from_datasets(DS, DS, shuffle="y"), TypeError, r"`shuffle`.*bool"),
]


class CountBatches(Callback):
    """Counts every batch event, so a row can assert that nothing was trained."""

    order = -100

    def __init__(self) -> None:
        self.n = 0

    def before_batch(self) -> None:
        self.n += 1


def _lambda_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pred, y)


#: (id, callback, learner keywords, exception, regex): accepted at construction, refused at before_fit.
AT_BEFORE_FIT: list[tuple[str, Callable[[], Any], dict[str, Any], type[Exception], str]] = [
    (
        "early_unknown_monitor",
        lambda: EarlyStoppingCallback(monitor="accuracy"),
        {},
        ValueError,
        r"(?m)EarlyStoppingCallback: `monitor`='accuracy' is not recorded; available: train_loss, valid_loss$",
    ),
    (
        "save_unknown_monitor",
        lambda: SaveModelCallback(monitor="acc"),
        {},
        ValueError,
        r"`monitor`='acc'.*available: train_loss, valid_loss",
    ),
    (
        "plateau_unknown_monitor",
        lambda: ReduceLROnPlateau(monitor="val_loss"),
        {},
        ValueError,
        r"`monitor`='val_loss'.*available",
    ),
    (
        "tracker_monitor_with_metric",
        lambda: TrackerCallback(monitor="error_rate"),
        {"metrics": [AvgMetric(lambda p, y: (p.argmax(-1) != y).float().mean(), name="err")]},
        ValueError,
        r"(?m)`monitor`='error_rate'.*available: train_loss, valid_loss, err$",
    ),
    (
        "sched_unknown_hyper",
        lambda: ParamScheduler({"foo": SchedNo(1.0, 1.0)}),
        {},
        ValueError,
        r"`scheds\['foo'\]`.*no hyper-parameter for `foo`.*Accepted:.*lr, mom, sqr_mom, wd, eps",
    ),
    (
        "sched_bad_callable",
        lambda: ParamScheduler({"lr": lambda: 1e-3}),
        {},
        TypeError,
        r"`scheds\['lr'\]`.*takes 0 positional",
    ),
    (
        "sched_too_many_groups",
        lambda: ParamScheduler({"lr": [SchedNo(1e-3, 1e-3)] * 3}),
        {},
        ValueError,
        r"`scheds\['lr'\]`.*3 values for 1 param groups",
    ),
    (
        "sched_returns_str",
        lambda: ParamScheduler({"lr": lambda pos: "fast"}),
        {},
        ValueError,
        r"`scheds\['lr'\]`.*'fast'",
    ),
    (
        "finder_lists_vs_groups",
        lambda: LRFinder(start_lr=[1e-7, 1e-6, 1e-5], end_lr=[1.0, 10.0, 10.0]),
        {},
        ValueError,
        r"LRFinder: `start_lr`/`end_lr`.*one value per param group.*3 values for 1 param groups",
    ),
    (
        "mixup_loss_without_reduction",
        lambda: MixUp(),
        {"loss_func": _lambda_loss},
        TypeError,
        r"MixUp/CutMix: cannot compute the loss `_lambda_loss` per sample.*Accepted:.*reduction",
    ),
    (
        "mixup_no_loss",
        lambda: MixUp(),
        {"loss_func": lambda pred, y: F.cross_entropy(pred, y)},
        TypeError,
        r"cannot compute the loss `.*<lambda>` per sample",
    ),
]


@pytest.mark.parametrize("name,call,exc,match", AT_CONSTRUCTION, ids=[r[0] for r in AT_CONSTRUCTION])
def test_bad_argument_fails_with_clear_message(
    tmp_path: Path, name: str, call: Callable[[Path], Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        call(tmp_path)


@pytest.mark.parametrize("name,make_cb,learn_kw,exc,match", AT_BEFORE_FIT, ids=[r[0] for r in AT_BEFORE_FIT])
def test_bad_argument_fails_at_before_fit_before_any_step(
    tmp_path: Path,
    name: str,
    make_cb: Callable[[], Any],
    learn_kw: dict[str, Any],
    exc: type[Exception],
    match: str,
) -> None:
    cb = make_cb()  # accepted: what is wrong depends on the learner
    learn = make_learner(tmp_path, enable_checkpointing=False, **learn_kw)
    counter = CountBatches()
    before = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(exc, match=match):
        learn.fit(1, cbs=[cb, counter])
    assert counter.n == 0
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters(), strict=True))


def test_table_covers_every_exported_callback_name() -> None:
    """Every public name of ``callbacks`` that takes arguments has a row (or is a plain function/plot)."""
    import callbacks

    rows = " ".join(r[0] for r in AT_CONSTRUCTION) + " " + " ".join(r[0] for r in AT_BEFORE_FIT)
    prefixes = {
        "CSVLogger": "csv_",
        "CutMix": "cutmix_",
        "EarlyStoppingCallback": "early_",
        "GradientAccumulation": "acc_",
        "GradientClip": "clip_",
        "LRFinder": "finder_",
        "MixUp": "mixup_",
        "ParamScheduler": "param_sched_",
        "Recorder": "recorder_",
        "ReduceLROnPlateau": "plateau_",
        "SaveModelCallback": "save_",
        "SchedCos": "sched_cos",
        "SchedExp": "sched_exp",
        "SchedLin": "sched_lin",
        "SchedNo": "sched_no",
        "SchedPoly": "sched_poly",
        "TensorBoardCallback": "tb_",
        "TrackerCallback": "tracker_",
        "combine_scheds": "combine_",
        "combined_cos": "combined_cos",
        "fine_tune": "fine_tune_",
        "fit_flat_cos": "flat_cos_",
        "fit_one_cycle": "one_cycle_",
        "fit_sgdr": "sgdr_",
        "lr_find": "lr_find_",
    }
    # No arguments to get wrong, or a plotting/suggestion helper fed by lr_find itself.
    without = {
        "TerminateOnNaNCallback",
        "MixHandler",
        "SuggestionMethod",
        "plot_lr_find",
        "minimum",
        "slide",
        "steep",
        "valley",
    }
    assert set(callbacks.__all__) == set(prefixes) | without
    missing = [name for name, prefix in prefixes.items() if prefix not in rows]
    assert not missing

"""Random values for every argument of the public constructors: a clear error, or a fit that works.

For each target (a callback class, a schedule factory, a fit recipe, an optimizer...) one
argument at a time gets a random value (ints, floats with nan/inf, strings, None, bools,
lists, tuples, slices, numpy scalars, tensors, plain objects) while the others keep their
defaults. Property: the call either raises ``TypeError``/``ValueError`` whose message names
the argument, or succeeds; when it succeeds, a tiny real fit with the result (2 batches,
3 steps, on one shared learner) runs through, or fails at ``before_fit`` with a
``TypeError``/``ValueError`` naming the argument: never an unrelated error from deep inside.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bridge import SGD, Adam, AvgMetric, DataBunch, Learner
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
    fine_tune,
    fit_flat_cos,
    fit_one_cycle,
    fit_sgdr,
    lr_find,
)
from tests.helpers import QUIET, make_learner, make_model

MAX_EXAMPLES = 40

#: Cheap fits: 2 training batches, 1 validation batch, at most 3 optimizer steps.
TINY = dict(limit_train_batches=2, limit_val_batches=1, max_steps=3)


class Opaque:
    """Some object of no expected kind."""

    def __repr__(self) -> str:
        return "Opaque()"


#: Values of every kind; names are kept to a safe alphabet (no leading '/': nothing lands outside tmp).
#: Finite floats stay within +-1e30: a learning rate beyond float32's range (~3.4e38) overflows inside
#: torch's optimizer step, a limit this test does not cover.
WEIRD: st.SearchStrategy[Any] = st.one_of(
    st.integers(-5, 40),
    st.floats(min_value=-1e30, max_value=1e30),
    st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 1e-300, 1e30, math.nan, math.inf, -math.inf]),
    st.text(alphabet="ab._-\x00 ", max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.floats(-2, 2), max_size=3),
    st.tuples(st.integers(-2, 2), st.integers(-2, 2)),
    st.builds(Opaque),
    st.sampled_from([slice(1e-3), slice(1e-5, 1e-3), slice(None), np.float64(0.5), np.int64(3), torch.tensor(0.5)]),
    st.sampled_from([{}, {"lr": 1}, print, float, np.less, [SchedLin(0, 1)]]),
)


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


@dataclass
class Target:
    """``make(learn, **{arg: value})``, how to exercise what it returned, and some valid values per argument."""

    name: str
    make: Callable[..., Any]
    valid: dict[str, list[Any]]
    use: str = "cb"  # "cb": fit with it as a callback; "sched": fit with ParamScheduler({"lr": it});
    # "opt": fit with opt_func=partial(it, ...); "metric": fit with it as a metric; "done": the call was the fit;
    # "learner": fit the Learner it built
    skip_fit: Callable[[str, Any], bool] = field(default=lambda arg, value: False)
    #: another name an error may give the argument by (the object the target built from it)
    aliases: dict[str, str] = field(default_factory=dict)


def _lf(learn: Learner, **kw: Any) -> Any:
    return kw


def _cb(cls: type) -> Callable[..., Any]:
    return lambda learn, **kw: cls(**kw)


def _recipe(f: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    return lambda learn, **kw: f(learn, *args, **{**TINY, **kw})


TARGETS: list[Target] = [
    Target(
        "TrackerCallback",
        _cb(TrackerCallback),
        {
            "monitor": ["valid_loss", "train_loss"],
            "comp": [np.less, np.greater],
            "min_delta": [0.0, 0.1],
            "reset_on_fit": [True],
        },
    ),
    Target(
        "SaveModelCallback",
        _cb(SaveModelCallback),
        {
            "monitor": ["valid_loss"],
            "comp": [np.less],
            "min_delta": [0.0],
            "fname": ["model", "best"],
            "every_epoch": [False, True, 2],
            "at_end": [False],
            "with_opt": [False, True],
            "reset_on_fit": [True, False],
        },
    ),
    Target(
        "EarlyStoppingCallback",
        _cb(EarlyStoppingCallback),
        {
            "monitor": ["valid_loss"],
            "comp": [np.less],
            "min_delta": [0.0],
            "patience": [0, 1, 3],
            "reset_on_fit": [True],
        },
    ),
    Target(
        "ReduceLROnPlateau",
        _cb(ReduceLROnPlateau),
        {"patience": [0, 2], "factor": [2.0, 10], "min_lr": [0, 1e-7], "min_delta": [0.0], "monitor": ["valid_loss"]},
    ),
    Target("GradientClip", _cb(GradientClip), {"max_norm": [1.0, 0.1, math.inf], "norm_type": [2.0, 1, math.inf]}),
    Target("GradientAccumulation", _cb(GradientAccumulation), {"n_acc": [1, 32, 64]}),
    Target("MixUp", _cb(MixUp), {"alpha": [0.4, 1.0], "seed": [None, 0, 7]}),
    Target("CutMix", _cb(CutMix), {"alpha": [1.0], "seed": [None, 3]}, skip_fit=lambda a, v: True),
    Target("CSVLogger", _cb(CSVLogger), {"fname": ["history.csv", "sub/h.csv"], "append": [False, True]}),
    Target(
        "LRFinder",
        _cb(LRFinder),
        {"start_lr": [1e-7, 1e-3], "end_lr": [10, 1.0], "num_it": [2, 10, 100], "stop_div": [True, False]},
    ),
    Target(
        "ParamScheduler", _cb(ParamScheduler), {"scheds": [{"lr": SchedLin(1e-3, 1e-2)}, {"mom": SchedNo(0.9, 0.9)}]}
    ),
    Target(
        "SchedLin",
        lambda learn, **kw: SchedLin(**{"start": 1e-3, "end": 1e-2, **kw}),
        {"start": [1e-3], "end": [0.0]},
        use="sched",
    ),
    Target(
        "SchedCos",
        lambda learn, **kw: SchedCos(**{"start": 1e-3, "end": 1e-2, **kw}),
        {"start": [1e-3], "end": [0.0]},
        use="sched",
    ),
    Target(
        "SchedNo",
        lambda learn, **kw: SchedNo(**{"start": 1e-3, "end": 1e-2, **kw}),
        {"start": [1e-3], "end": [0.0]},
        use="sched",
    ),
    Target(
        "SchedExp",
        lambda learn, **kw: SchedExp(**{"start": 1e-3, "end": 1e-2, **kw}),
        {"start": [1e-3], "end": [1.0]},
        use="sched",
    ),
    Target(
        "SchedPoly",
        lambda learn, **kw: SchedPoly(**{"start": 1e-3, "end": 1e-2, "power": 2, **kw}),
        {"start": [1e-3], "end": [0.0], "power": [0.5, 2, 1]},
        use="sched",
    ),
    Target(
        "combine_scheds",
        lambda learn, **kw: combine_scheds(
            **{"pcts": [0.3, 0.7], "scheds": [SchedLin(1e-3, 1e-2), SchedCos(1e-2, 1e-4)], **kw}
        ),
        {"pcts": [[0.5, 0.5], (0.0, 1.0)]},
        use="sched",
    ),
    Target(
        "combined_cos",
        lambda learn, **kw: combined_cos(**{"pct": 0.25, "start": 1e-4, "middle": 1e-2, "end": 1e-6, **kw}),
        {"pct": [0.0, 0.5, 1.0], "start": [1e-3], "middle": [1e-2], "end": [0.0]},
        use="sched",
    ),
    Target(
        "fit_one_cycle",
        lambda learn, **kw: fit_one_cycle(learn, **{"n_epoch": 1, **TINY, **kw}),
        {
            "n_epoch": [1, 2],
            "lr_max": [None, 1e-2, slice(1e-3), [1e-3]],
            "div": [25.0, 1],
            "div_final": [1e5],
            "pct_start": [0.0, 0.25, 1.0],
            "wd": [None, 0.0, 0.1],
            "moms": [None, (0.95, 0.85, 0.95)],
            "reset_opt": [False, True],
        },
        use="done",
    ),
    Target(
        "fit_flat_cos",
        lambda learn, **kw: fit_flat_cos(learn, **{"n_epoch": 1, **TINY, **kw}),
        {
            "n_epoch": [1],
            "lr": [None, 1e-3, slice(1e-2)],
            "div_final": [1e5],
            "pct_start": [0.75, 0.0],
            "wd": [None, 0.01],
        },
        use="done",
    ),
    Target(
        "fit_sgdr",
        lambda learn, **kw: fit_sgdr(learn, **{"n_cycles": 2, "cycle_len": 1, **TINY, **kw}),
        {"n_cycles": [1, 2], "cycle_len": [1, 2], "lr_max": [None, 1e-3], "cycle_mult": [1, 2], "wd": [None, 0.0]},
        use="done",
    ),
    Target(
        "fine_tune",
        lambda learn, **kw: fine_tune(learn, **{"epochs": 1, **TINY, **kw}),
        {
            "epochs": [1],
            "base_lr": [2e-3],
            "freeze_epochs": [0, 1],
            "lr_mult": [100, 1],
            "pct_start": [0.3],
            "div": [5.0],
        },
        use="done",
    ),
    Target(
        "lr_find",
        lambda learn, **kw: lr_find(learn, **{"num_it": 6, "show_plot": False, **TINY, **kw}),
        {"start_lr": [1e-7], "end_lr": [10, 1.0], "num_it": [6, 10], "stop_div": [True], "show_plot": [False]},
        use="done",
    ),
    Target(
        "Adam",
        lambda learn, **kw: kw,
        {
            "lr": [1e-3],
            "mom": [0.9, 0.0],
            "sqr_mom": [0.99],
            "eps": [1e-5, 0.0],
            "wd": [0.01, 0.0],
            "decouple_wd": [True, False],
        },
        use="opt:Adam",
    ),
    Target("SGD", lambda learn, **kw: kw, {"lr": [1e-3], "mom": [0.0, 0.9], "wd": [0.0, 1e-4]}, use="opt:SGD"),
    Target(
        "AvgMetric",
        lambda learn, **kw: AvgMetric(**{"func": _accuracy, **kw}),
        {"func": [_accuracy], "name": [None, "acc"]},
        use="metric",
    ),
    Target("freeze_to", lambda learn, **kw: learn.freeze_to(**kw), {"n": [0, -1, 1]}, use="done"),
    Target(
        "Learner",
        lambda learn, **kw: Learner(
            learn.dls,
            make_model(),
            **{"loss_func": nn.CrossEntropyLoss(), "path": learn.path, "enable_checkpointing": False, **QUIET, **kw},
        ),
        {
            "loss_func": [nn.CrossEntropyLoss()],
            "opt_func": [Adam, SGD],
            "lr": [1e-3, 0.1],
            "splitter": [lambda m: [list(m.parameters())]],
            "cbs": [None, []],
            "metrics": [None, [_accuracy]],
            "path": ["run"],
            "model_dir": ["models", "m"],
            "wd": [None, 0.0, 0.1],
            "moms": [(0.95, 0.85, 0.95), [0.9, 0.9, 0.9]],
        },
        use="learner",
        # A plain function in `metrics` becomes AvgMetric(func): its failures name AvgMetric and `func`.
        aliases={"metrics": "AvgMetric"},
        # A numpy ufunc as loss_func fails inside numpy (a tensor that requires grad), its own error.
        skip_fit=lambda arg, value: arg == "loss_func" and isinstance(value, np.ufunc),
    ),
    Target(
        "fit",
        lambda learn, **kw: learn.fit(**{"n_epoch": 1, **TINY, **kw}),
        {
            "n_epoch": [1, 2],
            "lr": [None, 1e-3],
            "wd": [None, 0.0, 0.01],
            "cbs": [None, []],
            "reset_opt": [False, True],
            "ckpt_path": [None],
        },
        use="done",
    ),
    Target(
        "DataBunch.from_datasets",
        lambda learn, **kw: DataBunch.from_datasets(
            **{"train_ds": learn.dls.train_ds, "valid_ds": learn.dls.valid_ds, **kw}
        ),
        {
            "test_ds": [None],
            "bs": [1, 64],
            "val_bs": [None, 3],
            "num_workers": [0],
            "shuffle": [True, False],
            "drop_last": [False, True],
            "collate_fn": [None],
            "pin_memory": [False],
            "c": [None, 2],
            "n_inp": [1],
        },
        use="done",  # a collate_fn that fails is the user's own function failing at the first batch
    ),
    Target("Recorder", lambda learn, **kw: Recorder(**kw), {"add_time": [True], "beta": [0.0, 0.98]}, use="done"),
    Target(
        "TensorBoardCallback",
        _cb(TensorBoardCallback),
        {
            "log_dir": [None],
            "trace_model": [False, True],
            "log_preds": [False, True],
            "n_preds": [1, 9],
            "hist_every": [None, 1, 3],
            "log_images": [False],
            "n_images": [1, 8],
        },
        skip_fit=lambda arg, value: arg == "log_dir",  # relative folders would land in the working directory
    ),
]


def names_arg(exc: BaseException, arg: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])", str(exc)) is not None


def exercise(target: Target, learn: Learner, arg: str, value: Any) -> None:
    """The property for one (target, argument, value); raises AssertionError when it does not hold."""
    kw = {arg: value}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = target.make(learn, **kw)
            if target.use == "done" or target.skip_fit(arg, value):
                return
            if target.use == "cb":
                learn.fit(1, cbs=[made], **TINY)
            elif target.use == "sched":
                learn.fit(1, cbs=[ParamScheduler({"lr": made})], **TINY)
            elif target.use == "metric":
                learn.metrics = [made]
                learn.fit(1, **TINY)
            elif target.use == "learner":
                with contextlib.chdir(learn.path):  # a relative `path` stays in the temporary folder
                    made.fit(1, **TINY)
            elif target.use.startswith("opt:"):
                func = {"Adam": Adam, "SGD": SGD}[target.use[4:]]
                func([nn.Parameter(torch.zeros(2))], **made)  # the constructor itself
                learn.opt_func = lambda params, lr: func(params, **{"lr": lr, **made})
                learn.fit(1, reset_opt=True, **TINY)
    except (TypeError, ValueError, FileNotFoundError) as exc:  # FileNotFoundError: fit's `ckpt_path`
        named = names_arg(exc, arg) or (arg in target.aliases and names_arg(exc, target.aliases[arg]))
        assert named, f"{target.name}({arg}={value!r}): {type(exc).__name__} does not name `{arg}`: {exc}"
    except Exception as exc:
        raise AssertionError(f"{target.name}({arg}={value!r}) failed with {type(exc).__name__}: {exc}") from exc
    finally:
        learn.metrics = []
        learn.opt_func = Adam
        learn.opt = None
        for p in learn.model.parameters():
            p.requires_grad_(True)


@pytest.fixture(scope="module")
def learn(tmp_path_factory: pytest.TempPathFactory) -> Learner:
    return make_learner(tmp_path_factory.mktemp("fuzz"), enable_checkpointing=False)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_random_arguments_fail_clearly_or_train(target: Target, learn: Learner) -> None:
    args = sorted(target.valid)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        arg = data.draw(st.sampled_from(args), label="arg")
        valid = target.valid[arg]
        value = data.draw(st.one_of(WEIRD, st.sampled_from(valid)) if valid else WEIRD, label="value")
        exercise(target, learn, arg, value)

    run()

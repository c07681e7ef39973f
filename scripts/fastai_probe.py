"""Probe: fastai 2.8.12's own callbacks on fastlight's Learner, with fastai's Learner as the oracle.

Usage, from the repository root (fastai installed as `.ci/run` does)::

    python scripts/fastai_probe.py            # every case: PASS / FAIL and the first difference
    python scripts/fastai_probe.py -k Cancel  # the cases whose name contains "Cancel"
    python scripts/fastai_probe.py --audit    # the Learner attributes fastai's callbacks read

Each case runs on both Learners through ``tests/fastai_oracle.py`` (same model, batches,
SGD, RNG at each batch) and PASSes when the exception type, event trace, final weights
(1e-6), ``recorder.values``, files written, the action's result and the callbacks left on
the Learner all agree. A case that fails on fastai's own Learner too is marked ``ORACLE``
(it says nothing about fastlight). Not collected by pytest; exits 0 whatever the count.

fastai callbacks not probed: MixedPrecision, NonNativeMixedPrecision and ModelToHalf (CUDA:
``autocast('cuda')``, a cudnn / ``dls.device.type == 'cuda'`` assert, a half model fed fp32
input); TensorBoardProjectorCallback (a vision model ``model[1][1]``); WandbCallback,
CometCallback, AzureMLCallback, CaptumInterpretation (network services / notebook; their
modules do not import here); ShowGraphCallback is probed with its console bar (no graph is
drawn outside a notebook). Attribute audit of ``fastai.callback.*`` and ``fastai.learner``:
run ``--audit`` (the table it prints is copied below).

Learner attributes that fastai 2.8.12's callbacks read (``self.learn.X``, or ``self.X``
falling through to the Learner), present (+) or missing (-) on ``bridge.Learner`` during a
fit — output of ``--audit``:

    -     _split                TensorBoardCallback
    +     cbs                   FetchPredsCallback
    -     create_mbar           ProgressCallback
    +     create_opt            NonNativeMixedPrecision
    +     dl                    ProgressCallback
    +     dls                   NonNativeMixedPrecision, TensorBoardCallback, TrainEvalCallback
    -     dls.device            NonNativeMixedPrecision, TrainEvalCallback
    +     dls.one_batch         TensorBoardCallback
    +     dls.valid             TensorBoardCallback
    +     epoch                 EarlyStoppingCallback, ProgressCallback, Recorder, ReduceLROnPlateau,
                                SaveModelCallback, TrainEvalCallback  [set on the Learner by TrainEvalCallback]
    +     final_record          Recorder  [set on the Learner by Recorder]
    alias gather_preds          CSVLogger, ShowGraphCallback, TensorBoardCallback, TensorBoardProjectorCallback,
                                TrackerCallback
    +     iter                  GatherPredsCallback, ProgressCallback, ShortEpochCallback
    +     load                  LRFinder, SaveModelCallback
    -     logger                CSVLogger, ProgressCallback, Recorder  [set on the Learner by CSVLogger,
                                ProgressCallback]
    +     loss                  CollectDataCallback, GatherPredsCallback, TerminateOnNaNCallback  [set on the Learner
                                by TrainEvalCallback]
    +     loss_func             MixHandler, TensorBoardCallback, TrainEvalCallback  [set on the Learner by MixHandler]
    +     loss_grad             MixedPrecision  [set on the Learner by GradientAccumulation, MixedPrecision,
                                NonNativeMixedPrecision, RNNRegularizer]
    alias lr_finder             ShowGraphCallback, TensorBoardCallback, TensorBoardProjectorCallback, TrackerCallback
    +     metrics               Recorder
    alias mixed_precision       TensorBoardCallback
    +     model                 BnFreeze, ChannelsLast, HookCallback, MCDropoutCallback, ModelResetter, ModelToHalf,
                                NonNativeMixedPrecision, TensorBoardBaseCallback, TensorBoardCallback,
                                TrainEvalCallback  [set on the Learner by ModelToHalf]
    +     model_dir             LRFinder
    +     n_epoch               ProgressCallback, ShowGraphCallback, TrainEvalCallback  [set on the Learner by
                                TrainEvalCallback]
    +     n_iter                ShortEpochCallback, TrainEvalCallback
    -     one_batch             TensorBoardCallback
    +     opt                   LRFinder, MixedPrecision, NonNativeMixedPrecision, ParamScheduler, Recorder,
                                ReduceLROnPlateau, TensorBoardCallback
    -     opt.hypers            ParamScheduler, Recorder, ReduceLROnPlateau, TensorBoardCallback
    +     opt.param_groups      MixedPrecision
    -     opt.param_lists       NonNativeMixedPrecision
    -     opt.set_hyper         ParamScheduler
    +     opt.zero_grad         LRFinder
    -     parameters            GradientClip
    +     path                  CSVLogger, LRFinder
    +     pct_train             ParamScheduler  [set on the Learner by TrainEvalCallback]
    +     pred                  CollectDataCallback, GatherPredsCallback, MixedPrecision, NonNativeMixedPrecision,
                                RNNCallback, TensorBoardCallback  [set on the Learner by MixedPrecision,
                                NonNativeMixedPrecision, RNNCallback]
    alias progress              ShowGraphCallback
    +     recorder              CSVLogger, ParamScheduler, ProgressCallback, ShowGraphCallback, TensorBoardCallback,
                                TrackerCallback
    -     recorder.log          TensorBoardCallback
    +     recorder.metric_names CSVLogger, ProgressCallback, TensorBoardCallback, TrackerCallback
    +     recorder.values       TrackerCallback
    +     removed_cbs           FetchPredsCallback
    alias rnn                   RNNRegularizer
    +     save                  LRFinder, SaveModelCallback
    -     scaler                MixedPrecision  [set on the Learner by MixedPrecision]
    +     smooth_loss           LRFinder, ProgressCallback, TensorBoardCallback  [set on the Learner by Recorder]
    -     to_detach             CollectDataCallback, GatherPredsCallback
    +     train_iter            ActivationStats, HookCallback, LRFinder, ShowGraphCallback, TensorBoardCallback  [set
                                on the Learner by TrainEvalCallback]
    +     training              ActivationStats, Callback, HookCallback, MixHandler, NonNativeMixedPrecision,
                                RNNRegularizer, Recorder, ShortEpochCallback  [set on the Learner by
                                TrainEvalCallback]
    +     x                     CutMix, MixUp
    +     xb                    CastToTensor, CollectDataCallback, CutMix, GatherPredsCallback, MixUp,
                                NonNativeMixedPrecision, TensorBoardCallback  [set on the Learner by CastToTensor,
                                MixUp, NonNativeMixedPrecision]
    +     y                     CutMix, MixUp
    +     yb                    CastToTensor, CollectDataCallback, CutMix, GatherPredsCallback, GradientAccumulation,
                                MixUp, Recorder  [set on the Learner by CastToTensor, CutMix, MixUp]
    36 present, 12 missing, 5 callback aliases

    Not caught by the parser: FetchPredsCallback calls ``learn.get_preds(ds_idx, dl, with_input,
    with_decoded, inner=True, reorder)`` on the Learner that ``removed_cbs`` yields (missing keywords);
    ReduceLROnPlateau writes ``h['lr']`` into each dict of ``opt.hypers`` (they must be live);
    fastai's ``Callback.__call__`` reads ``training``, ``run``, ``run_train``, ``run_valid``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fastai.callback import core as fa_core  # noqa: E402
from fastai.callback.all import (  # noqa: E402
    ActivationStats,
    BnFreeze,
    ChannelsLast,
    CollectDataCallback,
    CSVLogger,
    CutMix,
    EarlyStoppingCallback,
    FetchPredsCallback,
    GatherPredsCallback,
    GradientAccumulation,
    GradientClip,
    LRFinder,
    MCDropoutCallback,
    MixUp,
    ModelResetter,
    ParamScheduler,
    ProgressCallback,
    ReduceLROnPlateau,
    RNNCallback,
    RNNRegularizer,
    SaveModelCallback,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedPoly,
    ShortEpochCallback,
    ShowGraphCallback,
    TerminateOnNaNCallback,
    TrackerCallback,
    combine_scheds,
)
from fastai.callback.tensorboard import TensorBoardCallback  # noqa: E402
from fastai.learner import CastToTensor, SkipToEpoch, before_batch_cb  # noqa: E402
from fastai.losses import CrossEntropyLossFlat  # noqa: E402

from tests.fastai_oracle import (  # noqa: E402
    Case,
    Comparison,
    Keep,
    NaNAt,
    NormHook,
    Resettable,
    Setup,
    ToyRNN,
    check_attr,
    hyper_lr,
    raising,
    rebind,
    run_case,
)


# -- actions --------------------------------------------------------------------------------------
def _fit_lr_finder(learn: Any, case: Case, fit_cbs: list[Any]) -> Any:
    # What fastai's Learner.lr_find does, with fastai's LRFinder, on either Learner.
    num_it = 10
    return learn.fit(num_it // len(learn.dls.train) + 1, cbs=[LRFinder(start_lr=1e-4, end_lr=1.0, num_it=num_it)])


def _validate(learn: Any, case: Case, fit_cbs: list[Any]) -> Any:
    learn.fit(1)
    return learn.validate(cbs=fit_cbs)


def _get_preds(**kw: Any) -> Callable[[Any, Case, list[Any]], Any]:
    def action(learn: Any, case: Case, fit_cbs: list[Any]) -> Any:
        learn.fit(1)
        return learn.get_preds(**kw)

    return action


# -- the cases --------------------------------------------------------------------------------------
def cases() -> list[Case]:
    """Every probed behaviour (fresh objects on each call)."""
    gather, fetch, collect, astats, tracker = (
        Keep(lambda: GatherPredsCallback(with_input=True)),
        Keep(lambda: FetchPredsCallback()),
        Keep(lambda: CollectDataCallback()),
        Keep(lambda: ActivationStats()),
        Keep(lambda: TrackerCallback()),
    )
    norms = Keep(lambda: NormHook(every=2))
    pscos = Keep(lambda: ParamScheduler({"lr": SchedCos(0.2, 0.01)}))
    lr_after = check_attr(lambda o: hyper_lr(o.learn), "lr after fit")
    csv_check = check_attr(lambda o: (o.path / "history.csv").read_text().splitlines()[0], "history.csv header")
    out: list[Case] = [
        Case("plain fit (TrainEvalCallback, Recorder)", n_epoch=3),
        Case("CastToTensor", cbs=lambda p: [CastToTensor()]),
        Case("SkipToEpoch(1)", n_epoch=3, fit_cbs=lambda p: [SkipToEpoch(1)]),
        Case(
            "before_batch_cb (functional callback)",
            cbs=lambda p: [before_batch_cb(lambda self, xb, yb: ((xb[0] * 2,), yb))],
        ),
        Case("CollectDataCallback", cbs=collect, check=check_attr(lambda o: list(collect.of(o).data), "data")),
        Case(
            "GatherPredsCallback via validate(cbs=...)",
            fit_cbs=gather,
            action=_validate,
            check=check_attr(lambda o: gather.of(o).all_tensors(), "all_tensors()"),
        ),
        Case(
            "FetchPredsCallback in fit",
            fit_cbs=fetch,
            n_epoch=3,
            check=check_attr(lambda o: fetch.of(o).preds, "fetched preds"),
        ),
        Case("get_preds()", action=_get_preds()),
        Case("get_preds(with_input, with_loss)", action=_get_preds(with_input=True, with_loss=True)),
        Case(
            "get_preds(with_decoded), CrossEntropyLossFlat",
            action=_get_preds(with_decoded=True),
            loss_func=CrossEntropyLossFlat,
        ),
        Case(
            "ActivationStats",
            cbs=astats,
            check=check_attr(lambda o: [[tuple(d.values()) for d in s] for s in astats.of(o).stats], "stats"),
        ),
        Case("HookCallback subclass (every=2)", cbs=norms, check=check_attr(lambda o: norms.of(o).norms, "norms")),
        # CrossEntropyLossFlat has fastai's `y_int`: the targets stay ints and the losses are mixed.
        Case("MixUp", cbs=lambda p: [MixUp(0.4)], loss_func=CrossEntropyLossFlat),
        Case("CutMix", cbs=lambda p: [CutMix(1.0)], setup=Setup(image=True), loss_func=CrossEntropyLossFlat),
        Case("ProgressCallback (console)", cbs=lambda p: [ProgressCallback()]),
        Case("ShowGraphCallback (console)", cbs=lambda p: [ProgressCallback(), ShowGraphCallback()]),
        Case("CSVLogger", cbs=lambda p: [CSVLogger()], check=csv_check),
        Case("ParamScheduler SchedCos(lr)", fit_cbs=pscos, check=lr_after),
        Case("ParamScheduler SchedLin(lr)", fit_cbs=lambda p: [ParamScheduler({"lr": SchedLin(0.2, 0.01)})]),
        Case(
            "ParamScheduler combine_scheds(SchedPoly, SchedExp)",
            fit_cbs=lambda p: [
                ParamScheduler({"lr": combine_scheds([0.5, 0.5], [SchedPoly(0.01, 0.2, 2), SchedExp(0.2, 0.01)])})
            ],
        ),
        Case("LRFinder (as lr_find runs it)", action=_fit_lr_finder),
        Case("TerminateOnNaNCallback", cbs=lambda p: [TerminateOnNaNCallback()], loss_func=lambda: NaNAt(1)),
        Case("TrackerCallback", cbs=tracker, n_epoch=3, check=check_attr(lambda o: tracker.of(o).best, "best")),
        Case("EarlyStoppingCallback(valid_loss)", n_epoch=4, cbs=lambda p: [EarlyStoppingCallback(patience=1)]),
        Case(
            "EarlyStoppingCallback(accuracy, np.greater)",
            n_epoch=4,
            fit_cbs=lambda p: [EarlyStoppingCallback(monitor="accuracy", comp=np.greater, patience=1)],
        ),
        Case("SaveModelCallback (best, loaded at end)", n_epoch=3, cbs=lambda p: [SaveModelCallback()]),
        Case("SaveModelCallback(every_epoch)", cbs=lambda p: [SaveModelCallback(every_epoch=True)]),
        Case("SaveModelCallback(at_end, with_opt)", cbs=lambda p: [SaveModelCallback(at_end=True, with_opt=True)]),
        Case(
            "ReduceLROnPlateau",
            n_epoch=4,
            cbs=lambda p: [ReduceLROnPlateau(patience=1, factor=10.0)],
            check=lr_after,
        ),
        Case(
            "ModelResetter",
            model=Resettable,
            cbs=lambda p: [ModelResetter()],
            check=check_attr(lambda o: o.learn.model.resets, "model.reset() calls"),
        ),
        Case(
            "RNNCallback + RNNRegularizer",
            model=ToyRNN,
            cbs=lambda p: [RNNCallback(), RNNRegularizer(alpha=2.0, beta=1.0)],
        ),
        Case("ShortEpochCallback(0.5)", cbs=lambda p: [ShortEpochCallback(pct=0.5)]),
        Case("ShortEpochCallback(short_valid=False)", cbs=lambda p: [ShortEpochCallback(pct=0.3, short_valid=False)]),
        Case("GradientAccumulation(32)", n_epoch=2, cbs=lambda p: [GradientAccumulation(n_acc=32)]),
        Case("GradientClip(0.05)", cbs=lambda p: [GradientClip(max_norm=0.05)]),
        Case("BnFreeze", setup=Setup(batchnorm=True, frozen_bn=True), cbs=lambda p: [BnFreeze()]),
        Case("MCDropoutCallback", setup=Setup(dropout=0.5), cbs=lambda p: [MCDropoutCallback()]),
        Case("ChannelsLast (conv model)", setup=Setup(image=True, conv=True), cbs=lambda p: [ChannelsLast()]),
        Case(
            "TensorBoardCallback (no graph, no preds)",
            cbs=lambda p: [TensorBoardCallback(log_dir=p / "tb", trace_model=False, log_preds=False)],
            ignore_files=("tb/",),
        ),
        Case(
            "TensorBoardCallback(trace_model)",
            cbs=lambda p: [TensorBoardCallback(log_dir=p / "tb", trace_model=True, log_preds=False)],
            ignore_files=("tb/",),
        ),
        Case(
            "rebinding only learn.loss (fastai backprops loss_grad)",
            cbs=rebind("after_loss", "loss", lambda learn: learn.loss * 3),
        ),
        Case(
            "rebinding xb, pred and loss_grad",
            cbs=lambda p: [
                *rebind("before_batch", "xb", lambda learn: (learn.xb[0] * 0.5,))(p),
                *rebind("after_pred", "pred", lambda learn: learn.pred * 2)(p),
                *rebind("after_loss", "loss_grad", lambda learn: learn.loss_grad * 0.5)(p),
            ],
        ),
        Case("fastai's SGD as opt_func", opt="fastai-sgd"),
    ]
    # User callbacks raising each of fastai's seven cancels.
    ep0_it1 = lambda learn: learn.training and learn.epoch == 0 and learn.iter == 1  # noqa: E731
    for exc, event, when in (
        (fa_core.CancelBatchException, "after_pred", ep0_it1),
        (fa_core.CancelBackwardException, "before_backward", ep0_it1),
        (fa_core.CancelStepException, "before_step", ep0_it1),
        (fa_core.CancelTrainException, "after_batch", ep0_it1),
        (fa_core.CancelValidException, "after_batch", lambda learn: not learn.training and learn.epoch == 0),
        (fa_core.CancelEpochException, "before_validate", lambda learn: learn.epoch == 0),
        (fa_core.CancelFitException, "after_loss", lambda learn: learn.epoch == 1 and learn.iter == 1),
    ):
        out.append(Case(f"user {exc.__name__} in {event}", cbs=raising(exc, event, when)))
    return out


# -- audit --------------------------------------------------------------------------------------------
#: Learner attributes whose own attributes the callbacks read too (``self.opt.hypers``).
_SUBOBJECTS = ("opt", "recorder", "dls", "dl")


def _callback_classes() -> list[type]:
    import fastai.callback.all as fa_all
    import fastai.callback.tensorboard as fa_tb
    import fastai.learner as fa_learner

    seen: dict[str, type] = {}
    for mod in (fa_all, fa_tb, fa_learner):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, fa_core.Callback) and obj.__module__.startswith("fastai"):
                seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [seen[k] for k in sorted(seen)]


def _tree(cls: type) -> ast.AST | None:
    try:
        return ast.parse(inspect.getsource(cls))
    except (OSError, TypeError, SyntaxError):
        return None


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_learn(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "learn" and _is_self(node.value)


def _own_names(cls: type, family: list[type]) -> set[str]:
    """Names a callback family defines itself: class attributes, ``self.X = ...``, ``__init__`` arguments.

    ``family``: ``cls``, its bases and its subclasses (a base may read what a subclass sets).
    """
    own: set[str] = set()
    for klass in family:
        own |= set(vars(klass))
        tree = _tree(klass) if klass.__module__.startswith("fastai") else None
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
                own.add(node.attr)
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                own |= {a.arg for a in node.args.args}
    return own


def _written(cls: type) -> set[str]:
    """Learner attributes ``cls`` sets itself (``self.learn.X = ...``)."""
    tree = _tree(cls)
    out: set[str] = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_learn(node.value):
            out.add(node.attr)
    return out


def _reads(cls: type, own: set[str]) -> set[str]:
    """Learner attributes ``cls``'s own methods read: ``self.learn.X``, ``self.X`` (X not its own),
    ``hasattr/getattr(self[.learn], "X")`` and ``.Y`` of the objects in ``_SUBOBJECTS``."""
    tree = _tree(cls)
    out: set[str] = set()
    if tree is None:
        return out
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("hasattr", "getattr") and len(node.args) > 1:
            target, key = node.args[0], node.args[1]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if _is_learn(target) or (_is_self(target) and key.value not in own):
                    out.add(key.value)
                elif isinstance(target, ast.Attribute) and target.attr in _SUBOBJECTS:
                    if _is_learn(target.value) or _is_self(target.value):
                        out.add(f"{target.attr}.{key.value}")
        if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        v = node.value
        if node.attr.startswith("__"):
            continue
        if _is_learn(v) or (_is_self(v) and node.attr not in own and node.attr != "learn"):
            out.add(node.attr)
        if isinstance(v, ast.Attribute) and v.attr in _SUBOBJECTS and (_is_learn(v.value) or _is_self(v.value)):
            out.add(f"{v.attr}.{node.attr}")
    return out


def audit() -> list[tuple[str, str, list[str], list[str]]]:
    """Rows (attribute, mark, fastai callbacks reading it, fastai callbacks setting it on the Learner).

    mark: '+' present on bridge.Learner during a fit, '-' missing, 'alias' the name of a
    fastai callback (``learn.rnn`` is the RNNCallback: present when that callback is added).
    """
    import tests.fastai_oracle as oracle

    classes = _callback_classes()
    aliases = {fa_core.Callback.name.fget(cls.__new__(cls)) for cls in classes}  # type: ignore[attr-defined]
    reads: dict[str, set[str]] = {}
    writers: dict[str, set[str]] = {}
    for cls in classes:
        family = [k for k in classes if issubclass(k, cls) or issubclass(cls, k)]
        for name in _reads(cls, _own_names(cls, family)):
            reads.setdefault(name, set()).add(cls.__name__)
        for name in _written(cls):
            writers.setdefault(name, set()).add(cls.__name__)
    seen: dict[str, bool] = {}

    def present(learn: Any, dotted: str) -> bool:
        obj = learn
        for part in dotted.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    class Look(fa_core.Callback):
        def after_loss(self) -> None:
            if self.training and not seen:
                seen.update({name: present(self.learn, name) for name in reads})

    oracle.run_fastlight(Case("audit", cbs=lambda p: [Look()], n_epoch=1), Setup().model())
    rows = []
    for name in sorted(reads):
        mark = "+" if seen.get(name) else ("alias" if name in aliases else "-")
        rows.append((name, mark, sorted(reads[name]), sorted(writers.get(name, ()))))
    return rows


def print_audit() -> None:
    rows = audit()
    width = max(len(r[0]) for r in rows)
    for name, mark, users, setters in rows:
        set_by = f"  [set on the Learner by {', '.join(setters)}]" if setters else ""
        print(f"  {mark:<5} {name:<{width}}  {', '.join(users)}{set_by}")
    counts = {m: sum(r[1] == m for r in rows) for m in ("+", "-", "alias")}
    print(f"{counts['+']} present, {counts['-']} missing, {counts['alias']} callback aliases")


# -- main -----------------------------------------------------------------------------------------------
def _oracle_ok(c: Comparison) -> bool:
    return c.fastai.error is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="run only the cases whose name contains this text")
    parser.add_argument("--audit", action="store_true", help="print the Learner attributes fastai callbacks read")
    args = parser.parse_args(argv)
    if args.audit:
        print_audit()
        return 0
    torch.set_num_threads(1)
    selected = [c for c in cases() if args.k.lower() in c.name.lower()]
    passed = oracle_fail = 0
    start = time.perf_counter()
    for case in selected:
        t0 = time.perf_counter()
        try:
            comp = run_case(case)
        except Exception:  # the harness itself failed: show where
            print(f"ERROR  {case.name}\n{traceback.format_exc()}")
            continue
        dt = time.perf_counter() - t0
        if not _oracle_ok(comp):
            oracle_fail += 1
            err = comp.fastai.error
            print(f"ORACLE {case.name} ({dt:.1f}s): fastai's own Learner raised {type(err).__name__}: {err}")
            continue
        if comp.diff is None:
            passed += 1
            print(f"PASS   {case.name} ({dt:.1f}s)")
        else:
            print(f"FAIL   {case.name} ({dt:.1f}s): {comp.diff}")
            err = comp.fastlight.error
            if err is not None:
                print(f"       fastlight raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    total = len(selected) - oracle_fail
    print(
        f"\n{passed}/{total} pass on fastlight ({oracle_fail} cases fail on fastai's own Learner too), "
        f"{time.perf_counter() - start:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

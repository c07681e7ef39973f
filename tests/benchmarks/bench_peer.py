#!/usr/bin/env python
"""The peer job: one small real fit on fastai's own Learner, on fastlight's and on bare Lightning.

Run from the repository root (one process plus a few short subprocesses; about 1 minute with the
defaults on a quiet 2-core machine, ``--repeats 5 --import-repeats 2`` for a smoke run)::

    python tests/benchmarks/bench_peer.py [--repeats 21] [--import-repeats 7] [--out peer.json]

The job (issue 21): sklearn's digits (1500 train / 297 valid, pixels / 16), an MLP 64-128-10,
batches of 64 (train shuffled, valid in order), 3 epochs, cross-entropy, an accuracy metric, no
progress bar, one CPU thread. Variants, each from a fresh copy of one initial model:

    fastai     fastai 2.8.12's ``Learner(dls, model, loss_func, metrics=accuracy)`` (its Adam, lr 1e-3),
               its default callbacks but ``ProgressCallback``; ``DataLoaders`` of fastai's own
               ``DataLoader`` over the same tensors; timed: ``learn.fit(3)``
    fastlight  ``bridge.Learner(data, model, loss_func, metrics=accuracy, path=<fresh dir>)`` with its
               defaults (TensorBoard logger, resumable checkpoint each epoch, epoch table) but the bar;
               timed: ``learn.fit(3)`` (which builds its Trainer)
    lightning  a ``LightningModule`` (same model; AdamW with fastai's Adam settings; ``self.log`` of
               the train loss each step and of the valid loss and accuracy each epoch), a
               ``Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0)``; timed: building that Trainer
               and ``trainer.fit``
    <control>  a second copy of one variant (``--control``, default fastlight), timed alike

Method: a repeat runs every variant once, in an order that alternates (and rotates) between
repeats, so no variant always runs first or right after the same neighbour; ``gc.collect()``
before each fit; stdout (the epoch table) goes to a buffer. Two warm-up repeats are not counted
(first-call costs: imports, lazy inits, TensorBoard's first writer). The budget figures are
**paired ratios**: per repeat, variant A's time over variant B's from the same repeat (the
machine's speed drifts by 10-30% between seconds here, and both members of a pair share the
drift); reported as the median with quartiles (and p10-p90) over repeats. The control's ratio
(``<control>/<variant>``) would be exactly 1 on a quiet machine: its spread is this run's
noise floor; do not trust a budget ratio closer to its limit than that. The fastest repeat of
each variant (and the ratios of those minima) are reported too.

Import cost: ``import fastai.learner, fastai.callback.all`` vs ``import lightning.pytorch`` vs
``import bridge``, and ``import torch`` (which all three start with), each in a fresh
``python -c`` subprocess timing itself with ``perf_counter`` around the import (interpreter
start-up excluded), ``--import-repeats`` rounds in alternating order, median and min per module.

The JSON written by ``--out`` holds ``times`` (seconds per repeat per variant), ``fit`` (per
variant median / min / max), ``ratios`` (per pair: ``median``, ``q1``, ``q3``, ``p10``, ``p90``,
``min_ratio``, ``samples``), ``control`` (the same for the control pair), ``imports``,
``job_with_imports`` (each side's median import plus its median fit, and fastlight/fastai) and
``platform``. ``--breakdown`` (wall ms per fastlight fit in its fixed costs: Trainer construction
and teardown, checkpoint, validation start/end, epoch end) and ``--profile VARIANT`` (cProfile)
are the tools that found the cuts (docs/performance.md, "Peer job").

Example:
    >>> summarize([1.0, 1.2, 0.9, 1.1, 1.0])["median"]
    1.0
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # this checkout's bridge, not an installed one
    sys.path.insert(0, str(REPO))
if str(Path(__file__).parent) not in sys.path:  # peer_breakdown, when imported as tests.benchmarks.bench_peer
    sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = ("fastai", "fastlight", "lightning")
#: Budgeted pairs (numerator, denominator) of issue 21, plus the reference one.
PAIRS = (("fastlight", "fastai"), ("fastlight", "lightning"), ("lightning", "fastai"))
#: What each side's import statement is, timed in a fresh interpreter.
IMPORTS = {
    "torch": "import torch",
    "fastai": "import fastai.learner, fastai.callback.all",
    "lightning": "import lightning.pytorch",
    "bridge": "import bridge",
}
EPOCHS, BS, N_TRAIN, HIDDEN = 3, 64, 1500, 128


# -- the benchmark's logic (unit-tested in tests/test_bench_peer.py) ---------------------------------
def control_name(variant: str) -> str:
    """The name of the control copy of ``variant``.

    Example:
        >>> control_name("fastlight")
        'fastlight*'
    """
    return f"{variant}*"


def run_order(names: Sequence[str], repeat: int) -> list[str]:
    """The order of the variants in ``repeat``: rotated by ``repeat // 2``, reversed on odd repeats.

    Example:
        >>> [run_order("abc", r) for r in range(4)]
        [['a', 'b', 'c'], ['c', 'b', 'a'], ['b', 'c', 'a'], ['a', 'c', 'b']]
    """
    k = (repeat // 2) % len(names)
    order = list(names[k:]) + list(names[:k])
    return order[::-1] if repeat % 2 else order


def paired(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """Repeat-by-repeat ratios ``times[num][i] / times[den][i]``.

    Example:
        >>> paired({"a": [2.0, 3.0], "b": [1.0, 2.0]}, "a", "b")
        [2.0, 1.5]
    """
    a, b = times[num], times[den]
    if len(a) != len(b):
        raise ValueError(f"paired: {num} has {len(a)} repeats, {den} has {len(b)}; a ratio needs both from one repeat")
    return [x / y for x, y in zip(a, b, strict=True)]


def summarize(ratios: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and p10-p90 of paired ratios (all equal for a single ratio).

    Example:
        >>> s = summarize([0.9, 1.0, 1.1])
        >>> s["median"], s["n"]
        (1.0, 3)
    """
    xs = list(ratios)
    if not xs:
        raise ValueError("summarize: no ratios (run at least one repeat)")
    if len(xs) == 1:
        q1 = q3 = p10 = p90 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        dec = statistics.quantiles(xs, n=10, method="inclusive")
        p10, p90 = dec[0], dec[-1]
    return {"median": statistics.median(xs), "q1": q1, "q3": q3, "p10": p10, "p90": p90, "n": len(xs), "samples": xs}


def pair_report(times: dict[str, list[float]], num: str, den: str) -> dict[str, Any]:
    """:func:`summarize` of the paired ratios, plus the ratio of the fastest repeats.

    Example:
        >>> pair_report({"a": [2.0, 4.0], "b": [1.0, 1.0]}, "a", "b")["min_ratio"]
        2.0
    """
    out = summarize(paired(times, num, den))
    out["min_ratio"] = min(times[num]) / min(times[den])
    return out


def import_seconds(statement: str, python: str = sys.executable) -> float:
    """Seconds ``statement`` takes in a fresh interpreter (start-up excluded), from the repository root.

    With Python's default bytecode cache even where ``PYTHONDONTWRITEBYTECODE`` is set (as in this
    project's sandbox): installed packages come with compiled files, and a user's first import compiles
    the repository's own once, so that is not charged to every round.

    Example:
        >>> 0 <= import_seconds("import json") < 5
        True
    """
    code = f"import time; t = time.perf_counter(); {statement}; print(repr(time.perf_counter() - t))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, cwd=REPO, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def import_costs(repeats: int, measure: Callable[[str], float] = import_seconds, warmup: int = 1) -> dict[str, Any]:
    """Per module of :data:`IMPORTS`: median, min and samples over ``repeats`` alternating rounds.

    ``warmup`` rounds run first and are not counted (they compile the repository's modules).

    Example:
        >>> import_costs(2, measure=len)["torch"]["samples"]
        [12, 12]
    """
    samples: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for r in range(warmup + repeats):
        for name in run_order(list(IMPORTS), r):
            seconds = measure(IMPORTS[name])
            if r >= warmup:
                samples[name].append(seconds)
    return {name: {"median": statistics.median(xs), "min": min(xs), "samples": xs} for name, xs in samples.items()}


# -- the job -----------------------------------------------------------------------------------------
def _tensors() -> tuple[Any, Any, Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target, dtype=torch.long)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _accuracy(pred: Any, targ: Any) -> Any:
    return (pred.argmax(dim=-1) == targ).float().mean()


def make_runners(seed: int = 0) -> dict[str, Callable[[], float]]:
    """One callable per variant: builds that variant's fit from a fresh model copy, runs it, returns seconds."""
    import fastai.callback.all  # noqa: F401  # fastai's default callbacks registered, as a user's import does
    import fastai.callback.core as fa_core
    import fastai.learner as fa_learner
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from fastai.callback.progress import ProgressCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FaDataLoader
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import bridge

    torch.set_num_threads(1)
    xt, yt, xv, yv = _tensors()
    train_ds, valid_ds = TensorDataset(xt, yt), TensorDataset(xv, yv)
    torch.manual_seed(seed)
    model0 = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    fa_defaults = [cb for cb in fa_core.defaults.callbacks if cb is not ProgressCallback]

    def fastai_fit() -> float:
        dls = DataLoaders(
            FaDataLoader(train_ds, bs=BS, shuffle=True),
            FaDataLoader(valid_ds, bs=BS, shuffle=False),
            device=torch.device("cpu"),
        )
        learn = fa_learner.Learner(
            dls,
            copy.deepcopy(model0),
            loss_func=nn.CrossEntropyLoss(),
            metrics=[_accuracy],
            cbs=fa_defaults,
            default_cbs=False,  # else fastai adds its defaults again, ProgressCallback included
        )
        t = time.perf_counter()
        learn.fit(EPOCHS)
        return time.perf_counter() - t

    def fastlight_fit() -> float:
        path = tempfile.mkdtemp(prefix="peer_")
        try:
            data = bridge.DataBunch(
                DataLoader(train_ds, batch_size=BS, shuffle=True), DataLoader(valid_ds, batch_size=BS), 10
            )
            learn = bridge.Learner(
                data,
                copy.deepcopy(model0),
                loss_func=nn.CrossEntropyLoss(),
                metrics=_accuracy,
                path=path,
                enable_progress_bar=False,
            )
            t = time.perf_counter()
            learn.fit(EPOCHS)
            return time.perf_counter() - t
        finally:
            shutil.rmtree(path, ignore_errors=True)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = copy.deepcopy(model0)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            pred = self.model(x)
            self.log("valid_loss", F.cross_entropy(pred, y))
            self.log("accuracy", _accuracy(pred, y))

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)

    def lightning_fit() -> float:
        module = Module()
        train, valid = DataLoader(train_ds, batch_size=BS, shuffle=True), DataLoader(valid_ds, batch_size=BS)
        t = time.perf_counter()
        trainer = pl.Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, train, valid)
        return time.perf_counter() - t

    return {"fastai": fastai_fit, "fastlight": fastlight_fit, "lightning": lightning_fit}


def run_repeats(runners: dict[str, Callable[[], float]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """``warmup`` uncounted then ``repeats`` counted rounds of every runner, in :func:`run_order`."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(warmup + repeats):
        for name in run_order(names, r):
            gc.collect()
            with contextlib.redirect_stdout(io.StringIO()):
                seconds = runners[name]()
            if r >= warmup:
                times[name].append(seconds)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=21, help="counted rounds of every variant")
    p.add_argument("--warmup", type=int, default=2, help="uncounted first rounds")
    p.add_argument("--import-repeats", type=int, default=7, help="fresh-process rounds per import (0: skip)")
    p.add_argument("--control", choices=VARIANTS, default="fastlight", help="variant timed twice as the noise floor")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--profile", choices=VARIANTS, help="instead: cProfile this variant's fit (after a warm-up fit)")
    p.add_argument("--breakdown", action="store_true", help="instead: wall ms per fastlight fit in its fixed costs")
    p.add_argument("--top", type=int, default=40, help="with --profile: rows of the cumulative-time table")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)

    runners = make_runners()
    if args.breakdown or args.profile:
        from peer_breakdown import breakdown, profile

        if args.breakdown:
            return breakdown(runners["fastlight"], args.repeats)
        return profile(runners[args.profile], args.repeats, args.top)
    runners[control_name(args.control)] = runners[args.control]
    times = run_repeats(runners, args.repeats, args.warmup)
    res: dict[str, Any] = {
        "job": f"digits MLP 64-{HIDDEN}-10, bs {BS}, {EPOCHS} epochs, accuracy, no bar",
        "repeats": args.repeats,
        "times": times,
        "fit": {n: {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} for n, xs in times.items()},
        "ratios": {f"{a}/{b}": pair_report(times, a, b) for a, b in PAIRS},
        "control": {
            f"{control_name(args.control)}/{args.control}": pair_report(times, control_name(args.control), args.control)
        },
        "platform": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
    }
    for name, s in res["fit"].items():
        print(f"{name:<11} fit: median {s['median']:.3f} s, fastest {s['min']:.3f} s, slowest {s['max']:.3f} s")
    for name, s in {**res["ratios"], **res["control"]}.items():
        print(
            f"{name:<22} paired median {s['median']:.3f} (quartiles {s['q1']:.3f}-{s['q3']:.3f}, "
            f"p10-p90 {s['p10']:.3f}-{s['p90']:.3f}), fastest repeats {s['min_ratio']:.3f}"
        )
    if args.import_repeats:
        res["imports"] = import_costs(args.import_repeats)
        for name, s in res["imports"].items():
            print(f"import {name:<10} median {s['median']:.3f} s, min {s['min']:.3f} s  ({IMPORTS[name]})")
        med = {n: s["median"] for n, s in res["imports"].items()}
        print(f"import bridge / lightning.pytorch: {med['bridge'] / med['lightning']:.3f}")
        print(f"import lightning.pytorch / fastai: {med['lightning'] / med['fastai']:.3f}")
        # The whole job, imports included: each side's import plus its median fit.
        job = {v: med["bridge" if v == "fastlight" else v] + res["fit"][v]["median"] for v in VARIANTS}
        res["job_with_imports"] = {**job, "fastlight/fastai": job["fastlight"] / job["fastai"]}
        print(
            f"whole job with imports (import median + fit median): fastlight/fastai {job['fastlight'] / job['fastai']:.3f}"
        )
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()

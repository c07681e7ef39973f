#!/usr/bin/env python
"""Per-batch overhead of fastlight's ``Learner.fit`` against plain PyTorch and bare Lightning.

Run from the repository root (one process, one thread, about 6 minutes; ``--quick`` ~ half)::

    python tests/benchmarks/bench_overhead.py [--quick] [--clock cpu] [--only small] [--out bench.json]

Variants (all train the same model with AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, wd=0.01)
on the same ready-made batches: a ``DataLoader(batch_size=None)`` over a list of pre-built
``(x, y)`` tensors, so no collation is timed):

    a   plain PyTorch loop (zero_grad, backward, step)
    b   bare Lightning: automatic optimization, no logger/bar/checkpointing/summary
    c   b + ``self.log("train_loss", loss)`` every step
    d   ``Learner.fit`` with its defaults (TensorBoard logger, Recorder, log_every_n_steps=50)
        minus the progress bar
    d'  d with ``logger=False``
    e   d + 10 no-op v2 callbacks subscribed to every event
    f1  d + 10 no-op fastai-v1 callbacks (on_batch_begin, ...)      [needs bridge.dialects]
    f3  d + 10 no-op course-v3 callbacks (begin_batch, ...)         [needs bridge.dialects]
    g   b + ``LightningAdapter`` with 10 no-op v2 callbacks          [needs bridge.LightningAdapter]

Method: per-batch time = the time between fetching batch n and the last batch N-1 of a fit
over N batches, divided by the N-1-n training steps in between. The loader is the
stopwatch (every variant fetches a batch right before training on it), so Trainer
construction, set-up, the epoch end (validation, checkpoint) and teardown are outside the
window; only steady-state steps are timed, the same way for every variant. Every variant
is warmed up first. Each timed fit runs with the garbage collector disabled (after a
``gc.collect()``), so no variant pays for a collection of another's garbage. A repeat
times every variant once, the order rotating (and reversing) between repeats; the
variants whose ratio is budgeted (b,d / d,e on the small MLP, a,d / d,e on the
compute-bound one) are neighbours in that order, so they are timed back to back under the
same machine load.

Why paired ratios: on a shared machine the load changes over minutes, so per-variant
medians taken minutes apart differ by more than the overheads being measured (e/d came
out 1.03, 1.10 and 1.23 in three runs of the ratio of medians). The budget figure is the
**paired ratio**: per repeat, the ratio of the two neighbours' times (num_i / den_i), then
the median over repeats. The ratio of medians is stored as well, for reference. Lightning
runs validation-free (``limit_val_batches=0``); the Learner (which needs a validation
loader) gets a one-batch validation set, a fixed cost that cancels in the difference.
Wall and process CPU time are both recorded; ``--clock`` picks the one the ratios and the
budget use (wall by default; ``cpu`` on a machine shared with other jobs).

lr_find: ``Learner.lr_find(num_it=100, stop_div=False)`` against
``Tuner(trainer).lr_find(num_training=100, early_stop_threshold=None, update_attr=False)``
on the same small MLP and batches, both without bar or logger, timed whole in alternating
order, 15 paired repeats: from a built model (Learner / LightningModule) to the result,
so the Tuner's time includes building its ``Trainer`` (about 5-10 ms, mostly Lightning's
scan of installed packages' entry points) as the Learner's includes the one ``fit`` builds,
plus each side's model/optimizer save and restore.

The JSON written by ``--out`` holds, per model, per-variant medians/min/max/samples (ms per
batch), ``paired_ratios`` (the budget figure), ``ratios`` (of medians) and ``min_ratios``
for (d)/(b), (d)/(a), (e)/(d), (f)/(d), (g)/(b); ``lr_find`` with ``paired_ratio`` and
``ratio``; and ``budget``: per budgeted ratio its paired ``value``, ``of_medians``,
``limit`` and ``pass`` (issue 8).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lightning  # noqa: E402
import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from bridge import Callback, DataBunch, Learner  # noqa: E402
from bridge.events import EVENT_NAMES  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.ERROR)

#: lr_find runs are short (~0.1 s): many repeats cost little and steady the median.
LR_FIND_REPEATS = 15

#: Budget of issue 8: (model, ratio) -> upper limit.
BUDGET: dict[tuple[str, str], float] = {
    ("small", "d/b"): 1.10,
    ("small", "e/d"): 1.05,
    ("compute", "d/a"): 1.03,
}


# -- data and models ---------------------------------------------------------------------------
class Batches(Dataset):  # type: ignore[type-arg]
    """Pre-built batches, served one per index (use with ``DataLoader(batch_size=None)``).

    It is also the stopwatch: every variant fetches batch ``i`` right before training on
    it (Lightning does not prefetch from a sized loader), so the clocks read when batch
    ``start`` and the last batch are fetched bracket ``len - 1 - start`` whole training
    steps, the same way in every variant, without set-up, epoch end or teardown.
    """

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], start: int = 0) -> None:
        self.batches, self.start = batches, start
        self.stamps: dict[int, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i == self.start or i == len(self.batches) - 1:
            self.stamps[i] = (time.perf_counter(), time.process_time())
        return self.batches[i]

    def per_batch(self) -> tuple[float, float]:
        """(wall, CPU) seconds per training step inside the window of the last pass."""
        (w0, c0), (w1, c1) = self.stamps[self.start], self.stamps[len(self.batches) - 1]
        n = len(self.batches) - 1 - self.start
        return (w1 - w0) / n, (c1 - c0) / n


def make_batches(n: int, bs: int, n_in: int, n_out: int, device: torch.device, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(bs, n_in, generator=g)
        y = torch.randint(0, n_out, (bs,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def loader(batches: list[Any], start: int = 0) -> DataLoader:  # type: ignore[type-arg]
    return DataLoader(Batches(batches, start), batch_size=None, shuffle=False)


def make_model(sizes: tuple[int, ...], device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def adamw(params: Any) -> torch.optim.Optimizer:
    # fastai's Adam defaults, which the Learner uses (torch AdamW with these settings).
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


# -- the callbacks ---------------------------------------------------------------------------------
def _noop(self: Any) -> None:
    pass


#: A v2-style callback subscribed to every event.
NoOpV2 = type("NoOpV2", (Callback,), {name: _noop for name in EVENT_NAMES})

_V1_EVENTS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_batch_begin",
    "on_loss_begin",
    "on_backward_begin",
    "on_backward_end",
    "on_step_end",
    "on_batch_end",
    "on_epoch_end",
    "on_train_end",
)


def _v1_noop(self: Any, **kwargs: Any) -> None:
    pass


#: A fastai-v1-style callback (duck-typed, as fastai v1's ``Callback``: methods take ``**kwargs``).
NoOpV1 = type("NoOpV1", (), {"_order": 0, **{name: _v1_noop for name in _V1_EVENTS}})


class NoOpCourseV3:
    """A course-v3 (2019 ``Runner``) callback, as written in the notebooks."""

    _order = 0

    def set_runner(self, run: Any) -> None:
        self.run = run

    def __getattr__(self, k: str) -> Any:
        return getattr(self.run, k)

    def __call__(self, cb_name: str) -> bool:
        f = getattr(self, cb_name, None)
        return bool(f and f())

    def begin_fit(self) -> None: ...
    def begin_epoch(self) -> None: ...
    def begin_batch(self) -> None: ...
    def after_pred(self) -> None: ...
    def after_loss(self) -> None: ...
    def after_backward(self) -> None: ...
    def after_step(self) -> None: ...
    def after_batch(self) -> None: ...
    def begin_validate(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_fit(self) -> None: ...


# -- Lightning modules -----------------------------------------------------------------------------
class PlainModule(pl.LightningModule):
    """Bare Lightning: automatic optimization, nothing else."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adamw(self.parameters())


class LoggingModule(PlainModule):
    """Bare Lightning + one ``self.log`` of the loss per step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss


# -- variants -----------------------------------------------------------------------------------------
@dataclass
class Setup:
    name: str
    sizes: tuple[int, ...]
    bs: int
    n_long: int
    n_short: int
    device: torch.device
    accelerator: str
    tmp: Path
    long_dl: Any = None
    short_dl: Any = None
    valid_dl: Any = None

    def __post_init__(self) -> None:
        batches = make_batches(self.n_long, self.bs, self.sizes[0], self.sizes[-1], self.device)
        self.long_dl = loader(batches, start=self.n_short)  # timed from batch n_short to the last
        self.short_dl = loader(batches[: self.n_short])
        self.valid_dl = loader(batches[:1])

    def trainer(self, **kw: Any) -> pl.Trainer:
        opts: dict[str, Any] = dict(
            max_epochs=1,
            accelerator=self.accelerator,
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=str(self.tmp),
        )
        opts.update(kw)
        return pl.Trainer(**opts)

    def learner(self, dl: Any, **kw: Any) -> Learner:
        data = DataBunch(dl, self.valid_dl)
        opts: dict[str, Any] = dict(
            loss_func=F.cross_entropy, enable_progress_bar=False, accelerator=self.accelerator, path=self.tmp
        )
        opts.update(kw)
        return Learner(data, make_model(self.sizes, self.device), **opts)


#: A variant prepares (untimed) and returns the timed call.
Prepare = Callable[[Setup, Any], Callable[[], None]]


def v_plain(s: Setup, dl: Any) -> Callable[[], None]:
    model = make_model(s.sizes, s.device)

    def run() -> None:
        model.train()
        opt = adamw(model.parameters())
        for x, y in dl:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def _lightning(module_cls: type[PlainModule], callbacks: Callable[[], list[Any]] | None = None) -> Prepare:
    def prepare(s: Setup, dl: Any) -> Callable[[], None]:
        module = module_cls(make_model(s.sizes, s.device))
        cbs = callbacks() if callbacks is not None else []

        def run() -> None:
            s.trainer(callbacks=cbs).fit(module, train_dataloaders=dl)

        return run

    return prepare


def _learner(cbs: Callable[[], list[Any]] | None = None, **kw: Any) -> Prepare:
    def prepare(s: Setup, dl: Any) -> Callable[[], None]:
        learn = s.learner(dl, cbs=cbs() if cbs is not None else None, **kw)

        def run() -> None:
            learn.fit(1)

        return run

    return prepare


def _adapter_cbs() -> list[Any]:
    from bridge import LightningAdapter  # type: ignore[attr-defined]

    return [LightningAdapter([NoOpV2() for _ in range(10)], loss_func=F.cross_entropy)]


@dataclass
class Variant:
    key: str
    label: str
    prepare: Prepare
    needs: str | None = None  # a module/attribute that must import, else skipped with a note
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def samples(self, clock: str) -> list[float]:
        return self.wall if clock == "wall" else self.cpu


def variants(model: str) -> list[Variant]:
    out = [
        Variant("a", "plain PyTorch loop", v_plain),
        Variant("b", "bare Lightning", _lightning(PlainModule)),
        Variant("c", "Lightning + self.log(loss) every step", _lightning(LoggingModule)),
        Variant("d", "Learner.fit defaults (TensorBoard logger), no bar", _learner()),
        Variant("d'", "Learner.fit, logger=False", _learner(logger=False)),
        Variant("e", "d + 10 no-op v2 callbacks (every event)", _learner(lambda: [NoOpV2() for _ in range(10)])),
        Variant(
            "f1", "d + 10 no-op v1 callbacks", _learner(lambda: [NoOpV1() for _ in range(10)]), needs="bridge.dialects"
        ),
        Variant(
            "f3",
            "d + 10 no-op course-v3 callbacks",
            _learner(lambda: [NoOpCourseV3() for _ in range(10)]),
            needs="bridge.dialects",
        ),
        Variant(
            "g",
            "b + LightningAdapter(10 no-op v2 callbacks)",
            _lightning(PlainModule, _adapter_cbs),
            needs="bridge.LightningAdapter",
        ),
    ]
    by = {v.key: v for v in out}
    # Timing order (see ``schedule``): each budgeted pair are neighbours, so timed back to back.
    keys = ("b", "a", "d", "e", "d'") if model == "compute" else ("c", "a", "g", "b", "d", "e", "f1", "f3", "d'")
    return [by[k] for k in keys]


def importable(what: str) -> str | None:
    """None if ``what`` (``pkg.mod`` or ``pkg.Name``) imports from this checkout, else the reason.

    A module is only accepted from this repository: an editable install of another
    checkout could otherwise fill in a module this one lacks.
    """
    mod, _, attr = what.rpartition(".")
    try:
        if attr[:1].isupper():
            m = __import__(mod, fromlist=[attr])
            getattr(m, attr)
        else:
            m = __import__(what, fromlist=["_"])
    except (ImportError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    file = getattr(m, "__file__", None) or ""
    if not Path(file).resolve().is_relative_to(REPO):
        return f"{m.__name__} comes from {file}, not from this checkout"
    return None


# -- timing ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(s: Setup, v: Variant, dl: Any) -> tuple[float, float]:
    """(wall, process CPU) seconds per training step of one fit over ``dl``, gc off while it runs.

    Read from the loader's stopwatch (see :class:`Batches`). A collection triggered inside
    one variant's fit would charge it for garbage left by the others; collecting first and
    disabling gc while timing removes that.
    """
    run = v.prepare(s, dl)
    gc.collect()
    sink = io.StringIO()
    dl.dataset.stamps.clear()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        _sync(s.device)
        gc.disable()
        try:
            run()
            _sync(s.device)
        finally:
            gc.enable()
    return dl.dataset.per_batch()  # type: ignore[no-any-return]


def schedule(vs: list[Variant], r: int) -> tuple[list[Variant], bool]:
    """Repeat ``r``'s variant order and whether long fits go first.

    The order is a rotation of ``vs`` (reversed on odd repeats), so neighbours in ``vs``
    stay neighbours (but for the wrap-around) and every variant takes every position.
    Within a repeat the long fits run in this order and the short fits in the reverse
    one (or short first then long, on alternate pairs of repeats): a variant's two fits
    sit symmetrically around the middle of the repeat, and neighbours are timed back to
    back, which is what the paired ratios need.
    """
    k = r % len(vs)
    order = vs[k:] + vs[:k]
    if r % 2:
        order = order[::-1]
    return order, (r // 2) % 2 == 0


def measure(s: Setup, vs: list[Variant], repeats: int, log: Callable[[str], None], clock: str = "wall") -> None:
    for v in vs:  # warm-up: imports, allocator, Lightning's first-fit costs
        timed(s, v, s.short_dl)
        timed(s, v, s.short_dl)
    for r in range(repeats):
        order, _ = schedule(vs, r)
        t = {v.key: timed(s, v, s.long_dl) for v in order}
        for v in vs:
            v.wall.append(t[v.key][0])
            v.cpu.append(t[v.key][1])
        log(
            f"  [{s.name}] repeat {r + 1}/{repeats} ({clock} ms/batch): "
            + "  ".join(f"{v.key}={v.samples(clock)[-1] * 1e3:.3f}" for v in vs)
        )


RATIOS = (("d", "b"), ("d'", "b"), ("d", "a"), ("d'", "a"), ("e", "d"), ("f1", "d"), ("f3", "d"), ("g", "b"))


def _stats(samples: list[float]) -> dict[str, Any]:
    ms = [x * 1e3 for x in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "samples_ms": ms}


def summarize(s: Setup, vs: list[Variant], clock: str = "wall") -> dict[str, Any]:
    """Stats of ``clock`` (the one the ratios and budget use); the other clock's under ``other_clock``."""
    other = "cpu" if clock == "wall" else "wall"
    canon = ("a", "b", "c", "d", "d'", "e", "f1", "f3", "g")  # table order (timing order differs)
    by = {v.key: v for v in sorted(vs, key=lambda v: canon.index(v.key)) if v.wall}
    res: dict[str, Any] = {
        "config": {
            "sizes": list(s.sizes),
            "bs": s.bs,
            "n_long": s.n_long,
            "n_short": s.n_short,
            "params": sum(p.numel() for p in make_model(s.sizes, torch.device("cpu")).parameters()),
        },
        "clock": clock,
        "variants": {},
        "ratios": {},
        "paired_ratios": {},
        "min_ratios": {},
        "other_clock": {"clock": other, "variants": {}, "ratios": {}},
    }
    for k, v in by.items():
        res["variants"][k] = {"label": v.label, **_stats(v.samples(clock))}
        res["other_clock"]["variants"][k] = _stats(v.samples(other))
    for num, den in RATIOS:
        if num in by and den in by:
            name = f"{num}/{den}"
            res["ratios"][name] = res["variants"][num]["median_ms"] / res["variants"][den]["median_ms"]
            pairs = [x / y for x, y in zip(by[num].samples(clock), by[den].samples(clock))]
            res["paired_ratios"][name] = statistics.median(pairs)
            res["min_ratios"][name] = res["variants"][num]["min_ms"] / res["variants"][den]["min_ms"]
            res["other_clock"]["ratios"][name] = (
                res["other_clock"]["variants"][num]["median_ms"] / res["other_clock"]["variants"][den]["median_ms"]
            )
    return res


# -- lr_find --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _gc_off() -> Any:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _now(clock: str) -> float:
    return time.perf_counter() if clock == "wall" else time.process_time()


def bench_lr_find(
    s: Setup, repeats: int, num_it: int, log: Callable[[str], None], clock: str = "wall"
) -> dict[str, Any]:
    from lightning.pytorch.tuner import Tuner

    def learner_run() -> float:
        learn = s.learner(s.long_dl, logger=False)
        gc.collect()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _gc_off():
            t0 = _now(clock)
            learn.lr_find(num_it=num_it, stop_div=False, show_plot=False)
            return _now(clock) - t0

    def tuner_run() -> float:
        module = PlainModule(make_model(s.sizes, s.device))
        gc.collect()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _gc_off():
            t0 = _now(clock)
            # The Trainer is built inside the timing, as Learner.lr_find builds its own.
            trainer = s.trainer(max_epochs=None)
            Tuner(trainer).lr_find(
                module,
                train_dataloaders=s.long_dl,
                min_lr=1e-7,
                max_lr=10.0,
                num_training=num_it,
                early_stop_threshold=None,
                update_attr=False,
            )
            return _now(clock) - t0

    why = importable("callbacks.lr_finder")
    if why is not None:
        return {"skipped": f"Learner.lr_find not available ({why})"}
    try:
        learner_run()
        learner_run()
    except ImportError as exc:
        return {"skipped": f"Learner.lr_find not available ({type(exc).__name__}: {exc})"}
    except Exception as exc:  # keep the rest of the run's results
        return {"skipped": f"Learner.lr_find failed ({type(exc).__name__}: {exc})"}
    tuner_run()
    tuner_run()
    learn_t: list[float] = []
    tune_t: list[float] = []
    for r in range(repeats):
        if r % 2:
            tune_t.append(tuner_run())
            learn_t.append(learner_run())
        else:
            learn_t.append(learner_run())
            tune_t.append(tuner_run())
        log(f"  [lr_find] repeat {r + 1}/{repeats}: learner={learn_t[-1]:.3f}s tuner={tune_t[-1]:.3f}s")
    lm, tm = statistics.median(learn_t), statistics.median(tune_t)
    return {
        "clock": clock,
        "num_it": num_it,
        "learner_s": {"median": lm, "min": min(learn_t), "max": max(learn_t), "samples": learn_t},
        "tuner_s": {"median": tm, "min": min(tune_t), "max": max(tune_t), "samples": tune_t},
        "ratio": lm / tm,
        "paired_ratio": statistics.median(a / b for a, b in zip(learn_t, tune_t)),
    }


# -- report ------------------------------------------------------------------------------------------------
def budget(results: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail per budgeted ratio, judged on the paired ratio (median of per-repeat ratios)."""
    out: dict[str, Any] = {}
    for (model, ratio), limit in BUDGET.items():
        res = results.get(model, {})
        value = res.get("paired_ratios", {}).get(ratio)
        out[f"{model} {ratio}"] = {
            "value": value,
            "of_medians": res.get("ratios", {}).get(ratio),
            "limit": limit,
            "pass": None if value is None else value <= limit,
        }
    lr = results.get("lr_find", {})
    if "paired_ratio" in lr:
        out["lr_find learner/tuner"] = {
            "value": lr["paired_ratio"],
            "of_medians": lr["ratio"],
            "limit": 1.0,
            "pass": lr["paired_ratio"] <= 1.0,
        }
    else:
        out["lr_find learner/tuner"] = {"value": None, "of_medians": None, "limit": 1.0, "pass": None}
    return out


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for model in ("small", "compute"):
        res = results.get(model)
        if not res:
            continue
        cfg = res["config"]
        sizes = "->".join(map(str, cfg["sizes"]))
        other = res["other_clock"]
        span = f"steps {cfg['n_short']}..{cfg['n_long'] - 2} of a {cfg['n_long']}-batch fit, timed in the loader"
        lines.append(f"\n{model}: MLP {sizes}, batch {cfg['bs']}; ms per batch = {span}, {res['clock']} time")
        b = res["variants"].get("b", {}).get("median_ms")
        lines.append(
            f"| {'var':<4} | {'what':<50} | {'median':>7} | {'min':>7} | {'max':>7} | {'/ (b)':>5} "
            f"| {other['clock'] + ' median':>11} |"
        )
        lines.append(f"|{'-' * 6}|{'-' * 52}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 7}|{'-' * 13}|")
        for k, v in res["variants"].items():
            rel = f"{v['median_ms'] / b:.2f}" if b else "-"
            lines.append(
                f"| {k:<4} | {v['label']:<50} | {v['median_ms']:7.3f} | {v['min_ms']:7.3f} "
                f"| {v['max_ms']:7.3f} | {rel:>5} | {other['variants'][k]['median_ms']:11.3f} |"
            )
        lines.append(
            "ratios (paired: median of per-repeat ratios; ratio of medians in brackets): "
            + ", ".join(f"{k} = {res['paired_ratios'][k]:.3f} [{r:.3f}]" for k, r in res["ratios"].items())
        )
    lr = results.get("lr_find")
    if lr:
        if "ratio" in lr:
            lines.append(
                f"\nlr_find ({lr['num_it']} iterations, small MLP): Learner.lr_find {lr['learner_s']['median']:.3f}s, "
                f"Tuner.lr_find {lr['tuner_s']['median']:.3f}s, paired ratio {lr['paired_ratio']:.3f} "
                f"(ratio of medians {lr['ratio']:.3f})"
            )
        else:
            lines.append(f"\nlr_find: skipped ({lr['skipped']})")
    lines.append("\nbudget (paired ratios):")
    for name, b in results["budget"].items():
        val = "n/a" if b["value"] is None else f"{b['value']:.3f}"
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[b["pass"]]
        med = "" if b["of_medians"] is None else f"  (ratio of medians {b['of_medians']:.3f})"
        lines.append(f"  {name:<24} {val:>7} <= {b['limit']:.2f}  {verdict}{med}")
    for note in results["skipped"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer batches (same repeats): about half the time")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=11, help="timed repeats per variant (>= 5 for the budget)")
    p.add_argument("--only", choices=("small", "compute", "lr_find"), action="append", help="run only these parts")
    p.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"), help="where every variant runs")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the ratios and budget use: wall time, or this process's CPU time (steadier on a shared "
        "machine; both are stored)",
    )
    p.add_argument("--batches", type=int, nargs=2, metavar=("N", "n"), help="small-model N and n (smoke tests)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.accelerator == "cuda" else "cpu")
    parts = args.only or ["small", "compute", "lr_find"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    n_small, n0_small = (800, 80) if args.quick else (1500, 150)
    n_comp, n0_comp = (12, 3) if args.quick else (20, 4)
    if args.batches:
        n_small, n0_small = args.batches
        n_comp, n0_comp = max(args.batches[0] // 50, 3), max(args.batches[1] // 50, 1)

    results: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "repeats": args.repeats,
            "clock": args.clock,
            "method": "per-batch = time between fetching batch n_short and the last batch of an n_long-batch fit, "
            "over the steps in between (the loader is the stopwatch: no set-up, epoch end or teardown); "
            "gc collected before and disabled during each timed fit; interleaved repeats after warm-up; "
            "budget judged on paired ratios (median over repeats of the per-repeat ratio of neighbours "
            "timed back to back); ratios = ratio of medians, for reference",
            "budget_figure": "paired_ratios",
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "skipped": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        setups = {
            "small": lambda: Setup("small", (64, 64, 10), 64, n_small, n0_small, device, args.accelerator, Path(tmp)),
            "compute": lambda: Setup(
                "compute", (512, 2048, 2048, 10), 256, n_comp, n0_comp, device, args.accelerator, Path(tmp)
            ),
        }
        for model in ("small", "compute"):
            if model not in parts:
                continue
            s = setups[model]()
            vs = []
            for v in variants(model):
                why = importable(v.needs) if v.needs else None
                if why is not None:
                    note = f"{model} ({v.key}) {v.label}: skipped, {v.needs} not importable ({why})"
                    if note not in results["skipped"]:
                        results["skipped"].append(note)
                    log("note: " + note)
                    continue
                vs.append(v)
            log(f"{model}: {len(vs)} variants x {args.repeats} repeats")
            measure(s, vs, args.repeats, log, args.clock)
            results[model] = summarize(s, vs, args.clock)
        if "lr_find" in parts:
            s = Setup("lr_find", (64, 64, 10), 64, 120, 10, device, args.accelerator, Path(tmp))
            results["lr_find"] = bench_lr_find(s, LR_FIND_REPEATS, 100, log, args.clock)
            if "skipped" in results["lr_find"]:
                results["skipped"].append("lr_find: " + results["lr_find"]["skipped"])
                log("note: lr_find " + results["lr_find"]["skipped"])
    results["meta"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["budget"] = budget(results)
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()

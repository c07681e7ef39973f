#!/usr/bin/env python
"""Per-batch overhead of fastlight's ``Learner.fit`` against plain PyTorch and bare Lightning.

Run from the repository root (one process, one CPU, about 11 minutes; ``--quick`` ~ half)::

    python tests/benchmarks/bench_overhead.py [--quick] [--only small] [--out bench.json]

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
    g   b + ``LightningAdapter`` with 10 no-op v2 callbacks and ``loss_func``   [needs bridge.LightningAdapter]
    g0  b + ``LightningAdapter()``: no callbacks, no ``loss_func`` (the adapter's own cost)
    g1  g0 + ``loss_func`` (the loss computed a second time, from the callbacks' view of the batch)

g/b splits into g0/b (the adapter), g1/g0 (the second loss: the step's own loss still runs, for
its logging) and g/g1 (the 10 callbacks, as e/d for the Learner).

Method: the variants of one model train **in lockstep**: one fit per variant, each in its
own thread, one thread running at a time, taking turns every ``block`` batches (10 on the
small MLP, about 10 ms; one step on the compute-bound one), the process pinned to one CPU
(``--cpu``), glibc's malloc in one arena that keeps freed memory (``steady_malloc``: else
each thread's arena hands memory back and every step page-faults it in again). The loader is
the stopwatch (every variant fetches a batch right before training on it): a turn is timed
from the fetch that starts it to the fetch that ends it, so Trainer construction, set-up,
the epoch end (validation, checkpoint) and teardown stay outside; set-up runs before the
first turn, the ends of the fits after the last one. Only turns from batch ``n_short`` on
count (steady state), and every variant was warmed up by two short fits first. Garbage
collection is off during a repeat (after a ``gc.collect()``), so no variant pays for
another's garbage. A repeat is one such lockstep fit of every variant over the same
``n_long`` batches; the turn order rotates (and reverses) between repeats, the budgeted
pairs (b,d / d,e on the small MLP, a,d / d,e on the compute-bound one) being neighbours in
it.

Why lockstep: this machine's speed changes by 20-40% from one tenth of a second to the next
(the same plain loop measured 0.41-0.58 ms per step in consecutive windows), several times
the overheads being measured; fits timed one after the other (the first version of this
benchmark) gave e/d 1.03, 1.10 and 1.23 for the same code. In lockstep every variant
shares every fast and slow period. Pinning and short turns matter: a thread woken on the
other core runs at that core's speed, and the machine's speed drifts within 50 ms (10th-90th
percentile of the d/b pair ratios: 0.73-1.44 unpinned with 50-batch turns, 0.90-1.10
pinned with 50-batch turns, 0.97-1.08 pinned with 10-batch turns).

The budget figure is the **paired ratio**: on the small MLP the same ``LOG_PERIOD`` (50)
batches, trained by the two variants in interleaved turns, give one ratio (each pair holds
exactly one of the periodic logging steps); on the compute-bound MLP a pair is one step
(its 40-batch fit never reaches a logging step, whose cost there is nil on a CPU; on a GPU
it would hide a periodic sync). The figure is the median over all pairs of all repeats,
with a 95% t-interval of the per-repeat medians (pairs within a repeat share its state,
so they are not independent; see ``repeat_ci95``). Two control variants, b2 (= b) and a2
(= a), print each run's noise floor: b2/b and a2/a would be 1 on a perfect machine. For
reference the JSON also holds per-variant medians of the per-repeat times, the ratio of
those medians, the median over repeats of the ratio of whole-window times, and the spread
(10th-90th percentile) of the pair ratios. Lightning runs validation-free
(``limit_val_batches=0``); the Learner (which needs a validation loader) gets a one-batch
validation set, outside the timed turns. Wall and thread CPU time are both recorded;
``--clock`` picks the one the ratios and the budget use (CPU time leaves out work a fit
hands to its own threads, such as TensorBoard's writer).

lr_find: ``Learner.lr_find(num_it=100, stop_div=False)`` against
``Tuner(trainer).lr_find(num_training=100, early_stop_threshold=None, update_attr=False)``
on the same small MLP and batches, both without bar or logger, timed whole in alternating
order, 101 paired repeats (the budget figure: the median of the per-repeat ratios; a run
takes about 0.12 s, so the machine's drift hits each pair hard and many pairs are needed):
from a built model (Learner / LightningModule) to the result, so the Tuner's time includes
building its ``Trainer`` (about 5-10 ms, mostly Lightning's scan of installed packages'
entry points) as the Learner's includes the one ``fit`` builds, plus each side's
model/optimizer save and restore.

The JSON written by ``--out`` holds, per model, per-variant medians/min/max/samples (ms per
batch, one sample per repeat), and for (d)/(b), (d)/(a), (e)/(d), (f)/(d), (g)/(b), g0/b, g1/g0, g/g1:
``paired_ratios`` (the budget figure), ``paired_ci95``, ``paired_p10_p90``, ``rounds``
(pairs), ``repeat_ratios``, ``ratios`` (of medians) and ``min_ratios``; ``lr_find`` with
``paired_ratio``, ``paired_ci95`` and ``ratio``; and ``budget``: per budgeted ratio its
paired ``value``, ``ci95``, ``of_medians``, ``limit`` and ``pass`` (issue 21's budgets: ``BUDGET``).
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
from torch.utils.data import DataLoader  # noqa: E402

from bridge import Callback, DataBunch, Learner  # noqa: E402
from bridge.events import EVENT_NAMES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lockstep import Batches, Lockstep, steady_malloc  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.ERROR)

#: lr_find runs are short (~0.1 s): many repeats cost little and steady the median.
LR_FIND_REPEATS = 101

#: Small-model batches per turn in lockstep (about 10 ms: see ``Lockstep``).
SMALL_BLOCK = 10

#: Steps compared as one pair: ``log_every_n_steps`` (Learner and Lightning default), so each
#: pair holds exactly one of the Recorder's and Lightning's periodic logging steps.
LOG_PERIOD = 50

#: Budget of issue 21 (tighter than issue 8's d/b 1.10, e/d 1.05, d/a 1.03): (model, ratio) -> upper limit.
BUDGET: dict[tuple[str, str], float] = {
    ("small", "d/b"): 1.03,
    ("small", "e/d"): 1.02,
    ("small", "f1/d"): 1.05,
    ("small", "g/b"): 1.05,
    ("compute", "d/a"): 1.02,
}


# -- data and models ---------------------------------------------------------------------------
def make_batches(n: int, bs: int, n_in: int, n_out: int, device: torch.device, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(bs, n_in, generator=g)
        y = torch.randint(0, n_out, (bs,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def loader(batches: list[Any], start: int = 0, gate: Lockstep | None = None, key: str = "", device: Any = None) -> Any:
    return DataLoader(Batches(batches, start, gate, key, device), batch_size=None, shuffle=False)


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
    block: int
    group: int  # turns per compared pair (their batches: ``block * group`` steps)
    device: torch.device
    accelerator: str
    tmp: Path
    batches: Any = None
    long_dl: Any = None
    short_dl: Any = None

    def __post_init__(self) -> None:
        batches = make_batches(self.n_long, self.bs, self.sizes[0], self.sizes[-1], self.device)
        self.batches = batches
        span, pair = self.n_long - 1 - self.n_short, self.block * self.group
        if self.n_short % pair or span % pair:
            raise ValueError(
                f"n_short={self.n_short} and n_long - 1 - n_short={span} must be multiples of "
                f"block * group = {pair} (steps per compared pair)"
            )
        self.long_dl = loader(batches)  # lr_find's
        self.short_dl = loader(batches[: self.n_short])

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
        # Own folder and validation loader: fits end concurrently in lockstep (see Lockstep).
        data = DataBunch(dl, loader(self.batches[:1]))
        path = Path(tempfile.mkdtemp(dir=self.tmp))
        opts: dict[str, Any] = dict(
            loss_func=F.cross_entropy, enable_progress_bar=False, accelerator=self.accelerator, path=path
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


def _adapter_cbs(n: int = 10, loss: bool = True) -> Callable[[], list[Any]]:
    def make() -> list[Any]:
        from bridge import LightningAdapter  # type: ignore[attr-defined]

        return [LightningAdapter([NoOpV2() for _ in range(n)], loss_func=F.cross_entropy if loss else None)]

    return make


@dataclass
class Variant:
    key: str
    label: str
    prepare: Prepare
    needs: str | None = None  # a module/attribute that must import, else skipped with a note
    wall: list[float] = field(default_factory=list)  # per repeat: s per step
    cpu: list[float] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (wall, CPU) s per block, all repeats

    def samples(self, clock: str) -> list[float]:
        return self.wall if clock == "wall" else self.cpu

    def round_times(self, clock: str) -> list[float]:
        return [r[0] if clock == "wall" else r[1] for r in self.rounds]


def variants(model: str) -> list[Variant]:
    out = [
        Variant("a", "plain PyTorch loop", v_plain),
        Variant("a2", "a again (control: a2/a = this run's noise floor)", v_plain),
        Variant("b", "bare Lightning", _lightning(PlainModule)),
        Variant("b2", "b again (control: b2/b = this run's noise floor)", _lightning(PlainModule)),
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
            "b + LightningAdapter(10 no-op v2 cbs, loss_func)",
            _lightning(PlainModule, _adapter_cbs()),
            needs="bridge.LightningAdapter",
        ),
        Variant(
            "g0",
            "b + LightningAdapter(), no loss_func",
            _lightning(PlainModule, _adapter_cbs(0, loss=False)),
            needs="bridge.LightningAdapter",
        ),
        Variant(
            "g1",
            "g0 + loss_func",
            _lightning(PlainModule, _adapter_cbs(0)),
            needs="bridge.LightningAdapter",
        ),
    ]
    by = {v.key: v for v in out}
    # Turn order (see ``ring``): each budgeted pair are neighbours, so they take turns back to back.
    keys = (
        ("b", "a2", "a", "d", "e", "d'")
        if model == "compute"
        else ("g0", "c", "a", "g1", "g", "b2", "b", "d", "e", "f1", "f3", "d'")
    )
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


def warm_up(s: Setup, v: Variant) -> None:
    """Two untimed fits over the short loader: imports, allocator, Lightning's first-fit costs."""
    for _ in range(2):
        run = v.prepare(s, s.short_dl)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run()


def ring(vs: list[Variant], r: int) -> list[Variant]:
    """Repeat ``r``'s turn order: a rotation of ``vs``, reversed on odd repeats.

    Turns go round the ring, so budgeted pairs, neighbours in ``vs``, always take turns
    back to back. Reversing swaps which of the two goes first (a variant's turn might
    pay for the one before it, e.g. in cache misses); rotating changes which variant opens
    the repeat.
    """
    k = r % len(vs)
    order = vs[k:] + vs[:k]
    return order[::-1] if r % 2 else order


def lockstep_repeat(s: Setup, vs: list[Variant], order: list[Variant], block: int) -> dict[str, Batches]:
    """One fit of every variant over the long batches, in lockstep: each one's stopwatch.

    gc is collected before and disabled during the fits, so no variant pays for a
    collection of another's garbage.
    """
    gate = Lockstep([v.key for v in order], block)
    dls = {v.key: loader(s.batches, s.n_short, gate, v.key, s.device) for v in vs}
    fits = {v.key: v.prepare(s, dls[v.key]) for v in order}
    gc.collect()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _gc_off():
        errors = gate.run(fits)
    if errors:
        key, exc = next(iter(errors.items()))
        raise RuntimeError(f"variant {key} failed: {type(exc).__name__}: {exc}") from exc
    return {k: dl.dataset for k, dl in dls.items()}


def measure(
    s: Setup, vs: list[Variant], repeats: int, block: int, log: Callable[[str], None], clock: str = "wall"
) -> None:
    for v in vs:
        warm_up(s, v)
    for r in range(repeats):
        watches = lockstep_repeat(s, vs, ring(vs, r), block)
        for v in vs:
            wall, cpu = watches[v.key].per_batch()
            v.wall.append(wall)
            v.cpu.append(cpu)
            v.rounds.extend(watches[v.key].blocks)
        log(
            f"  [{s.name}] repeat {r + 1}/{repeats} ({clock} ms/batch): "
            + "  ".join(f"{v.key}={v.samples(clock)[-1] * 1e3:.3f}" for v in vs)
        )


RATIOS = (
    ("b2", "b"),
    ("a2", "a"),
    ("d", "b"),
    ("d'", "b"),
    ("d", "a"),
    ("d'", "a"),
    ("e", "d"),
    ("f1", "d"),
    ("f3", "d"),
    ("g", "b"),
    ("g0", "b"),
    ("g1", "g0"),
    ("g", "g1"),
)


def _stats(samples: list[float]) -> dict[str, Any]:
    ms = [x * 1e3 for x in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "samples_ms": ms}


#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def median_ci95(xs: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of the median of independent ``xs`` (order statistics); None if too few."""
    ys, n = sorted(xs), len(xs)
    if n < 6:
        return None
    half = 1.96 * n**0.5 / 2
    lo, hi = max(int(n / 2 - half), 0), min(int(n / 2 + half + 1), n - 1)
    return ys[lo], ys[hi]


def repeat_ci95(pairs: list[float], repeats: int) -> tuple[float, float] | None:
    """95% t-interval of the per-repeat medians of ``pairs`` (``repeats`` equal runs); None if < 2.

    Pairs within one repeat share that repeat's state (which instance sits where in memory,
    the machine's mood that minute), so they are not independent: an interval that treats
    them so is too narrow (two runs' intervals failed to overlap). Each repeat's median is
    one independent measurement; the interval is over those.
    """
    if repeats < 2 or len(pairs) % repeats:
        return None
    size = len(pairs) // repeats
    meds = [statistics.median(pairs[i : i + size]) for i in range(0, len(pairs), size)]
    mean, sd = statistics.mean(meds), statistics.stdev(meds)
    t = _T975[repeats - 2] if repeats - 1 <= len(_T975) else 1.96
    half = t * sd / repeats**0.5
    return mean - half, mean + half


def summarize(s: Setup, vs: list[Variant], clock: str = "wall") -> dict[str, Any]:
    """Stats of ``clock`` (the one the ratios and budget use); the other clock's under ``other_clock``."""
    other = "cpu" if clock == "wall" else "wall"
    # Table order (timing order differs).
    canon = ("a", "a2", "b", "b2", "c", "d", "d'", "e", "f1", "f3", "g", "g0", "g1")
    by = {v.key: v for v in sorted(vs, key=lambda v: canon.index(v.key)) if v.wall}
    res: dict[str, Any] = {
        "config": {
            "sizes": list(s.sizes),
            "bs": s.bs,
            "n_long": s.n_long,
            "n_short": s.n_short,
            "block": s.block,
            "group": s.group,
            "params": sum(p.numel() for p in make_model(s.sizes, torch.device("cpu")).parameters()),
        },
        "clock": clock,
        "variants": {},
        "ratios": {},
        "paired_ratios": {},
        "paired_ci95": {},
        "rounds": {},
        "paired_p10_p90": {},
        "paired_samples": {},
        "repeat_ratios": {},
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
            g, xs, ys = s.group, by[num].round_times(clock), by[den].round_times(clock)
            if len(xs) != len(ys) or len(xs) % g:
                raise RuntimeError(f"{name}: {len(xs)} and {len(ys)} timed blocks cannot be paired {g} by {g}")
            pairs = [sum(xs[i : i + g]) / sum(ys[i : i + g]) for i in range(0, len(xs), g)]
            res["paired_ratios"][name] = statistics.median(pairs)
            res["paired_ci95"][name] = repeat_ci95(pairs, len(by[num].wall))
            res["rounds"][name] = len(pairs)
            res["paired_samples"][name] = pairs
            q = statistics.quantiles(pairs, n=10) if len(pairs) > 1 else [pairs[0]] * 9
            res["paired_p10_p90"][name] = (q[0], q[-1])
            totals = [x / y for x, y in zip(by[num].samples(clock), by[den].samples(clock))]
            res["repeat_ratios"][name] = {"median": statistics.median(totals), "samples": totals}
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
        "paired_ci95": median_ci95([a / b for a, b in zip(learn_t, tune_t)]),
    }


# -- report ------------------------------------------------------------------------------------------------
def budget(results: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail per budgeted ratio, judged on the paired ratio (median over all pairs)."""
    out: dict[str, Any] = {}
    for (model, ratio), limit in BUDGET.items():
        res = results.get(model, {})
        value = res.get("paired_ratios", {}).get(ratio)
        out[f"{model} {ratio}"] = {
            "value": value,
            "ci95": res.get("paired_ci95", {}).get(ratio),
            "of_medians": res.get("ratios", {}).get(ratio),
            "limit": limit,
            "pass": None if value is None else value <= limit,
        }
    lr = results.get("lr_find", {})
    if "paired_ratio" in lr:
        out["lr_find learner/tuner"] = {
            "value": lr["paired_ratio"],
            "ci95": lr["paired_ci95"],
            "of_medians": lr["ratio"],
            "limit": 1.0,
            "pass": lr["paired_ratio"] <= 1.0,
        }
    else:
        out["lr_find learner/tuner"] = {"value": None, "ci95": None, "of_medians": None, "limit": 1.0, "pass": None}
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
        n_rounds = next(iter(res["rounds"].values()), 0)
        pair = cfg["block"] * cfg["group"]
        lines.append(
            f"ratios (paired: median over {n_rounds} pairs of {pair} batch{'es' if pair > 1 else ''}; in brackets "
            "the median over repeats of the ratio of whole-window times): "
            + ", ".join(
                f"{k} = {res['paired_ratios'][k]:.3f} [{res['repeat_ratios'][k]['median']:.3f}]" for k in res["ratios"]
            )
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
        ci = "" if b["ci95"] is None else f"  95% CI {b['ci95'][0]:.3f}..{b['ci95'][1]:.3f}"
        med = "" if b["of_medians"] is None else f"  (ratio of medians {b['of_medians']:.3f})"
        lines.append(f"  {name:<24} {val:>7} <= {b['limit']:.2f}  {verdict}{ci}{med}")
    for note in results["skipped"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def pin(cpu: int | None) -> int | None:
    """Pin this process to ``cpu`` (None: the first allowed one; -1: leave it); the CPU pinned to."""
    if cpu == -1 or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = allowed[0]
    if cpu not in allowed:
        raise SystemExit(f"--cpu={cpu}: this process may only run on CPUs {allowed}")
    os.sched_setaffinity(0, {cpu})
    return cpu


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
        help="what the ratios and budget use: wall time, or CPU time (the timing thread's in the fits, the "
        "process's for lr_find); both are stored",
    )
    p.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="pin the process to this CPU (default: the first one it may use; -1: do not pin). Threads "
        "taking turns on different cores see different speeds",
    )
    p.add_argument("--batches", type=int, nargs=2, metavar=("N", "n"), help="small-model N and n (smoke tests)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.accelerator == "cuda" else "cpu")
    pinned = pin(args.cpu)
    malloc = steady_malloc()
    parts = args.only or ["small", "compute", "lr_find"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    n_small, n0_small = (801, 100) if args.quick else (1501, 150)
    n_comp, n0_comp = (16, 3) if args.quick else (40, 4)
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
            "method": "lockstep: one fit per variant in its own thread, one running at a time, turns of "
            "`block` batches, process pinned to one CPU; the loader is the stopwatch (a turn is timed from "
            "the fetch that starts it to the one that ends it: no set-up, epoch end or teardown); batches "
            "from n_short on count; gc collected before and disabled during a repeat; warm-up first; "
            "budget judged on paired ratios: per `block * group` batches (one logging period) the ratio "
            "of the two variants' times, median over all pairs of all repeats, with a 95% CI of that "
            "median bootstrapped over whole repeats; ratios = ratio of per-variant medians, for reference",
            "budget_figure": "paired_ratios",
            "pinned_cpu": pinned,
            "steady_malloc": malloc,
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "skipped": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        setups = {
            "small": lambda: Setup(
                "small",
                (64, 64, 10),
                64,
                n_small,
                n0_small,
                SMALL_BLOCK,
                LOG_PERIOD // SMALL_BLOCK,
                device,
                args.accelerator,
                Path(tmp),
            ),
            "compute": lambda: Setup(
                "compute", (512, 2048, 2048, 10), 256, n_comp, n0_comp, 1, 1, device, args.accelerator, Path(tmp)
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
            measure(s, vs, args.repeats, s.block, log, args.clock)
            results[model] = summarize(s, vs, args.clock)
        if "lr_find" in parts:
            s = Setup("lr_find", (64, 64, 10), 64, 121, 10, 1, 1, device, args.accelerator, Path(tmp))
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

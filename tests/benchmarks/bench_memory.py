#!/usr/bin/env python
"""Long-run memory check (issue 9): 20,000 training steps of a tiny model with the defaults.

    python tests/benchmarks/bench_memory.py [--steps 20000] [--out memory.json]

Resident memory (RSS, from ``/proc/self/statm``) is sampled every 1,000 steps by a
callback; growth is measured from the end of the first epoch (allocator, Lightning and
TensorBoard set-up done) to the end. It also checks that the Recorder keeps plain Python
floats (``losses``, ``lrs``, ``values``), one loss and one lr per step. Exits 1 when growth
reaches 50 MB or a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import Callback, F, Learner, loader, make_batches, make_model, torch

from bridge import DataBunch

LIMIT_MB = 50.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(Callback):
    """RSS every ``every`` training steps, as ``(train_iter, MB)``."""

    def __init__(self, every: int = 1000) -> None:
        self.every = every
        self.samples: list[tuple[int, float]] = []

    def after_batch(self) -> None:
        learn = self.learn
        assert learn is not None
        if learn.training and learn.train_iter % self.every == 0:
            self.samples.append((learn.train_iter, rss_mb()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--per-epoch", type=int, default=2_000)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    n_epoch = max(args.steps // args.per_epoch, 2)
    batches = make_batches(args.per_epoch, 16, 8, 2, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        data = DataBunch(loader(batches), loader(batches[:4]))
        sampler = RssSampler()
        learn = Learner(
            data,
            make_model((8, 16, 2), torch.device("cpu")),
            loss_func=F.cross_entropy,
            cbs=[sampler],
            enable_progress_bar=False,
            path=tmp,
        )  # defaults otherwise: TensorBoard logger, Recorder, log_every_n_steps=50
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            learn.fit(n_epoch)
        wall = time.perf_counter() - t0
    rec = learn.recorder
    steps = n_epoch * args.per_epoch
    base = next(mb for it, mb in sampler.samples if it >= args.per_epoch)
    growth = sampler.samples[-1][1] - base
    checks: dict[str, bool] = {
        "losses are floats": all(type(v) is float for v in rec.losses),
        "lrs are floats": all(type(v) is float for v in rec.lrs),
        "values are floats": all(type(v) is float for row in rec.values for v in row),
        "one loss per step": len(rec.losses) == steps,
        "one lr per step": len(rec.lrs) == steps,
        f"RSS growth < {LIMIT_MB:.0f} MB": growth < LIMIT_MB,
    }
    result: dict[str, Any] = {
        "steps": steps,
        "wall_s": wall,
        "rss_mb": sampler.samples,
        "rss_growth_mb": growth,
        "checks": checks,
        "pass": all(checks.values()),
    }
    print(
        f"{steps} steps in {wall:.1f}s; RSS {base:.1f} MB after epoch 1 -> {sampler.samples[-1][1]:.1f} MB "
        f"(growth {growth:+.1f} MB)"
    )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Where the bridge's per-batch time goes: cProfile of ``Learner.fit`` on the small MLP.

    python tests/benchmarks/profile_bridge.py [--batches 3000] [--logger] [--top 25] [--callbacks 0]
    python tests/benchmarks/profile_bridge.py --calls     # Python calls per batch, every variant

Prints, per training batch in microseconds, the functions defined in ``bridge/`` and
``callbacks/`` (own time and time including callees), then the overall top functions by
own time. cProfile inflates short Python calls several-fold, so read the numbers as
shares, and confirm a gain with ``bench_overhead.py``.

``--calls`` prints, for each variant of ``bench_overhead.py`` (small MLP), the number of
Python function calls per training batch (cProfile's count over a 400-batch fit minus a
100-batch fit, / 300). Unlike timings it does not depend on machine load, so it is a
steady regression figure for the per-batch path.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import REPO, NoOpV2, Setup, importable, torch, variants


def calls_per_batch(tmp: str) -> None:
    s = Setup("small", (64, 64, 10), 64, 400, 100, 1, 1, torch.device("cpu"), "cpu", Path(tmp))
    print(f"{'var':<4} {'calls/batch':>11}  what")
    for v in variants("small"):
        if v.needs and importable(v.needs) is not None:
            print(f"{v.key:<4} {'skipped':>11}  {v.label} ({v.needs} not importable)")
            continue
        counts = []
        for dl in (s.long_dl, s.short_dl):
            run = v.prepare(s, dl)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run()  # warm-up (first-fit imports and caches)
                run = v.prepare(s, dl)
                prof = cProfile.Profile()
                prof.enable()
                run()
                prof.disable()
            counts.append(pstats.Stats(prof).total_calls)  # type: ignore[attr-defined]
        print(f"{v.key:<4} {(counts[0] - counts[1]) / (s.n_long - s.n_short):11.1f}  {v.label}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=3000)
    p.add_argument("--logger", action="store_true", help="keep the default TensorBoard logger")
    p.add_argument("--callbacks", type=int, default=0, help="add this many no-op v2 callbacks")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--calls", action="store_true", help="Python calls per batch of every variant, then exit")
    args = p.parse_args()
    import tempfile

    if args.calls:
        with tempfile.TemporaryDirectory() as tmp:
            calls_per_batch(tmp)
        return

    with tempfile.TemporaryDirectory() as tmp:
        s = Setup("small", (64, 64, 10), 64, args.batches, 10, 1, 1, torch.device("cpu"), "cpu", Path(tmp))
        kw = {} if args.logger else {"logger": False}
        cbs = [NoOpV2() for _ in range(args.callbacks)] or None
        with contextlib.redirect_stdout(io.StringIO()):
            s.learner(s.short_dl, **kw).fit(1)  # warm-up
        learn = s.learner(s.long_dl, cbs=cbs, **kw)
        prof = cProfile.Profile()
        with contextlib.redirect_stdout(io.StringIO()):
            prof.enable()
            learn.fit(1)
            prof.disable()
    stats = pstats.Stats(prof)
    n = args.batches
    rows = []
    total = 0.0
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        rows.append((file, line, func, ncalls, tt, ct))
    print(f"total profiled time per batch: {total / n * 1e6:.1f} us ({n} batches)\n")
    ours = [r for r in rows if r[0].startswith((str(REPO / "bridge"), str(REPO / "callbacks")))]
    print(f"{'us/batch own':>12} {'us/batch cum':>12} {'calls/batch':>11}  function")
    for file, line, func, ncalls, tt, ct in sorted(ours, key=lambda r: -r[4])[: args.top]:
        where = f"{Path(file).relative_to(REPO)}:{line}({func})"
        print(f"{tt / n * 1e6:12.2f} {ct / n * 1e6:12.2f} {ncalls / n:11.2f}  {where}")
    print(f"\nall bridge/callbacks own time: {sum(r[4] for r in ours) / n * 1e6:.1f} us/batch")
    print(f"\ntop {args.top} overall by own time:")
    for file, line, func, ncalls, tt, ct in sorted(rows, key=lambda r: -r[4])[: args.top]:
        short = "/".join(Path(file).parts[-3:])
        print(f"{tt / n * 1e6:12.2f} {ct / n * 1e6:12.2f} {ncalls / n:11.2f}  {short}:{line}({func})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Where the bridge's per-batch time goes: cProfile of ``Learner.fit`` on the small MLP.

    python tests/benchmarks/profile_bridge.py [--batches 3000] [--logger] [--top 25] [--callbacks 0]

Prints, per training batch in microseconds, the functions defined in ``bridge/`` and
``callbacks/`` (own time and time including callees), then the overall top functions by
own time. cProfile inflates short Python calls several-fold, so read the numbers as
shares, and confirm a gain with ``bench_overhead.py``.
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
from bench_overhead import REPO, NoOpV2, Setup, torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=3000)
    p.add_argument("--logger", action="store_true", help="keep the default TensorBoard logger")
    p.add_argument("--callbacks", type=int, default=0, help="add this many no-op v2 callbacks")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        s = Setup("small", (64, 64, 10), 64, args.batches, 10, torch.device("cpu"), "cpu", Path(tmp))
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

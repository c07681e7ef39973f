"""The whole GPU check in one command (about 1-3 minutes on one GPU); prints a summary table.

Usage, from the repository root on a machine with a CUDA GPU::

    python scripts/gpu_check.py

Checks: environment, fp16 grads unscaled at before_step, fp16 cancelled step recovers,
bf16 learns (and a rebound ``loss_grad`` is used), get_preds on GPU equals the CPU model,
FSDP2 (``ModelParallelStrategy``) on one GPU equals the unsharded run (weights, GradientClip's
norm, save/load, get_preds), FSDP1 (``strategy="fsdp"``) is refused before any Trainer, Learner
vs bare Lightning per-batch time (small and compute-bound MLP, median of 3 epochs after a
warm-up epoch; a report, not a pass/fail), and ``ddp`` on 2 GPUs when >= 2 are visible.
Exits 1 if a check fails; with no CUDA device prints "no CUDA device: nothing to check" and
exits 0.

``--accelerator cpu`` is a development dry run of the same check code on CPU (fp16 through
Lightning's CPU GradScaler plugin, FSDP2 on one CPU process with gloo, ddp on 2 CPU processes);
it says nothing about GPUs.

Example:
    $ python scripts/gpu_check.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

Row = tuple[str, str, float]


def _run(name: str, fn: Callable[[Path], str], rows: list[Row]) -> bool:
    """Run one check in its own temporary folder; record ``PASS: summary`` or ``FAIL: error``."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        try:
            result, ok = f"PASS  {fn(Path(tmp))}", True
        except Exception as exc:
            traceback.print_exc()
            msg = str(exc).strip().splitlines()
            result, ok = f"FAIL  {type(exc).__name__}: {msg[0] if msg else ''}"[:160], False
    rows.append((name, result, time.perf_counter() - t0))
    return ok


def _table(rows: list[Row]) -> str:
    w0 = max(len("check"), *(len(r[0]) for r in rows))
    w1 = max(len("result"), *(len(r[1]) for r in rows))
    lines = [f"{'check':<{w0}} | {'result':<{w1}} | time", f"{'-' * w0}-+-{'-' * w1}-+------"]
    lines += [f"{name:<{w0}} | {result:<{w1}} | {secs:5.1f}s" for name, result, secs in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fastlight GPU check (one GPU, < 5 minutes)")
    parser.add_argument(
        "--accelerator",
        choices=("gpu", "cpu"),
        default="gpu",
        help="'cpu': dry run of the check code on CPU (development only)",
    )
    args = parser.parse_args(argv)
    acc = args.accelerator
    # Asked once, before Lightning is imported; never per batch.
    if acc == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0

    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):  # start-up chatter, not results
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*number of training batches.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    from tests.gpu import checks, sharded_checks

    rows: list[Row] = []
    ok = _run("environment", lambda _: checks.environment(), rows)
    ok &= _run("fp16 grads unscaled", lambda p: checks.check_fp16_grads_unscaled(p, acc), rows)
    ok &= _run("fp16 cancelled step recovers", lambda p: checks.check_fp16_cancel_step(p, acc), rows)
    ok &= _run("bf16 learns", lambda p: checks.check_bf16_learns(p, acc), rows)
    ok &= _run("bf16 loss_grad rebind used", lambda p: checks.check_bf16_loss_grad_rebind(p, acc), rows)
    ok &= _run("get_preds equals CPU model", lambda p: checks.check_get_preds(p, acc), rows)
    ok &= _run("FSDP2 on 1 device = unsharded", lambda p: sharded_checks.check_fsdp2_one_device(p, acc), rows)
    ok &= _run("FSDP1 refused", lambda p: sharded_checks.check_fsdp1_refused(p, acc), rows)
    workloads = list(checks.WORKLOADS) if acc == "gpu" else ["small MLP"]  # compute-bound is minutes on CPU

    for workload in workloads:

        def speed(p: Path, workload: str = workload) -> str:
            r = checks.compare_throughput(p, workload, acc)
            return (
                f"ratio {r['ratio']:.2f} (Learner {r['learner_s'] * 1e3:.2f} ms/batch, "
                f"bare {r['bare_s'] * 1e3:.2f} ms/batch, {int(r['n_batches'])} batches/epoch)"
            )

        ok &= _run(f"Learner/bare time, {workload}", speed, rows)
    n_dev = torch.cuda.device_count() if acc == "gpu" else 2
    if n_dev >= 2:
        ok &= _run(
            f"ddp on 2 {'GPUs' if acc == 'gpu' else 'CPU processes'}", lambda p: checks.check_ddp(p, 2, acc), rows
        )
    else:
        rows.append(("ddp on 2 GPUs", f"skipped ({n_dev} GPU visible)", 0.0))
    print()
    print(_table(rows))
    print(f"\n{'ALL CHECKS PASSED' if ok else 'SOME CHECKS FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

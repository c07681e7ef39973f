"""Where a fastlight fit of the peer job spends its fixed costs: ``bench_peer.py --breakdown`` / ``--profile``.

``breakdown`` wraps the functions of :data:`BREAKDOWN` with wall-clock timers and reports the
median milliseconds per fit spent in each; ``profile`` runs cProfile over whole fits. Both
take a runner of ``bench_peer.make_runners()``.

Example:
    >>> BREAKDOWN[0][3]
    'Trainer construction (make_trainer)'
"""

from __future__ import annotations

import contextlib
import gc
import io
import statistics
import time
from collections.abc import Callable
from typing import Any


def profile(run: Callable[[], float], repeats: int, top: int) -> dict[str, Any]:
    """cProfile ``repeats`` fits of one variant (after one warm-up fit); print the top cumulative rows."""
    import cProfile
    import pstats

    with contextlib.redirect_stdout(io.StringIO()):
        run()
    prof = cProfile.Profile()
    seconds = []
    for _ in range(repeats):
        gc.collect()
        with contextlib.redirect_stdout(io.StringIO()):
            prof.enable()
            seconds.append(run())
            prof.disable()
    print(f"{repeats} profiled fits, median {statistics.median(seconds):.3f} s each (cProfile inflates Python calls)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    return {"profiled_seconds": seconds}


#: What ``--breakdown`` times inside a fastlight fit: (module, owner class or "", attribute, label).
BREAKDOWN = (
    ("bridge.learner", "", "make_trainer", "Trainer construction (make_trainer)"),
    ("lightning.pytorch.trainer.trainer", "Trainer", "_teardown", "Trainer teardown"),
    (
        "lightning.pytorch.callbacks.model_checkpoint",
        "ModelCheckpoint",
        "on_train_epoch_end",
        "checkpoint at epoch end",
    ),
    ("bridge.checkpoint_io", "AtomicCheckpointIO", "save_checkpoint", "  of which the atomic write"),
    ("lightning.pytorch.trainer.trainer", "Trainer", "_run_sanity_check", "sanity check"),
    ("lightning.pytorch.loops.evaluation_loop", "_EvaluationLoop", "run", "validation loop"),
    ("bridge.module", "LearnerModule", "on_validation_epoch_start", "  validation start (before_validate)"),
    ("bridge.module", "LearnerModule", "on_validation_epoch_end", "  validation end (after_validate)"),
    ("bridge.module", "LearnerModule", "on_train_epoch_end", "epoch end (after_epoch: metrics, table, log)"),
    ("bridge.output", "LoopOutput", "log_epoch", "  of which the epoch values to Lightning (log_epoch)"),
    ("bridge.recorder", "Recorder", "after_fit", "after_fit (Recorder)"),
    ("lightning.pytorch.loggers.tensorboard", "TensorBoardLogger", "log_metrics", "TensorBoard log_metrics"),
    ("lightning.pytorch.loggers.tensorboard", "TensorBoardLogger", "finalize", "TensorBoard finalize"),
    ("lightning.pytorch.loggers.tensorboard", "TensorBoardLogger", "log_hyperparams", "TensorBoard log_hyperparams"),
    ("lightning.pytorch.trainer.trainer", "Trainer", "_run_stage", "the loops (_run_stage)"),
)


def breakdown(run: Callable[[], float], repeats: int) -> dict[str, Any]:
    """Wall seconds per fit spent in each :data:`BREAKDOWN` function (median over ``repeats`` fits)."""
    import functools
    import importlib

    spent: dict[str, float] = {}
    patched: list[tuple[Any, str, Any]] = []

    def timed(label: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t

        return wrapper

    for module, owner, attr, label in BREAKDOWN:
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        original = target.__dict__.get(attr) if isinstance(target, type) else getattr(target, attr, None)
        if original is None:
            continue
        patched.append((target, attr, original))
        setattr(target, attr, timed(label, original))
    per_fit: dict[str, list[float]] = {label: [] for *_, label in BREAKDOWN}
    per_fit["fit"] = []
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run()
        for _ in range(repeats):
            spent.clear()
            gc.collect()
            with contextlib.redirect_stdout(io.StringIO()):
                per_fit["fit"].append(run())
            for label in per_fit:
                if label != "fit":
                    per_fit[label].append(spent.get(label, 0.0))
    finally:
        for target, attr, original in reversed(patched):
            setattr(target, attr, original)
    out = {label: statistics.median(xs) for label, xs in per_fit.items()}
    for label, sec in out.items():
        print(f"{sec * 1e3:8.2f} ms  {label}")
    return out

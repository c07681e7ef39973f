#!/usr/bin/env python
"""Dispatch cost of callback events, without a Trainer: a steady micro-benchmark.

    python tests/benchmarks/bench_dispatch.py [--n 10] [--repeats 7]

Fires the events of one training batch (``before_batch`` .. ``after_batch``, 8 events)
through a :class:`~bridge.host.CallbackHost`'s handler holding ``TrainEvalCallback`` and
``n`` no-op callbacks of one dialect (v2, fastai v1, course-v3), and prints the best of
``repeats`` short timeit runs (process CPU time) in microseconds per batch and nanoseconds per callback-event
(with the zero-callback handler's cost subtracted). Fires against a host, so what a
callback reads at each event (v1 keyword state, course-v3 runner view) is built exactly
as in a fit. Being pure Python on one core, these figures are far steadier on a loaded
machine than the per-batch times of ``bench_overhead.py``; use them to compare changes to
``bridge/handler.py`` / ``bridge/dialects.py``.

Example:
    >>> # python tests/benchmarks/bench_dispatch.py --n 10
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import NoOpCourseV3, NoOpV1, NoOpV2

from bridge.handler import is_loop_helper
from bridge.host import CallbackHost
from bridge.train_eval import TrainEvalCallback

#: The events one training batch fires, in order.
BATCH_EVENTS = (
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
)

DIALECTS: dict[str, Any] = {"v2": NoOpV2, "v1": NoOpV1, "course": NoOpCourseV3}


def make_host(make: Any, n: int) -> CallbackHost:
    host = CallbackHost()
    host.model = torch.nn.Linear(2, 2)
    host.opt = torch.optim.AdamW(host.model.parameters())  # course-v3 wrappers check its lrs
    host.add_cbs([TrainEvalCallback()] + [make() for _ in range(n)])
    host.xb, host.yb = (torch.zeros(2, 2),), (torch.zeros(2),)
    host.pred = host.loss = host.loss_grad = torch.zeros(())
    host.n_iter, host.n_epoch = 10**9, 1
    host.cb_handler("before_fit")
    host.cb_handler("before_epoch")
    host.cb_handler("before_train")
    return host


def per_batch(host: CallbackHost, number: int, repeats: int) -> float:
    """Best seconds per batch of firing the 8 batch events."""
    handler = host.cb_handler
    events = BATCH_EVENTS

    def batch() -> None:
        for event in events:
            handler(event)

    batch()
    gc.collect()
    gc.disable()
    try:
        # CPU time of this process (not wall): a core shared with other jobs only stretches wall time.
        return min(timeit.repeat(batch, number=number, repeat=repeats, timer=time.process_time)) / number
    finally:
        gc.enable()


def subscribed(make: Any) -> int:
    """How many of the batch events one callback of this kind runs at."""
    handler = make_host(make, 1).cb_handler
    (mine,) = [c for c in handler.cbs if not isinstance(c, TrainEvalCallback) and not is_loop_helper(c)]
    return sum(any(c is mine for c in handler.subscribers(e)) for e in BATCH_EVENTS)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10, help="no-op callbacks per dialect")
    p.add_argument("--repeats", type=int, default=40, help="timeit runs; the best one counts")
    p.add_argument("--number", type=int, default=300, help="batches per timeit run")
    args = p.parse_args(argv)
    base = per_batch(make_host(NoOpV2, 0), args.number, args.repeats)
    print(f"handler with TrainEvalCallback only: {base * 1e6:.2f} us per batch (8 events)")
    out = {"base_us": base * 1e6}
    for name, make in DIALECTS.items():
        t = per_batch(make_host(make, args.n), args.number, args.repeats)
        extra = t - base
        # events each callback subscribes to among the 8 (course-v3 has no before_backward/before_step)
        subs = subscribed(make)
        per_cb_event = extra / (args.n * subs) * 1e9
        print(
            f"{name:<7} x{args.n}: {t * 1e6:7.2f} us per batch, +{extra * 1e6:6.2f} us over base, "
            f"{per_cb_event:6.1f} ns per callback-event ({subs} events each)"
        )
        out[f"{name}_us"] = t * 1e6
        out[f"{name}_ns_per_cb_event"] = per_cb_event
    return out


if __name__ == "__main__":
    main()

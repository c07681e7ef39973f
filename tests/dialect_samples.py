"""Callbacks written the way each fastai generation's users wrote them (used by the dialect tests).

Nothing here imports fastlight: these are "user notebooks". The course-v3 code follows the
2019 course notebooks (04_callbacks, 05_anneal, 05b_early_stopping); the v1 code follows
fastai v1's ``Callback`` / ``LearnerCallback`` conventions (keyword state, dict returns).
"""

from __future__ import annotations

import math
import re
import time
from functools import partial
from typing import Any

import torch

# ------------------------------------------------------------------------------- course-v3 (2019)
_camel_re1 = re.compile("(.)([A-Z][a-z]+)")
_camel_re2 = re.compile("([a-z0-9])([A-Z])")


def camel2snake(name: str) -> str:
    s1 = re.sub(_camel_re1, r"\1_\2", name)
    return re.sub(_camel_re2, r"\1_\2", s1).lower()


class Callback:
    _order = 0

    def set_runner(self, run: Any) -> None:
        self.run = run

    def __getattr__(self, k: str) -> Any:
        return getattr(self.run, k)

    @property
    def name(self) -> str:
        name = re.sub(r"Callback$", "", self.__class__.__name__)
        return camel2snake(name or "callback")

    def __call__(self, cb_name: str) -> bool:
        f = getattr(self, cb_name, None)
        if f and f():
            return True
        return False


class CancelTrainException(Exception):
    pass


class CancelEpochException(Exception):
    pass


class CancelBatchException(Exception):
    pass


class AvgStats:
    def __init__(self, metrics: list[Any], in_train: bool) -> None:
        self.metrics, self.in_train = metrics, in_train

    def reset(self) -> None:
        self.tot_loss, self.count = 0.0, 0
        self.tot_mets = [0.0] * len(self.metrics)

    @property
    def all_stats(self) -> list[float]:
        return [self.tot_loss, *self.tot_mets]

    @property
    def avg_stats(self) -> list[float]:
        return [o / self.count for o in self.all_stats]

    def accumulate(self, run: Any) -> None:
        bn = run.xb.shape[0]
        self.tot_loss += float(run.loss.detach()) * bn
        self.count += bn
        for i, m in enumerate(self.metrics):
            self.tot_mets[i] += float(m(run.pred, run.yb)) * bn


def accuracy(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return (torch.argmax(out, dim=1) == yb).float().mean()


class AvgStatsCallback(Callback):
    def __init__(self, metrics: list[Any]) -> None:
        self.train_stats, self.valid_stats = AvgStats(metrics, True), AvgStats(metrics, False)
        self.history: list[tuple[list[float], list[float]]] = []

    def begin_epoch(self) -> None:
        self.train_stats.reset()
        self.valid_stats.reset()

    def after_loss(self) -> None:
        stats = self.train_stats if self.in_train else self.valid_stats
        with torch.no_grad():
            stats.accumulate(self.run)

    def after_epoch(self) -> None:
        self.history.append((self.train_stats.avg_stats, self.valid_stats.avg_stats))


class Recorder(Callback):
    def begin_fit(self) -> None:
        self.lrs, self.losses = [], []

    def after_batch(self) -> None:
        if not self.in_train:
            return
        self.lrs.append(float(self.opt.param_groups[-1]["lr"]))
        self.losses.append(self.loss.detach().cpu())


class ParamScheduler(Callback):
    _order = 1

    def __init__(self, pname: str, sched_funcs: Any) -> None:
        self.pname, self.sched_funcs = pname, sched_funcs

    def begin_fit(self) -> None:
        if not isinstance(self.sched_funcs, (list, tuple)):
            self.sched_funcs = [self.sched_funcs] * len(self.opt.param_groups)

    def set_param(self) -> None:
        for pg, f in zip(self.opt.param_groups, self.sched_funcs):
            pg[self.pname] = f(self.n_epochs / self.epochs)

    def begin_batch(self) -> None:
        if self.in_train:
            self.set_param()


def annealer(f: Any) -> Any:
    def _inner(start: float, end: float) -> Any:
        return partial(f, start, end)

    return _inner


@annealer
def sched_cos(start: float, end: float, pos: float) -> float:
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@annealer
def sched_lin(start: float, end: float, pos: float) -> float:
    return start + pos * (end - start)


def combine_scheds(pcts: list[float], scheds: list[Any]) -> Any:
    assert sum(pcts) == 1.0
    pcts_t = torch.tensor([0, *pcts])
    assert torch.all(pcts_t >= 0)
    pcts_t = torch.cumsum(pcts_t, 0)

    def _inner(pos: float) -> torch.Tensor:
        idx = (pos >= pcts_t).nonzero().max()
        actual_pos = (pos - pcts_t[idx]) / (pcts_t[idx + 1] - pcts_t[idx])
        return scheds[idx](actual_pos)  # a tensor: course-v3 stored tensors in param_groups

    return _inner


class LR_Find(Callback):
    _order = 1

    def __init__(self, max_iter: int = 100, min_lr: float = 1e-6, max_lr: float = 10) -> None:
        self.max_iter, self.min_lr, self.max_lr = max_iter, min_lr, max_lr
        self.best_loss = 1e9

    def begin_batch(self) -> None:
        if not self.in_train:
            return
        pos = self.n_iter / self.max_iter
        lr = self.min_lr * (self.max_lr / self.min_lr) ** pos
        for pg in self.opt.param_groups:
            pg["lr"] = lr

    def after_step(self) -> None:
        if self.n_iter >= self.max_iter or self.loss > self.best_loss * 10:
            raise CancelTrainException()
        if self.loss < self.best_loss:
            self.best_loss = self.loss


class SkipValidation(Callback):
    def begin_validate(self) -> bool:
        return True  # a truthy return skips the phase


class StopAfterBatches(Callback):
    """course-v3 CancelEpochException ends the current pass over one loader."""

    def __init__(self, n: int) -> None:
        self.n = n

    def after_batch(self) -> None:
        if self.in_train and self.iter >= self.n - 1:
            raise CancelEpochException()


# ------------------------------------------------------------------------------------ fastai v1
class V1Callback:
    """fastai v1's base: every on_* method exists and does nothing."""

    _order = 0

    def on_train_begin(self, **kwargs: Any) -> None: ...
    def on_epoch_begin(self, **kwargs: Any) -> None: ...
    def on_batch_begin(self, **kwargs: Any) -> None: ...
    def on_loss_begin(self, **kwargs: Any) -> None: ...
    def on_backward_begin(self, **kwargs: Any) -> None: ...
    def on_backward_end(self, **kwargs: Any) -> None: ...
    def on_step_end(self, **kwargs: Any) -> None: ...
    def on_batch_end(self, **kwargs: Any) -> None: ...
    def on_epoch_end(self, **kwargs: Any) -> None: ...
    def on_train_end(self, **kwargs: Any) -> None: ...


class ZeroFirstFeature(V1Callback):
    """Returns a new ``last_input`` from on_batch_begin (training only)."""

    def on_batch_begin(self, last_input: torch.Tensor, train: bool, **kwargs: Any) -> dict[str, Any] | None:
        if not train:
            return None
        x = last_input.clone()
        x[:, 0] = 0
        return {"last_input": x}


class V1EarlyStop(V1Callback):
    """Stops after ``stop_epoch`` by returning ``stop_training``; records what it saw."""

    def __init__(self, stop_epoch: int) -> None:
        self.stop_epoch = stop_epoch
        self.seen_metrics: list[list[float]] = []
        self.iterations: list[int] = []
        self.exception: Any = "unset"

    def on_batch_end(self, iteration: int, train: bool, **kwargs: Any) -> None:
        if train:
            self.iterations.append(iteration)

    def on_epoch_end(self, epoch: int, last_metrics: list[Any], **kwargs: Any) -> dict[str, Any] | None:
        self.seen_metrics.append([float(m) for m in last_metrics])
        if epoch >= self.stop_epoch:
            return {"stop_training": True}
        return None

    def on_train_end(self, exception: Any, **kwargs: Any) -> None:
        self.exception = exception


class AverageAccuracy(V1Callback):
    """A v1 metric callback (like fastai v1's AverageMetric)."""

    name = "v1_accuracy"

    def on_epoch_begin(self, **kwargs: Any) -> None:
        self.val, self.count = 0.0, 0

    def on_batch_end(self, last_output: torch.Tensor, last_target: torch.Tensor, **kwargs: Any) -> None:
        bs = last_target.size(0)
        self.val += float((last_output.argmax(dim=-1) == last_target).float().mean()) * bs
        self.count += bs

    def on_epoch_end(self, last_metrics: list[Any], **kwargs: Any) -> dict[str, Any]:
        return {"last_metrics": [*last_metrics, self.val / self.count]}


class BadKey(V1Callback):
    def on_batch_begin(self, **kwargs: Any) -> dict[str, Any]:
        return {"last_inptu": 1}


# ------------------------------------------------------------------------------------ duck-typed
class SleepAndCompute:
    """The seed article's point: a callback is any object with some of the event methods."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def after_epoch(self) -> None:
        time.sleep(0.01)  # pretend to do something slow, e.g. write a report
        with torch.no_grad():
            self.norms.append(float(sum(p.norm() ** 2 for p in self.learn.model.parameters()) ** 0.5))

"""Metrics for the Learner: torchmetrics ``Metric``s, or plain ``f(pred, *yb)`` functions.

Plain functions are wrapped in :class:`AvgMetric`, a torchmetrics ``Metric`` that keeps
a sample-weighted sum and count, so unequal last batches average correctly and values
are summed across ranks under DDP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from .callback import camel2snake

__all__ = ["AvgLoss", "AvgMetric", "as_metric", "find_bs", "metric_name"]


def find_bs(b: Sequence[Any] | Tensor) -> int:
    """The batch size of a batch (the first dimension of its first tensor), as fastai.

    Example:
        >>> import torch
        >>> find_bs((torch.zeros(5, 2),))
        5
    """
    if isinstance(b, Tensor):
        return int(b.shape[0]) if b.ndim else 1
    for item in b:
        if isinstance(item, Tensor) and item.ndim:
            return int(item.shape[0])
        if isinstance(item, (list, tuple)) and item:
            return find_bs(item)
    return 1


class AvgMetric(Metric):
    """Average of ``func(pred, *yb)`` over all samples (weighted by batch size).

    Example:
        >>> import torch
        >>> def accuracy(pred, y): return (pred.argmax(-1) == y).float().mean()
        >>> m = AvgMetric(accuracy)
        >>> m.update(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1]))
        >>> m.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
        >>> round(float(m.compute()), 4)
        0.6667
    """

    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, func: Callable[..., Tensor], name: str | None = None) -> None:
        if not callable(func) or isinstance(func, type):
            raise TypeError(f"AvgMetric: `func` must be a function f(pred, *yb) -> tensor, got {func!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"AvgMetric: `name` must be a non-empty str or None, got {name!r}")
        super().__init__()
        self.func = func
        self.name = name or getattr(func, "__name__", type(func).__name__)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Any, *yb: Any) -> None:
        try:
            value = self.func(pred, *yb)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"AvgMetric {self.name!r}: `func`(pred, *yb) failed: {exc}") from exc
        bs = find_bs(yb) if yb else find_bs((pred,))
        try:
            value = torch.as_tensor(value, device=self.total.device)
            if not (value.is_floating_point() or value.dtype in (torch.bool, torch.int64, torch.int32)):
                raise TypeError(f"dtype {value.dtype}")
        except (TypeError, RuntimeError, ValueError) as exc:
            raise TypeError(
                f"AvgMetric {self.name!r}: `func` must return a number or a tensor of numbers, got "
                f"{type(value).__name__} ({exc})"
            ) from exc
        self.total += value.detach().double().mean() * bs
        self.count += bs

    def compute(self) -> Tensor:
        return self.total / self.count


class AvgLoss(Metric):
    """Sample-weighted mean of a loss over batches (fastai's ``AvgLoss``).

    Example:
        >>> import torch
        >>> m = AvgLoss(); m.update(torch.tensor(1.0), 3); m.update(torch.tensor(3.0), 1)
        >>> float(m.compute())
        1.5
    """

    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, loss: Tensor, bs: int) -> None:
        self.total += loss.detach().double().mean() * bs
        self.count += bs

    def compute(self) -> Tensor:
        return self.total / self.count


_PREFIXES = ("multiclass_", "multilabel_", "binary_")


def metric_name(metric: object) -> str:
    """The column name of a metric: its ``name``, a function's ``__name__``, or the class name.

    torchmetrics task prefixes are dropped (``MulticlassAccuracy`` -> ``accuracy``).

    Example:
        >>> from torchmetrics.classification import MulticlassAccuracy
        >>> metric_name(MulticlassAccuracy(num_classes=3))
        'accuracy'
    """
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(metric, Metric):
        snake = camel2snake(type(metric).__name__)
        for prefix in _PREFIXES:
            if snake.startswith(prefix):
                return snake[len(prefix) :]
        return snake
    return str(getattr(metric, "__name__", type(metric).__name__))


def as_metric(metric: object, index: int = 0) -> Metric:
    """Check one entry of ``metrics=`` and return it as a torchmetrics ``Metric``.

    Example:
        >>> as_metric(lambda p, y: (p == y).float().mean()).name
        '<lambda>'
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        raise TypeError(
            f"Learner: `metrics[{index}]` is the class {metric.__name__}, not an instance; "
            f"pass {metric.__name__}(...) with its arguments"
        )
    from .dialects import V1Metric, is_v1_metric
    from .fastai_metric import FastaiMetric, is_fastai_metric

    if is_v1_metric(metric):
        return V1Metric(metric)  # type: ignore[no-any-return]
    if is_fastai_metric(metric):
        return FastaiMetric(metric)
    if isinstance(metric, type):
        raise TypeError(
            f"Learner: `metrics[{index}]` is the class {metric.__name__}; pass a torchmetrics Metric instance "
            "or a function f(pred, *yb) -> tensor"
        )
    if callable(metric):
        return AvgMetric(metric)
    raise TypeError(
        f"Learner: `metrics[{index}]` must be a torchmetrics Metric or a function f(pred, *yb) -> tensor, "
        f"got {type(metric).__name__}"
    )

"""fastai 2's own ``Metric`` objects (``AccumMetric``, ``AvgMetric``, ``ValueMetric``, ...) as ``metrics=``.

fastai drives a metric with ``reset()``, ``accumulate(learn)`` at each validation batch and
``value`` at the end: an ``AccumMetric`` (``F1Score``, ``RocAuc``, ...) keeps every batch's
predictions and computes once over all of them, after its own activation or argmax.
:class:`FastaiMetric` drives it the same way from the Recorder's torchmetrics calls.

Example:
    >>> class Mean:  # fastai's Metric protocol, written out
    ...     name = "mean_pred"
    ...     def reset(self): self.total, self.n = 0.0, 0
    ...     def accumulate(self, learn): self.total += float(learn.pred.sum()); self.n += len(learn.pred)
    ...     @property
    ...     def value(self): return self.total / self.n
    >>> m = FastaiMetric(Mean()); m.reset()
    >>> m.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 1])); m.update(torch.tensor([6.0]), torch.tensor([1]))
    >>> float(m.compute()), m.name
    (3.0, 'mean_pred')
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from .distributed import to_detach, world_size

__all__ = ["FastaiMetric", "is_fastai_metric"]


def is_fastai_metric(obj: object) -> bool:
    """fastai's Metric protocol: ``reset()``, ``accumulate(learn)`` and a ``value``.

    Example:
        >>> is_fastai_metric(lambda pred, y: pred)
        False
    """
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "accumulate", None))
        and callable(getattr(obj, "reset", None))
        and hasattr(type(obj), "value")
    )


class _Batch:
    """What a fastai metric reads from ``learn`` at a validation batch."""

    def __init__(self, pred: Any, yb: tuple[Any, ...], metric: object) -> None:
        self.pred, self.yb, self._metric = pred, yb, metric

    @property
    def y(self) -> Any:
        return self.yb[0] if len(self.yb) == 1 else self.yb

    def to_detach(self, b: Any, cpu: bool = True, gather: bool = True) -> Any:
        return to_detach(b, cpu=cpu, gather=False)  # one process (FastaiMetric refuses DDP)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"metric {type(self._metric).__name__} reads learn.{name}; a fastai Metric given as `metrics=` "
            "sees learn.pred, learn.yb, learn.y and learn.to_detach (give a torchmetrics Metric for others)"
        )


class FastaiMetric(Metric):
    """A fastai 2 ``Metric`` object driven as fastai drives it (one process; under DDP a clear error).

    Example:
        >>> class Last:
        ...     def reset(self): self.v = None
        ...     def accumulate(self, learn): self.v = float(learn.y.sum())
        ...     value = property(lambda self: self.v)
        >>> m = FastaiMetric(Last()); m.reset(); m.update(torch.zeros(2), torch.tensor([2, 3]))
        >>> float(m.compute()), m.name
        (5.0, 'Last')
    """

    full_state_update = False

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric
        self.name = str(getattr(metric, "name", None) or type(metric).__name__)

    def update(self, pred: Any, *yb: Any) -> None:
        if world_size() > 1:  # every rank reaches its first validation batch: all raise alike
            raise RuntimeError(
                f"metrics: fastai's {type(self.metric).__name__} keeps its values on each rank, so under DDP "
                "they would differ between ranks; give a torchmetrics Metric (it syncs across ranks)"
            )
        self.metric.accumulate(_Batch(pred, yb, self.metric))

    def compute(self) -> Tensor:
        value = self.metric.value
        return torch.as_tensor(math.nan if value is None else value, dtype=torch.float32)

    def reset(self) -> None:
        super().reset()
        self.metric.reset()

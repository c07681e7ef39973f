"""What ``get_preds`` and ``validate`` hand to Lightning: one loader, and the gathering of predictions.

Under DDP each rank evaluates items ``r, r + W, ...`` (:func:`bridge.data.unrepeated`), so the
gathered predictions are interleaved back into dataset order.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from .callback import Callback
from .data import forward_exception, unrepeated
from .distributed import world_size

__all__ = ["EvalData", "GatherPreds", "interleave"]


class GatherPreds(Callback):
    """Collects predictions and targets during a ``get_preds`` pass; under DDP, from every rank.

    Example:
        >>> GatherPreds().result()
        (tensor([]), tensor([]))
    """

    order = 60

    def __init__(self) -> None:
        self._result: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))

    def before_validate(self) -> None:
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []
        self._result = (torch.empty(0), torch.empty(0))

    def after_batch(self) -> None:
        learn = self.learn
        self._preds.append(learn.pred.detach())
        if learn.yb:
            self._targs.append(learn.yb[0].detach())

    def after_validate(self) -> None:
        preds = torch.cat(self._preds).cpu() if self._preds else torch.empty(0)
        targs = torch.cat(self._targs).cpu() if self._targs else torch.empty(0)
        if world_size() > 1:
            # Rank r holds items r, r+W, ... (bridge.data.unrepeated): gather and interleave.
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (preds, targs))
            preds, targs = interleave([p for p, _ in parts]), interleave([t for _, t in parts])
        self._result = (preds, targs)

    def result(self) -> tuple[Tensor, Tensor]:
        return self._result

    def state_dict(self) -> dict[str, Any]:  # how the result comes back from ddp_spawn workers
        return {"preds": self._result[0], "targs": self._result[1]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._result = (state["preds"], state["targs"])


def interleave(parts: list[Tensor]) -> Tensor:
    """Put back dataset order from per-rank shards ``r::W``.

    Example:
        >>> interleave([torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])])
        tensor([0, 1, 2, 3, 4, 5])
    """
    if not parts or (parts[0].numel() == 0 and all(p.numel() == 0 for p in parts)):
        return parts[0] if parts else torch.empty(0)
    total = sum(p.shape[0] for p in parts)
    out = parts[0].new_empty((total, *parts[0].shape[1:]))
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


class EvalData(pl.LightningDataModule):
    """One evaluation loader, given to Lightning so that DDP shards it without repeats.

    Example:
        >>> EvalData([1, 2]).dl
        [1, 2]
    """

    def __init__(self, dl: Any) -> None:
        super().__init__()
        self.dl = dl

    forwards_exceptions_to_learner = True

    def val_dataloader(self) -> Any:
        return unrepeated(self.dl, getattr(self, "trainer", None))

    def on_exception(self, exception: BaseException) -> None:
        forward_exception(self, exception)

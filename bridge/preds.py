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
    """Collects inputs (``with_input``), predictions and targets of a ``get_preds`` pass.

    With ``gather`` (a pass sharded by DDP) every rank's items are gathered and put back in
    dataset order; a nested pass inside a fit is each rank's own and gathers nothing.

    Example:
        >>> GatherPreds().result()
        (None, tensor([]), tensor([]))
    """

    order = 60

    def __init__(self, with_input: bool = False, gather: bool = True) -> None:
        self.with_input, self.gather = with_input, gather
        self._result: tuple[Any, Tensor, Tensor] = (None, torch.empty(0), torch.empty(0))

    def before_validate(self) -> None:
        self._inputs: list[Any] = []
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []
        self._result = (None, torch.empty(0), torch.empty(0))

    def after_batch(self) -> None:
        learn = self.learn
        self._preds.append(learn.pred.detach())
        if learn.yb:
            self._targs.append(learn.yb[0].detach())
        if self.with_input:
            self._inputs.append(learn.x.detach() if len(learn.xb) == 1 else tuple(x.detach() for x in learn.xb))

    def after_validate(self) -> None:
        preds = torch.cat(self._preds).cpu() if self._preds else torch.empty(0)
        targs = torch.cat(self._targs).cpu() if self._targs else torch.empty(0)
        inputs = _cat(self._inputs) if self.with_input else None
        if self.gather and world_size() > 1:
            # Rank r holds items r, r+W, ... (bridge.data.unrepeated): gather and interleave.
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (inputs, preds, targs))
            preds, targs = interleave([p for _, p, _ in parts]), interleave([t for _, _, t in parts])
            if inputs is not None:
                inputs = _interleave_any([i for i, _, _ in parts])
        self._result = (inputs, preds, targs)

    def result(self) -> tuple[Any, Tensor, Tensor]:
        return self._result

    def state_dict(self) -> dict[str, Any]:  # how the result comes back from ddp_spawn workers
        return {"inputs": self._result[0], "preds": self._result[1], "targs": self._result[2]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._result = (state.get("inputs"), state["preds"], state["targs"])


def _cat(parts: list[Any]) -> Any:
    if not parts:
        return torch.empty(0)
    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[i] for p in parts]).cpu() for i in range(len(parts[0])))
    return torch.cat(parts).cpu()


def _interleave_any(parts: list[Any]) -> Any:
    if isinstance(parts[0], tuple):
        return tuple(interleave([p[i] for p in parts]) for i in range(len(parts[0])))
    return interleave(parts)


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

"""``test_tracker_ddp``: SaveModel, EarlyStopping, CSVLogger and TerminateOnNaN in 2-rank fits.

Two fits in one launch (each launch costs ~10 s): the trackers and the logger on a metric whose
raw per-rank values disagree, then a NaN loss on rank 1 only.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from bridge import Callback, Learner
from callbacks import CSVLogger, EarlyStoppingCallback, Recorder, SaveModelCallback, TerminateOnNaNCallback
from tests.ddp_scripts._common import dump, flat_params, named_cb, run
from tests.helpers import make_learner

DDP: dict[str, Any] = dict(accelerator="cpu", devices=2, strategy="ddp")
# Raw per-rank values of `score` (greater is better). Alone, rank 0 always improves and rank 1
# stops at epoch 1; their mean [1, 2, 1.25, 3] improves at epoch 1 and stops at epoch 2.
RAW = {0: [1.0, 4.0, 4.5, 5.0], 1: [1.0, 0.0, -2.0, 1.0]}
holder: dict[str, Learner] = {}


def score(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.tensor(RAW[dist.get_rank()][holder["learn"].epoch])


writes: list[str] = []
_save = torch.save


def counting_save(obj: object, f: Any, *a: Any, **k: Any) -> None:
    """``torch.save`` that records the file name it writes."""
    writes.append(str(f))
    return _save(obj, f, *a, **k)


class EpochLog(Callback):
    """Records each finished epoch, the weights at its end, and whether the fit was cancelled."""

    order = 55

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.weights: list[list[float]] = []
        self.cancelled = False

    def after_epoch(self) -> None:
        self.epochs.append(self.epoch)
        self.weights.append(flat_params(self.model))

    def after_cancel_fit(self) -> None:
        self.cancelled = True


class NaNOnRank1(nn.Module):
    """Cross-entropy, NaN on rank 1 only at epoch 0, iteration 1 (training)."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = self.ce(pred, y)
        learn = holder["learn2"]
        if dist.get_rank() == 1 and (learn.epoch, learn.iter, learn.training) == (0, 1, True):
            return loss * float("nan")
        return loss


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    torch.save = counting_save
    learn = make_learner(".", metrics=[score])
    holder["learn"] = learn
    log, es, sm = EpochLog(), EarlyStoppingCallback(monitor="score", patience=1), SaveModelCallback(monitor="score")
    learn.fit(4, cbs=[es, sm, CSVLogger(), log], **DDP)
    rank = dist.get_rank()
    final = flat_params(learn.model)
    dist.barrier()
    with open("history.csv") as f:
        csv_lines = f.read().splitlines()
    result: dict[str, Any] = dict(
        rank=rank, epochs=log.epochs, cancelled=log.cancelled, stopped=es.stopped_epoch, best=sm.best,
        values=named_cb(learn, "recorder", Recorder).values, writes=[w for w in writes if "model" in w],
        final=final, epoch1=log.weights[1], epoch2=log.weights[2], csv=csv_lines,
    )  # fmt: skip

    # TerminateOnNaN: NaN loss on rank 1 only, epoch 0 iteration 1 (training).
    learn2 = make_learner("nan", loss_func=NaNOnRank1())
    holder["learn2"] = learn2
    term, log2 = TerminateOnNaNCallback(), EpochLog()
    learn2.fit(2, cbs=[term, log2], **DDP)
    w2 = torch.cat([p.detach().flatten() for p in learn2.model.parameters()])
    result.update(nan_stopped=list(term.stopped_at) if term.stopped_at else None, nan_epochs=log2.epochs,
                  nan_cancelled=log2.cancelled, nan_finite=bool(torch.isfinite(w2).all()), nan_weights=w2.tolist(),
                  nan_losses=len(named_cb(learn2, "recorder", Recorder).losses))  # fmt: skip
    dump(result)


if __name__ == "__main__":
    run(main)

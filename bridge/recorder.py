"""``Recorder``: losses, learning rates and metrics of every fit, the epoch table, and logging."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from .callback import Callback
from .distributed import collectives_enabled, reduce_mean_ragged, world_size
from .metrics import AvgLoss, find_bs, metric_name

__all__ = ["Recorder"]


def format_time(t: float) -> str:
    """fastai's ``mm:ss`` (or ``h:mm:ss``) epoch time.

    Example:
        >>> format_time(75.2)
        '01:15'
    """
    t = int(t)
    h, m, s = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Recorder(Callback):
    """Records the training history and prints fastai's epoch table (added by default).

    - ``losses``: smoothed train loss per iteration (exponential moving average with
      ``beta``, debiased, as fastai's ``smooth_loss``), averaged over ranks.
    - ``lrs``: learning rate of the last param group per iteration.
    - ``values``: one row per epoch, ``[train_loss, valid_loss, *metrics]``.
    - ``metric_names``: ``['epoch', 'train_loss', 'valid_loss', *metrics, 'time']``.
    - As fastai's: ``train_metrics=True`` also computes the metrics on the training batches
      (columns ``train_loss, train_<metric>..., valid_loss, valid_<metric>...``);
      ``valid_metrics=False`` records nothing of the validation (it still runs); with both
      off, the header still names the metrics, which get no values (nan in ``full_values``).

    Per-step values stay on the device and are read back every ``log_every_n_steps``
    batches (and at the end of each training phase), when they are also sent to the
    Lightning loggers as ``train_loss`` and ``lr``; ``valid_loss`` and the metrics go
    through ``self.log`` at each epoch end, so any Lightning logger and monitoring
    callback (``ModelCheckpoint(monitor="valid_loss")``) sees them.

    Example:
        >>> learn.fit(2)  # doctest: +ELLIPSIS
        epoch  train_loss  valid_loss  time
        ...
        >>> len(learn.recorder.values), len(learn.recorder.values[-1])  # 2 epochs of [train_loss, valid_loss]
        (2, 2)
    """

    order = 50

    def __init__(
        self, add_time: bool = True, train_metrics: bool = False, valid_metrics: bool = True, beta: float = 0.98
    ) -> None:
        for name, flag in (("add_time", add_time), ("train_metrics", train_metrics), ("valid_metrics", valid_metrics)):
            if not isinstance(flag, bool):
                raise TypeError(f"Recorder: `{name}` must be a bool, got {flag!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(f"Recorder: `beta` must be a number in [0, 1), got {beta!r}")
        self.add_time = add_time
        self.train_metrics = train_metrics
        self.valid_metrics = valid_metrics
        self.beta = beta
        self.lrs: list[float] = []
        self.iters: list[int] = []
        self.losses: list[float] = []
        self.values: list[list[float]] = []
        #: One row per epoch with every column of ``metric_names[1:]`` (nan where nothing was recorded).
        self.full_values: list[list[float]] = []
        self.metric_names: list[str] = []
        self._valid_loss = AvgLoss()
        self._pending: list[Tensor] = []
        self._reset_smooth()

    def _reset_smooth(self) -> None:
        self._count = 0
        self._dev_val: Tensor | None = None  # the EMA of the first ``_count - (len(_pending) - _folded)`` losses
        self._folded = 0  # the losses of ``_pending`` already in ``_dev_val``
        self._weights: dict[torch.device, Tensor] = {}  # the longest weight vector used, per device
        self._host_val = 0.0
        self._host_count = 0
        self._logged_at = self._epoch_first = 0
        self._train_from = 0  # _count at this epoch's before_train

    @property
    def _in_fit(self) -> bool:
        return self.learn is not None and self.learn.stage == "fit"

    # -- fit ---------------------------------------------------------------------------------------
    def before_fit(self) -> None:
        learn = self.learn
        names = [metric_name(m) for m in learn.metrics]
        if self.train_metrics and self.valid_metrics:
            cols = [f"{phase}_{n}" for phase in ("train", "valid") for n in ("loss", *names)]
        elif self.valid_metrics:
            cols = ["train_loss", "valid_loss", *names]
        else:
            cols = ["train_loss", *names]  # fastai's header, whether or not train_metrics gives them values
        self.metric_names = ["epoch", *cols] + (["time"] if self.add_time else [])
        self.before_epoch()
        # As fastai 2.8: every fit, validate and get_preds starts a new history (a nested,
        # inner get_preds fires no before_fit and leaves it alone).
        self.lrs, self.iters, self.losses, self.values, self.full_values = [], [], [], [], []
        if not self._in_fit:
            return
        learn.smooth_loss = learn.smooth_loss  # the last fit's value until this fit's first batch, as fastai's
        self._pending = []
        self._reset_smooth()
        self._header_done = False
        trainer = learn.trainer
        self._every = max(int(getattr(trainer, "log_every_n_steps", 50) or 50), 1)
        # Under DDP a rank that cancelled may skip a batch's after_batch: flush (a collective)
        # only where every rank is sure to be, at the end of the training phase.
        self._flush_per_batch = world_size() == 1

    def before_epoch(self) -> None:
        self._epoch_first = self._host_count  # steps read back before this epoch's batches
        self.cancel_train = self.cancel_valid = False
        self._train_seen = self._valid_seen = False  # after_train / after_validate ran this epoch
        self._start = time.time()
        self._train_loss = math.nan
        self._valid = [math.nan] * (1 + len(self.learn.metrics))
        self._train_mets = [math.nan] * len(self.learn.metrics)

    def before_train(self) -> None:
        self._train_from = self._count
        if self.train_metrics:
            for m in self.learn.metrics:
                m.reset()

    def before_validate(self) -> None:
        learn = self.learn
        if self._valid_loss.device != learn.device:  # Metric.to walks every state: ~0.2 ms even to its own device
            self._valid_loss = self._valid_loss.to(learn.device)
        self._valid_loss.reset()
        for m in learn.metrics:
            m.reset()

    def after_cancel_train(self) -> None:
        self.cancel_train = True

    def after_cancel_validate(self) -> None:
        self.cancel_valid = True

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.yb or learn.loss is None:
            return
        if learn.training:
            # No device op a batch beyond the detach: the loss waits in ``_pending`` (read back every
            # ``log_every_n_steps``), and the device EMA behind ``learn.smooth_loss`` takes it in when
            # a callback reads it or at the read-back; mean()/float() only when they change something.
            loss = learn.loss.detach()
            if loss.ndim:
                loss = loss.mean()
            if loss.dtype != torch.float32:
                loss = loss.float()
            self._pending.append(loss)
            self.__dict__["_count"] = self._count + 1  # a plain write: Callback.__setattr__ checks the learner
            learn.set_smooth_loss(self._smoothed)
            self.lrs.append(learn.opt.param_groups[-1]["lr"])  # type: ignore[union-attr]
            if self._flush_per_batch and len(self._pending) >= self._every:
                self._flush()
            if self.train_metrics:
                for m in learn.metrics:
                    m.update(learn.pred, *learn.yb)
        elif self.valid_metrics:
            self._valid_loss.update(learn.loss, find_bs(learn.yb))
            for m in learn.metrics:
                m.update(learn.pred, *learn.yb)

    def _smoothed(self) -> Tensor:
        """``learn.smooth_loss``: the debiased EMA of the losses so far (fastai's ``smooth_loss``)."""
        self._fold(self._pending[self._folded :])
        self._folded = len(self._pending)
        assert self._dev_val is not None
        return self._dev_val * (1 / (1 - self.beta**self._count))

    def _fold(self, losses: list[Tensor] | Tensor) -> None:
        """Take ``losses`` into the device EMA: one lerp for one loss, one weighted sum for many."""
        if len(losses) == 0:
            return
        beta, val = self.beta, self._dev_val
        if len(losses) == 1:
            loss = losses[0]
            self._dev_val = loss * (1 - beta) if val is None else val.lerp_(loss, 1 - beta)
            return
        stacked = losses if isinstance(losses, Tensor) else torch.stack(losses)
        k = len(stacked)
        # The j-th of k losses weighs (1 - beta) * beta**(k-1-j): the last k entries of a longer vector.
        weights = self._weights.get(stacked.device)
        if weights is None or len(weights) < k:
            powers = torch.arange(k - 1, -1, -1, dtype=torch.float64)
            weights = self._weights[stacked.device] = ((1 - beta) * beta**powers).to(stacked)
        total = torch.dot(stacked, weights[len(weights) - k :])
        self._dev_val = total if val is None else torch.add(total, val, alpha=beta**k)

    def _flush(self, across_ranks: bool = True) -> None:
        """Read back pending losses (one device sync, one collective under DDP) and log them."""
        distributed = across_ranks and collectives_enabled()
        if not self._pending and not distributed:
            return
        # Under DDP every rank joins the collective even with nothing pending: ranks may hold
        # different counts (a one-rank cancel), and an early return here would hang the others.
        stacked = torch.stack(self._pending).float() if self._pending else torch.zeros(0, device=self._device())
        self._fold(stacked[self._folded :])
        raw: list[float] = (reduce_mean_ragged(stacked) if distributed else stacked).tolist()
        self._pending, self._folded = [], 0
        # Locals in the loop: each attribute write would go through Callback.__setattr__ (~0.3 µs).
        beta, every, losses = self.beta, self._every, self.losses
        count, val = self._host_count, self._host_val
        for v in raw:
            count += 1
            val = beta * val + (1 - beta) * v
            losses.append(val / (1 - beta**count))
            if count % every == 0:
                self._host_count, self._host_val = count, val  # what _log_point reads
                self._log_point()
        self._host_count, self._host_val = count, val

    def _log_point(self) -> None:
        """The smoothed train loss and the lr at the last step read back, to every logger."""
        i = min(self._host_count, len(self.lrs)) - 1
        lr = float(self.lrs[i]) if i >= 0 else math.nan
        self.learn.log_step({"train_loss": self.losses[-1], "lr": lr}, step=self._host_count)
        self._logged_at = self._host_count

    def _device(self) -> torch.device:
        module = getattr(self.learn, "module", None)
        return module.device if module is not None else torch.device("cpu")

    def after_train(self) -> None:
        if not self._in_fit:
            return
        self._flush()
        self._train_seen = True
        if self.losses:
            self._train_loss = self.losses[-1]
        # Under DDP compute() is a collective: every rank calls it, even one that saw no batch.
        if self.train_metrics and (self._count > self._train_from or world_size() > 1):
            self._train_mets = self._compute(self.learn.metrics)
        if self._host_count > self._epoch_first and self._logged_at <= self._epoch_first:
            self._log_point()  # an epoch shorter than log_every_n_steps still shows its train loss

    def after_validate(self) -> None:
        learn = self.learn
        if not self.valid_metrics or (self._valid_loss.update_count == 0 and world_size() == 1):
            return
        self._valid = self._compute([self._valid_loss, *learn.metrics])
        self._valid_seen = True
        learn.last_metrics = list(self._valid)

    @staticmethod
    def _compute(metrics: list[Any]) -> list[float]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*compute.*before the.*update.*")
            return [float(m.compute()) for m in metrics]

    def after_epoch(self) -> None:
        learn = self.learn
        if not self._in_fit:
            learn.final_record = list(self._valid) if self.valid_metrics else []
            self.values.append(list(learn.final_record))  # fastai: an evaluation's history is its one row
            self.full_values.append([math.nan, *self._valid])
            self.iters.append(len(self.losses))  # fastai: its smoothed loss's count, 0 in an evaluation
            return
        self._flush()  # losses of a cancelled epoch, so that ranks stay aligned batch by batch
        train = [self._train_loss, *self._train_mets] if self.train_metrics else [self._train_loss]
        valid = list(self._valid) if self.valid_metrics else []
        full = train + valid + [math.nan] * (len(self.metric_names) - 1 - self.add_time - len(train) - len(valid))
        # fastai 2.8's record: a phase that was cancelled (or never ran) adds no values.
        record = (train if self._train_seen and not self.cancel_train else []) + (
            valid if self._valid_seen and not self.cancel_valid else []
        )
        learn.final_record = record
        self.values.append(record)
        self.full_values.append(full)
        self.iters.append(len(self.losses))
        row: list[Any] = [learn.epoch, *record]
        if self.add_time:
            row.append(format_time(time.time() - self._start))
        self.log = row  # fastai's recorder.log: this epoch's row
        learn.logger(row)
        # train_loss goes to the loggers at each logging step; here only to monitoring callbacks.
        logged = dict(zip(self.metric_names[2:], full[1 : len(train) + len(valid)], strict=False))
        learn.log_epoch(logged, extra={"train_loss": self._train_loss})

    def after_fit(self) -> None:
        if self._in_fit:
            # After an error the other ranks may be gone: no collective on the way out.
            self._flush(across_ranks=self.learn is not None and self.learn.exception is None)

    # -- output ------------------------------------------------------------------------------------
    def plot_lr_find(
        self, skip_end: int = 5, return_fig: bool = True, suggestions: Any = None, nms: Any = None, **kwargs: Any
    ) -> Any:
        """fastai's lr-finder plot of this history; see :func:`callbacks.lr_finder.plot_lr_find`."""
        from .lr_finder import plot_lr_find

        return plot_lr_find(self, skip_end, return_fig, suggestions, nms, **kwargs)

    def plot_loss(self, skip_start: int = 5, with_valid: bool = True, log: bool = False) -> Any:
        """fastai's learning curve; see :func:`callbacks.plots.plot_loss`."""
        from .plots import plot_loss

        return plot_loss(self, skip_start, with_valid, log)

    def plot_sched(self, keys: list[str] | None = None) -> Any:
        """fastai's schedule plot; see :func:`callbacks.plots.plot_sched`."""
        from .plots import plot_sched

        return plot_sched(self, keys)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """History and smoothing state, for Lightning checkpoints (plain floats and ints)."""
        # After an error (Lightning's OnExceptionCheckpoint) the other ranks may be gone.
        self._flush(across_ranks=self.learn is None or self.learn.exception is None)
        return {
            "lrs": [float(x) for x in self.lrs],
            "iters": list(self.iters),
            "losses": list(self.losses),
            "values": [list(map(float, v)) for v in self.values],
            "full_values": [list(map(float, v)) for v in self.full_values],
            "host_val": self._host_val,
            "host_count": self._host_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.lrs, self.iters = list(state["lrs"]), list(state["iters"])
        self.losses, self.values = list(state["losses"]), [list(v) for v in state["values"]]
        self.full_values = [list(v) for v in state.get("full_values", state["values"])]
        self._host_val, self._host_count = float(state["host_val"]), int(state["host_count"])

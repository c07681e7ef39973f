"""How callbacks print and log (``LoopOutput``: rank 0 only, above the bar, through Lightning); the epoch table."""

from __future__ import annotations

from typing import Any

import torch

from .distributed import collectives_enabled, is_global_zero, reduce_mean

__all__ = ["EpochTable", "LoopOutput"]


class LoopOutput:
    """``print``, ``log_step``, ``log_epoch`` for a host with ``trainer`` and ``module``.

    Example:
        >>> learn.print("hello")
        hello
    """

    trainer: Any
    module: Any

    def print(self, text: str) -> None:
        """Print on global rank 0, above Lightning's progress bar when one is showing.

        Example:
            >>> learn.print("epoch 1 done")
            epoch 1 done
        """
        if not is_global_zero() or getattr(self, "_no_logging", False):
            return
        bar = getattr(self.trainer, "progress_bar_callback", None) if self.trainer is not None else None
        if bar is not None and hasattr(bar, "print"):
            bar.print(text)
        else:
            print(text, flush=True)

    def log_step(self, values: dict[str, float], step: int) -> None:
        """Send per-step values to every Lightning logger (they write on rank 0 only).

        Example:
            >>> learn.trainer is None  # before any fit there is no Trainer: nothing is sent
            True
            >>> learn.log_step({"train_loss": 0.3}, step=0)
        """
        if self.trainer is None or getattr(self, "_no_logging", False):
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=step)

    def log_epoch(self, values: dict[str, float], extra: dict[str, float] | None = None) -> None:
        """Log epoch values as Lightning's ``self.log(on_epoch=True, sync_dist=True)``: loggers, ``callback_metrics``.

        ``extra`` values reach ``trainer.callback_metrics`` (for monitoring callbacks) but
        not the loggers. Under DDP every rank calls it (the values are averaged over the ranks).

        Example:
            >>> from bridge import Callback
            >>> class LogBest(Callback):
            ...     def after_epoch(self):
            ...         self.learn.log_epoch({}, extra={"best": 0.5})
            >>> learn.fit(1, cbs=LogBest())  # doctest: +ELLIPSIS
            epoch ...
            >>> float(learn.trainer.callback_metrics["best"])
            0.5
        """
        trainer, module = self.trainer, getattr(self, "module", None)
        if trainer is None or getattr(self, "_no_logging", False):
            return
        extra = extra or {}
        if module is None or module._current_fx_name != "on_train_epoch_end":
            self._self_log(values, extra)
            return
        # At the epoch end, where the Recorder logs, the values go straight where self.log's end up:
        # self.log cost ~1.3 ms an epoch (a torchmetrics state per value, collected at the epoch
        # end), 3.5% of the peer job's fit (docs/performance.md, "Peer job").
        names, numbers = [*values, *extra], [float(v) for v in (*values.values(), *extra.values())]
        dtype = torch.get_default_dtype()
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # as Lightning's results
        if collectives_enabled() and numbers:  # sync_dist=True's mean over the ranks, in one all-reduce
            numbers = reduce_mean(torch.tensor(numbers, dtype=dtype, device=module.device)).tolist()
        tensors = {name: torch.tensor(v, dtype=dtype, device=module.device) for name, v in zip(names, numbers)}
        trainer.callback_metrics.update(tensors)
        logged = {name: tensors[name] for name in values}
        if logged and trainer.loggers:
            # Lightning's own epoch-end logging (logged_metrics, the "epoch" key, logger.save()), at the
            # step Lightning gives epoch values: that of the epoch's last batch (FitLoop.on_advance_end).
            loop = trainer.fit_loop.epoch_loop
            loop._batches_that_stepped -= 1
            try:
                trainer._logger_connector.log_metrics(logged)
            finally:
                loop._batches_that_stepped += 1

    def _self_log(self, values: dict[str, float], extra: dict[str, float]) -> None:
        # Anywhere else (a callback's after_validate, after_batch, ...): Lightning's self.log itself.
        to_logger = bool(self.trainer.loggers)
        try:
            for name, value in values.items():
                self.module.log(
                    name, float(value), on_step=False, on_epoch=True, logger=to_logger, batch_size=1, sync_dist=True
                )
            for name, value in extra.items():
                self.module.log(
                    name, float(value), on_step=False, on_epoch=True, logger=False, batch_size=1, sync_dist=True
                )
        except Exception:  # outside a hook where Lightning allows self.log: write to the loggers directly
            if to_logger:
                self.log_step(dict(values), step=self.trainer.global_step)


class EpochTable:
    """The default ``learn.logger``: prints each epoch's row under the Recorder's column names (rank 0).

    Example:
        >>> learn.recorder.metric_names = ["epoch", "train_loss", "valid_loss", "time"]  # as before_fit sets them
        >>> EpochTable(learn)([0, 0.5, 0.4, "00:01"])
        epoch  train_loss  valid_loss  time
        0      0.500000    0.400000    00:01
    """

    def __init__(self, learn: Any) -> None:
        self.learn = learn
        self._names: list[str] | None = None  # the header printed for this fit (None: not yet)

    def __call__(self, row: Any) -> None:
        learn = self.learn
        recorder = learn.__dict__.get("recorder")
        names = list(getattr(recorder, "metric_names", None) or [str(i) for i in range(len(row))])
        full = getattr(recorder, "full_values", None)
        timed = names[-1:] == ["time"]
        if full and len(row) < len(names) and len(full[-1]) + 1 + timed == len(names):
            row = [row[0], *full[-1], *row[-1:] * timed]  # a cancelled phase: its columns show nan, aligned
        cells = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in row]
        widths = [max(len(n), len(c)) for n, c in zip(names, cells, strict=False)]
        lines = []
        if getattr(recorder, "_header_done", False) is False:
            lines.append("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=False)).rstrip())
            if recorder is not None:
                recorder._header_done = True
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip())
        learn.print("\n".join(lines))

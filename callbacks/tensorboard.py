"""``TensorBoardCallback``: fastai's TensorBoard logging, on top of Lightning's ``TensorBoardLogger``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bridge.callback import Callback
from bridge.distributed import is_global_zero, world_size

__all__ = ["TensorBoardCallback"]


def _check_n(where: str, name: str, n: object, allow_none: bool = False) -> int | None:
    if n is None and allow_none:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{where}: `{name}` must be an int >= 1{extra}, got {n!r}")
    return n


class TensorBoardCallback(Callback):
    """Log a fit to TensorBoard (global rank 0 only).

    When the trainer has a Lightning ``TensorBoardLogger`` (the Learner's default logger)
    and ``log_dir`` is None, its writer is used: the Recorder already sends ``train_loss``
    and ``lr`` every ``log_every_n_steps`` and ``valid_loss`` plus the metrics every epoch,
    and this callback adds the rest. Otherwise (``logger=False``, another logger, or an
    explicit ``log_dir``) it opens its own ``SummaryWriter`` in ``log_dir`` (default
    ``learn.path/"runs"``) and also writes the Recorder's values: ``train_loss`` and ``lr``
    for every step (step ``i`` holds ``recorder.losses[i-1]``) and the epoch values at
    ``trainer.global_step - 1``, the step Lightning's ``self.log`` uses at epoch end.

    Added on top of the scalars:

    - hyper-parameters at ``before_fit`` (``lr``, ``wd``, ``n_epoch``, ``bs``, optimizer,
      model, loss, metrics, ``world_size``);
    - ``hist_every=n``: weight and gradient histograms every ``n`` training steps
      (``weights/<param>``, ``grads/<param>``, after the step; step = steps done; their
      finite values only, none for an empty or all-nan tensor);
    - ``log_images=True``: the first ``n_images`` inputs of each epoch's first batch when
      they look like images (``N x C x H x W`` with 1 or 3 channels), min-max scaled;
    - ``trace_model=True``: the model graph, traced once in eval mode without grad;
    - ``log_preds=True``: a text table of the first ``n_preds`` validation predictions
      and targets, every epoch.

    Nothing here is a collective, so other ranks never wait for rank 0's writes. The
    writer it opened is flushed every epoch and closed at ``after_fit`` (also on errors).

    Example:
        >>> cb = TensorBoardCallback(hist_every=100)
        >>> with learn.no_logging():
        ...     learn.fit(1, cbs=cb)
        >>> len(list(learn.path.rglob("events.out.tfevents.*")))  # tensorboard --logdir <learn.path>
        1
    """

    order = 60

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        trace_model: bool = False,
        log_preds: bool = False,
        n_preds: int = 9,
        hist_every: int | None = None,
        log_images: bool = False,
        n_images: int = 8,
    ) -> None:
        where = "TensorBoardCallback"
        if log_dir is not None and (
            not isinstance(log_dir, (str, os.PathLike)) or not isinstance(os.fspath(log_dir), str) or not str(log_dir)
        ):
            raise TypeError(f"{where}: `log_dir` must be a folder path (str) or None, got {log_dir!r}")
        if log_dir is not None and "\x00" in os.fspath(log_dir):
            raise ValueError(f"{where}: `log_dir` must be a folder path without NUL characters, got {log_dir!r}")
        for name, flag in (("trace_model", trace_model), ("log_preds", log_preds), ("log_images", log_images)):
            if not isinstance(flag, bool):
                raise TypeError(f"{where}: `{name}` must be a bool, got {flag!r}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.trace_model, self.log_preds, self.log_images = trace_model, log_preds, log_images
        self.n_preds: int = _check_n(where, "n_preds", n_preds)  # type: ignore[assignment]
        self.hist_every = _check_n(where, "hist_every", hist_every, allow_none=True)
        self.n_images: int = _check_n(where, "n_images", n_images)  # type: ignore[assignment]
        self.writer: Any = None
        self._own = False
        self._n_written = 0
        self._traced = False
        self._images_done = False
        self._preds: list[str] = []

    # -- writer ---------------------------------------------------------------------------
    def _lightning_writer(self) -> Any:
        from lightning.pytorch.loggers import TensorBoardLogger

        trainer = self.learn.trainer
        for logger in getattr(trainer, "loggers", None) or []:
            if isinstance(logger, TensorBoardLogger):
                return logger
        return None

    def before_fit(self) -> None:
        learn = self.learn
        self.run = learn.in_fit
        if not self.run or not is_global_zero():
            self.writer = None
            return
        self._n_written, self._traced = 0, False
        logger = self._lightning_writer() if self.log_dir is None else None
        if logger is not None:
            self.writer, self._own = logger.experiment, False
            logger.log_hyperparams(self._hypers())
        else:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            log_dir = self.log_dir if self.log_dir is not None else Path(learn.path) / "runs"
            self.writer, self._own = SummaryWriter(log_dir=str(log_dir)), True
            exp, ssi, sei = hparams(self._hypers(), {})  # type: ignore[no-untyped-call]
            file_writer = self.writer._get_file_writer()
            for summary in (exp, ssi, sei):
                file_writer.add_summary(summary)

    def _hypers(self) -> dict[str, Any]:
        learn = self.learn
        opt = learn.opt
        group = opt.param_groups[-1] if opt is not None else {}
        return {
            "lr": float(group.get("lr", getattr(learn, "lr", 0.0))),
            "wd": float(group.get("weight_decay", 0.0) or 0.0),
            "n_epoch": int(learn.n_epoch),
            "bs": int(getattr(learn.dls.train_dl, "batch_size", 0) or 0),
            "opt": type(opt).__name__,
            "model": type(learn.model).__name__,
            "loss_func": getattr(learn.loss_func, "__name__", type(learn.loss_func).__name__),
            "metrics": ",".join(learn.recorder.metric_names[3:-1]) or "none",  # type: ignore[attr-defined]
            "world_size": world_size(),
        }

    # -- batches --------------------------------------------------------------------------
    def before_batch(self) -> None:
        if self.writer is None or not self.learn.training:
            return
        learn = self.learn
        x = learn.xb[0] if learn.xb else None
        if not isinstance(x, Tensor):
            return
        if self.trace_model and not self._traced:
            self._traced = True
            was = learn.model.training
            learn.model.eval()
            try:
                with torch.no_grad():
                    self.writer.add_graph(learn.model, tuple(learn.xb))
            finally:
                learn.model.train(was)
        if self.log_images and learn.iter == 0 and x.ndim == 4 and x.shape[1] in (1, 3):
            imgs = x[: self.n_images].detach().float().cpu()
            lo, hi = imgs.min(), imgs.max()
            imgs = (imgs - lo) / (hi - lo) if hi > lo else torch.zeros_like(imgs)
            self.writer.add_images("input_images", imgs, learn.train_iter)

    def after_step(self) -> None:
        learn = self.learn
        step = learn.train_iter + 1  # optimizer steps done, this one included
        if self.writer is None or self.hist_every is None or step % self.hist_every:
            return
        for name, p in learn.model.named_parameters():
            self._histogram(f"weights/{name}", p, step)
            if p.grad is not None:
                self._histogram(f"grads/{name}", p.grad, step)

    def _histogram(self, tag: str, t: Tensor, step: int) -> None:
        # TensorBoard cannot bin an empty tensor, nor one with only nan values ("The histogram
        # is empty"): histograms show the finite values, and none is written when there are none.
        values = t.detach().float().cpu().flatten()
        values = values[torch.isfinite(values)]
        if values.numel():
            self.writer.add_histogram(tag, values, step)

    def before_validate(self) -> None:
        self._preds = []

    def after_batch(self) -> None:
        learn = self.learn
        if self.writer is None or not self.log_preds or learn.training or len(self._preds) >= self.n_preds:
            return
        pred, targ = learn.pred, learn.yb[0] if learn.yb else None
        if not isinstance(pred, Tensor):
            return
        pred = pred.detach()
        shown = pred.argmax(-1) if pred.ndim > 1 and pred.shape[-1] > 1 else pred.reshape(len(pred), -1)[:, 0]
        for i in range(min(len(shown), self.n_preds - len(self._preds))):
            t = targ[i].tolist() if isinstance(targ, Tensor) else "-"
            self._preds.append(f"| {i + len(self._preds)} | {shown[i].tolist()} | {t} |")

    # -- epochs ---------------------------------------------------------------------------
    def after_epoch(self) -> None:
        if self.writer is None:
            return
        if self._own:
            self._write_scalars()
        if self.log_preds and self._preds:
            table = "| item | prediction | target |\n|---|---|---|\n" + "\n".join(self._preds)
            self.writer.add_text("predictions", table, self._epoch_step())
        self.writer.flush()

    def _epoch_step(self) -> int:
        # Lightning logs epoch-end values at the last batch's step: global_step - 1.
        return max(int(self.learn.trainer.global_step) - 1, 0)

    def _write_scalars(self) -> None:
        learn = self.learn
        rec = learn.recorder  # type: ignore[attr-defined]
        for i in range(self._n_written, len(rec.losses)):
            self.writer.add_scalar("train_loss", rec.losses[i], i + 1)
            if i < len(rec.lrs):
                self.writer.add_scalar("lr", float(rec.lrs[i]), i + 1)
        self._n_written = len(rec.losses)
        if rec.values:
            step = self._epoch_step()
            for name, value in zip(rec.metric_names[2:], rec.values[-1][1:]):
                if isinstance(value, float) and not math.isnan(value):
                    self.writer.add_scalar(name, value, step)

    def after_fit(self) -> None:
        self.run = True
        if self.writer is None:
            return
        if self._own:
            self.writer.close()
        else:
            self.writer.flush()
        self.writer = None

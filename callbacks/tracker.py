"""Callbacks that track a monitored value across epochs: save the best model, stop early, cut the lr.

fastai's ``TrackerCallback`` family (``fastai/callback/tracker.py``), with the same names,
arguments, defaults and decisions. On top of fastai:

- **DDP**: the monitored value comes from ``learn.recorder.values`` whose losses and metrics
  are already reduced across ranks (torchmetrics sync, ``reduce_mean``); in addition each
  tracker takes global rank 0's value (one tiny broadcast per epoch, none without DDP), so
  every rank makes the same decision even with a metric whose sync is switched off.
- **Files**: ``SaveModelCallback`` writes through ``learn.save`` (global rank 0, temp file +
  rename); at the end of fit every rank waits for rank 0 and loads the same file.
- **LightningAdapter**: on a user's module ``monitor`` names any epoch value the module logs
  (``trainer.callback_metrics``: ``"val_loss"``, ``"val/acc"``, ...) or the Recorder's
  ``train_loss`` / ``valid_loss``; ``valid_loss`` is the module's logged validation loss when its
  ``validation_step`` returns none (the first of ``val_loss``, ``val/loss``, ... logged, see
  ``bridge.adapter_host.VALID_LOSS_KEYS``). The name is checked at the first epoch end, when the
  module has logged: a missing one fails with the names that exist.
- **NaN**: a NaN value is never an improvement (as fastai); it is reported with a warning,
  never passed over in silence.
- **Restarts**: each tracker's ``best`` / ``wait`` go into Lightning checkpoints
  (``state_dict`` / ``load_state_dict``), so ``learn.fit(n, ckpt_path=...)`` continues as if
  never stopped.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from bridge.callback import Callback
from bridge.distributed import barrier, broadcast_object, world_size
from bridge.exceptions import CancelFitException
from bridge.optim import set_hyper

from .tracker_args import (
    Comp,
    _check_fname,
    _check_min_delta,
    _check_monitor,
    _check_patience,
    _infer_less,
    _is_number,
)

__all__ = ["EarlyStoppingCallback", "ReduceLROnPlateau", "SaveModelCallback", "TrackerCallback"]


def _logged_values(learn: Any) -> dict[str, float] | None:
    """The host's monitorable epoch values (LightningAdapter: what the module logged); None for a Learner."""
    values = getattr(learn, "monitor_values", None)
    return values() if callable(values) else None


class TrackerCallback(Callback):
    """Keeps the best value of ``monitor`` seen so far (fastai's ``TrackerCallback``).

    Args:
        monitor: a column of ``learn.recorder.metric_names`` (``'train_loss'``,
            ``'valid_loss'`` or a metric name).
        comp: comparison, e.g. ``np.less`` / ``np.greater``; by default ``np.less`` when
            ``monitor`` contains ``"loss"`` or ``"error"``, else ``np.greater``.
        min_delta: how much better than ``best`` a value must be to count as improvement.
        reset_on_fit: forget ``best`` at the start of every fit.

    After each epoch ``new_best`` says whether the value improved (a NaN value never
    does). Acts only in a real fit: not in ``validate``/``get_preds`` and not inside the
    learning-rate finder.

    Example:
        >>> TrackerCallback(monitor="accuracy").comp is np.greater
        True
    """

    order = 60
    _where = "TrackerCallback"

    def __init__(
        self,
        monitor: str = "valid_loss",
        comp: Comp | None = None,
        min_delta: float = 0.0,
        reset_on_fit: bool = True,
    ) -> None:
        where = type(self).__name__
        monitor = _check_monitor(where, monitor)
        min_delta = _check_min_delta(where, min_delta)
        if comp is None:
            comp = np.less if ("loss" in monitor or "error" in monitor) else np.greater
        if not callable(comp):
            raise TypeError(f"{where}: `comp` must be a comparison such as np.less or np.greater, got {comp!r}")
        if not isinstance(reset_on_fit, bool):
            raise TypeError(f"{where}: `reset_on_fit` must be a bool, got {reset_on_fit!r}")
        self.less = _infer_less(where, comp)
        # As fastai: for "smaller is better", an improvement must beat best - min_delta.
        if self.less:
            min_delta = -min_delta
        self.monitor, self.comp, self.min_delta, self.reset_on_fit = monitor, comp, min_delta, reset_on_fit
        self.best: float | None = None
        self.new_best = False
        self.idx = 0

    def _init_best(self) -> float:
        return math.inf if self.less else -math.inf

    def before_fit(self) -> None:
        learn = self.learn
        self.run = learn.in_fit
        if not self.run:
            return
        if self.reset_on_fit or self.best is None:
            self.best = self._init_best()
        if _logged_values(learn) is not None:
            return  # the module logs its values during the fit: the name is checked at each epoch end
        names = self._monitorable()
        if self.monitor not in names:
            raise ValueError(
                f"{type(self).__name__}: `monitor`={self.monitor!r} is not recorded; available: {', '.join(names)}"
            )
        self.idx = names.index(self.monitor)

    def _monitorable(self) -> list[str]:
        recorder = getattr(self.learn, "recorder", None)
        if recorder is None:
            raise RuntimeError(f"{type(self).__name__} needs the learner's Recorder (learn.recorder), which is missing")
        names = list(recorder.metric_names[1:])
        if getattr(recorder, "add_time", False) and names and names[-1] == "time":
            names = names[:-1]
        return names

    def _value(self) -> float:
        logged = _logged_values(self.learn)
        if logged is not None:
            if self.monitor not in logged:
                raise ValueError(
                    f"{type(self).__name__}: `monitor`={self.monitor!r} was not logged this epoch; "
                    f"available: {', '.join(sorted(logged)) or 'none (the module logs nothing)'}"
                )
            val = logged[self.monitor]
        else:
            # full_values: every column (nan for a cancelled phase); values is fastai's, which drops them.
            val = float(self.learn.recorder.full_values[-1][self.idx])  # type: ignore[attr-defined]
        if math.isnan(val):
            warnings.warn(
                f"{type(self).__name__}: `monitor`={self.monitor!r} is NaN at epoch {self.learn.epoch}; "
                "a NaN is never an improvement",
                stacklevel=2,
            )
        if world_size() > 1:
            # Values are rank-reduced already; rank 0's copy makes the decision identical on
            # every rank even for a metric whose cross-rank sync is off.
            val = float(broadcast_object(val))
        return val

    def after_epoch(self) -> None:
        val = self._value()
        if self.best is None:
            self.best = self._init_best()
        if bool(self.comp(val - self.min_delta, self.best)):
            self.best, self.new_best = val, True
        else:
            self.new_best = False

    def after_fit(self) -> None:
        self.run = True

    def state_dict(self) -> dict[str, Any]:
        """``best`` (plain float) for Lightning checkpoints.

        Example:
            >>> TrackerCallback().state_dict()
            {'best': None}
        """
        return {"best": None if self.best is None else float(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Example:
            >>> cb = TrackerCallback(); cb.load_state_dict({"best": 0.5}); cb.best
            0.5
        """
        best = state.get("best")
        self.best = None if best is None else float(best)


class SaveModelCallback(TrackerCallback):
    """Save the model when ``monitor`` improves (or every epoch) and load the best at the end.

    fastai's ``SaveModelCallback``: writes ``learn.save(fname)`` (``path/model_dir/fname.pth``)
    at each improvement, ``f"{fname}_{epoch}"`` every ``every_epoch`` epochs when that is
    set (``True`` = every epoch), or once at the end with ``at_end``. Unless
    ``every_epoch`` or ``at_end``, the best model is loaded back after fit (also after an
    early stop). A NaN value is never an improvement, so it is never saved as best.

    DDP: decisions use the rank-reduced value; only global rank 0 writes (atomically); at
    the end every rank waits for rank 0 (``barrier``) and loads the same file, so all ranks
    end with identical weights. After a crash (a non-cancel exception) nothing is loaded.

    Example:
        >>> cb = SaveModelCallback(monitor="valid_loss", fname="best")
        >>> with learn.no_logging():
        ...     learn.fit(2, cbs=cb)
        >>> (learn.path / "models" / "best.pth").exists()  # the epoch with the lowest valid_loss
        True
    """

    order = TrackerCallback.order + 1

    def __init__(
        self,
        monitor: str = "valid_loss",
        comp: Comp | None = None,
        min_delta: float = 0.0,
        fname: str = "model",
        every_epoch: bool | int = False,
        at_end: bool = False,
        with_opt: bool = False,
        reset_on_fit: bool = True,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        where = type(self).__name__
        fname = _check_fname(where, fname)
        if isinstance(every_epoch, bool):
            every = int(every_epoch)
        elif isinstance(every_epoch, (int, np.integer)) and every_epoch >= 1:
            every = int(every_epoch)
        else:
            raise ValueError(
                f"{where}: `every_epoch` must be a bool or an int n >= 1 (save every n epochs), got {every_epoch!r}"
            )
        for name, flag in (("at_end", at_end), ("with_opt", with_opt)):
            if not isinstance(flag, bool):
                raise TypeError(f"{where}: `{name}` must be a bool, got {flag!r}")
        if every and at_end:
            raise ValueError(f"{where}: `every_epoch` and `at_end` cannot both be set")
        self.fname, self.every_epoch, self.at_end, self.with_opt = fname, every, at_end, with_opt
        self.last_saved_path: os.PathLike[str] | None = None

    def _save(self, name: str) -> None:
        self.last_saved_path = self.learn.save(name, with_opt=self.with_opt)

    def after_epoch(self) -> None:
        epoch = self.learn.epoch
        if self.every_epoch:
            if epoch % self.every_epoch == 0:
                self._save(f"{self.fname}_{epoch}")
            return
        super().after_epoch()
        if self.new_best:
            self.learn.print(f"Better model found at epoch {epoch} with {self.monitor} value: {self.best}.")
            self._save(self.fname)

    def after_fit(self) -> None:
        learn = self.learn
        self.run = True
        if learn.exception is not None:
            # A crash may have hit one rank only: no collective, no load.
            return
        if self.at_end:
            self._save(self.fname)
        elif not self.every_epoch:
            barrier()  # rank 0's file is complete before anyone reads it
            try:
                learn.load(self.fname, with_opt=self.with_opt)
            except FileNotFoundError:
                warnings.warn(
                    f"SaveModelCallback: no model was saved as {self.fname!r} (no epoch improved "
                    f"{self.monitor}); the weights of the last epoch are kept",
                    stacklevel=2,
                )


class _PatienceTracker(TrackerCallback):
    """A tracker that counts epochs without improvement (``wait``); its state goes into checkpoints."""

    wait: int = 0

    def state_dict(self) -> dict[str, Any]:
        """``best`` and ``wait`` for Lightning checkpoints.

        Example:
            >>> EarlyStoppingCallback().state_dict()
            {'best': None, 'wait': 0}
        """
        return {**super().state_dict(), "wait": int(self.wait)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Example:
            >>> cb = ReduceLROnPlateau(); cb.load_state_dict({"best": 0.5, "wait": 1}); cb.wait
            1
        """
        super().load_state_dict(state)
        self.wait = int(state.get("wait", 0))


class EarlyStoppingCallback(_PatienceTracker):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    fastai's ``EarlyStoppingCallback``: raises ``CancelFitException`` at ``after_epoch``,
    so ``after_cancel_fit`` and ``after_fit`` still run (a ``SaveModelCallback`` then loads
    the best model). Under DDP the monitored value is global, so all ranks stop at the same
    epoch; no rank waits for another.

    Example:
        >>> cb = EarlyStoppingCallback(monitor="valid_loss", min_delta=10.0, patience=1)
        >>> with learn.no_logging():  # epoch 1 does not improve by 10: stop
        ...     learn.fit(50, cbs=cb)
        >>> len(learn.recorder.values)
        2
    """

    order = TrackerCallback.order + 3

    def __init__(
        self,
        monitor: str = "valid_loss",
        comp: Comp | None = None,
        min_delta: float = 0.0,
        patience: int = 1,
        reset_on_fit: bool = True,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        self.patience = _check_patience(type(self).__name__, patience)
        self.wait = 0
        self.stopped_epoch: int | None = None

    def before_fit(self) -> None:
        self.wait = 0
        self.stopped_epoch = None
        super().before_fit()

    def after_epoch(self) -> None:
        super().after_epoch()
        if self.new_best:
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            epoch = self.learn.epoch
            self.stopped_epoch = epoch
            self.learn.print(f"No improvement since epoch {epoch - self.wait}: early stopping")
            raise CancelFitException()


class ReduceLROnPlateau(_PatienceTracker):
    """Divide the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    fastai's ``ReduceLROnPlateau``: every param group's lr becomes
    ``max(lr / factor, min_lr)``, then the patience count restarts. The new rates live in
    the optimizer, so they are in Lightning checkpoints too. Same decision on every rank.

    Example:
        >>> cb = ReduceLROnPlateau(min_delta=10.0, patience=1, factor=5.0, min_lr=1e-6)
        >>> with learn.no_logging():  # epoch 1 does not improve by 10: lr / 5
        ...     learn.fit(2, lr=1e-2, cbs=cb)
        >>> [g["lr"] for g in learn.opt.param_groups]
        [0.002, 0.002]
    """

    order = TrackerCallback.order + 2

    def __init__(
        self,
        monitor: str = "valid_loss",
        comp: Comp | None = None,
        min_delta: float = 0.0,
        patience: int = 1,
        factor: float = 10.0,
        min_lr: float = 0,
        reset_on_fit: bool = True,
    ) -> None:
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        where = type(self).__name__
        self.patience = _check_patience(where, patience)
        if not _is_number(factor) or not math.isfinite(float(factor)) or float(factor) <= 1:
            raise ValueError(f"{where}: `factor` must be a number > 1 (the lr is divided by it), got {factor!r}")
        if not _is_number(min_lr) or not math.isfinite(float(min_lr)) or float(min_lr) < 0:
            raise ValueError(f"{where}: `min_lr` must be a finite number >= 0, got {min_lr!r}")
        self.factor, self.min_lr = float(factor), float(min_lr)
        self.wait = 0

    def before_fit(self) -> None:
        self.wait = 0
        super().before_fit()

    def after_epoch(self) -> None:
        super().after_epoch()
        if self.new_best:
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            opt = self.learn.opt
            assert opt is not None
            old_lr = opt.param_groups[-1]["lr"]
            set_hyper(opt, "lr", [max(g["lr"] / self.factor, self.min_lr) for g in opt.param_groups])
            self.wait = 0
            new_lr = opt.param_groups[-1]["lr"]
            if new_lr < old_lr:
                self.learn.print(f"Epoch {self.learn.epoch}: reducing lr to {float(new_lr)}")

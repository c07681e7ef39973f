"""The adapter's host: loop state for callbacks on a user's module, and what its trackers may monitor.

Under :class:`~bridge.LightningAdapter` the module owns its logging: the Recorder prints no
epoch table and nothing is logged for it, but callbacks' messages print (rank 0), and a
tracker's ``monitor`` names any epoch value the module logged (``trainer.callback_metrics``).

Example:
    >>> host = AdapterHost(None, 1, None)
    >>> host.monitor_values()  # before any fit: nothing logged, nothing recorded
    {}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from .distributed import is_global_zero
from .host import CallbackHost

__all__ = ["VALID_LOSS_KEYS", "AdapterHost", "check_pred", "no_table"]

#: Logged keys that stand for ``valid_loss`` when the module's ``validation_step`` returns no loss, first match.
VALID_LOSS_KEYS = ("valid_loss", "val_loss", "val/loss", "valid/loss", "validation_loss", "validation/loss")


def no_table(row: list[Any]) -> None:
    """The adapter's ``learn.logger``: the Recorder's epoch rows are not printed (the module owns its output).

    ``adapter.learn.logger = EpochTable(adapter.learn)`` (:class:`~bridge.output.EpochTable`) prints them;
    fastai's ``CSVLogger`` wraps whichever logger is there, as in fastai.

    Example:
        >>> no_table([0, 0.5, 0.4, "00:01"])  # prints nothing
    """


class AdapterHost(CallbackHost):
    """Loop state for callbacks running on a foreign module (``path``, ``save`` / ``load``, ``print``).

    Example:
        >>> AdapterHost(None, 1, Path("runs")).path.as_posix()
        'runs'
    """

    def __init__(self, loss_func: Callable[..., Tensor] | None, n_inp: int, path: Path | None) -> None:
        super().__init__()
        self.loss_func = loss_func
        self._n_inp = n_inp
        self._no_logging = True  # the user's module owns its logging (no epoch table, nothing logged)
        self.logger: Any = no_table
        self._given_path = path
        if path is not None:
            self.path = path
        #: Whether a validation batch of this epoch had a loss (the step returned one, or loss_func).
        self.valid_loss_seen = False

    def print(self, text: str) -> None:
        """Callbacks' messages (a tracker's "Better model found ...") print on rank 0 under the adapter too."""
        if is_global_zero():
            bar = getattr(self.trainer, "progress_bar_callback", None) if self.trainer is not None else None
            if bar is not None and hasattr(bar, "print"):
                bar.print(text)
            else:
                print(text, flush=True)

    def monitor_values(self) -> dict[str, float]:
        """What a tracker's ``monitor`` may name at an epoch end: the module's logged epoch values and the Recorder's.

        ``trainer.callback_metrics`` (what the module logged) plus the Recorder's ``train_loss`` /
        ``valid_loss``; a logged name wins. When no validation batch had a loss (the module's
        ``validation_step`` returns ``None`` and no ``loss_func`` was given), ``valid_loss`` is the
        first of :data:`VALID_LOSS_KEYS` that the module logged, or is absent.
        """
        values: dict[str, float] = {}
        recorder = getattr(self, "recorder", None)
        if recorder is not None and recorder.full_values:
            names = [n for n in recorder.metric_names[1:] if n != "time"]
            values.update(zip(names, (float(v) for v in recorder.full_values[-1]), strict=False))
        if not self.valid_loss_seen:
            values.pop("valid_loss", None)
        logged: dict[str, float] = {}
        if self.trainer is not None:
            for name, value in self.trainer.callback_metrics.items():
                if isinstance(value, Tensor) and value.numel() == 1:
                    logged[name] = float(value)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    logged[name] = float(value)
        values.update(logged)
        if "valid_loss" not in values:
            for key in VALID_LOSS_KEYS:
                if key in logged:
                    values["valid_loss"] = logged[key]
                    break
        return values


def check_pred(learn: CallbackHost, module: pl.LightningModule) -> None:
    """At setup: ``after_pred`` cannot be honoured on a module with no ``forward`` (no step can call ``self(x)``).

    Example:
        >>> from bridge import Callback
        >>> class WantsPred(Callback):
        ...     def after_pred(self) -> None: ...
        >>> host = AdapterHost(None, 1, None); _ = host.add_cb(WantsPred())
        >>> try:
        ...     check_pred(host, pl.LightningModule())
        ... except TypeError as exc:
        ...     print(str(exc)[:58])
        LightningAdapter: WantsPred.after_pred cannot be honoured:
    """
    if type(module).forward is not pl.LightningModule.forward:
        return
    names = [type(cb).__name__ for cb in learn.cb_handler.subscribers("after_pred")]
    if names:
        raise TypeError(
            f"LightningAdapter: {', '.join(n + '.after_pred' for n in names)} cannot be honoured: "
            f"{type(module).__name__} defines no forward, so its steps never call self(x); define forward and "
            "call self(x) in the step, or drop the callback"
        )

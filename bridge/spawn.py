"""Bring fastlight's state back from ``ddp_spawn`` workers to the process that called ``fit``.

With ``strategy="ddp_spawn"`` training runs in child processes; Lightning sends back the
weights and ``callback_metrics`` only. Rank 0's callback states (every callback's
``state_dict()``: the Recorder's history, a tracker's best, the lr finder's curve) and the
learner's ``final_record`` ride along in Lightning's "extra" results and are loaded into
the caller's callbacks.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from .callback_state import callback_states, load_callback_states
from .distributed import rank_local

__all__ = ["ship_state_back"]

_KEY = "fastlight"


class _Extra:
    """Picklable replacement for the launcher's get_extra_results / update_main_process_results."""

    def __init__(self, launcher: Any, learn: Any, name: str) -> None:
        self.launcher, self.learn, self.name = launcher, learn, name

    def __call__(self, trainer: pl.Trainer, *args: Any) -> Any:
        original = getattr(type(self.launcher), self.name)
        if self.name == "get_extra_results":
            extra = original(self.launcher, trainer)
            with rank_local():  # Lightning runs this on rank 0 alone
                states = callback_states(self.learn.cbs)
            extra[_KEY] = {"callbacks": states, "final_record": self.learn.final_record}
            return extra
        (extra,) = args
        original(self.launcher, trainer, extra)
        state = extra.get(_KEY)
        if state is not None:
            load_callback_states(self.learn.cbs, state["callbacks"])
            self.learn.final_record = state["final_record"]
        return None


def ship_state_back(trainer: pl.Trainer, learn: Any) -> None:
    """If ``trainer`` spawns its workers, make them send ``learn``'s callback state back.

    Example:
        >>> import lightning.pytorch as pl
        >>> trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False)
        >>> ship_state_back(trainer, learn)  # one process, no launcher: nothing to do
        >>> trainer.strategy.launcher is None
        True
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if launcher is None or not hasattr(launcher, "get_extra_results"):
        return
    for name in ("get_extra_results", "update_main_process_results"):
        setattr(launcher, name, _Extra(launcher, learn, name))

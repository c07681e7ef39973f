"""The loop state callbacks are typed against, as Protocols (no import of the classes that satisfy them).

:class:`LoopState` is what every host of fastai-style callbacks offers — the
:class:`~bridge.Learner` and the :class:`~bridge.LightningAdapter`'s host alike — so a
callback's ``self.learn`` has one type wherever it runs. :class:`LearnerState` adds what
only a Learner has (data, optimizer factory, ``fit`` and its recipes' inputs), for the
recipes and the Learner's own module.

Example:
    >>> from bridge import Learner
    >>> sorted(n for n in ("fit", "xb", "save") if n in dir(Learner) or n in LoopState.__annotations__)
    ['fit', 'save', 'xb']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["LearnerState", "LoopState"]


class LoopState(Protocol):
    """The fastai names a callback reads and writes through ``self.learn``.

    Example:
        >>> from bridge.host import CallbackHost
        >>> state: LoopState = CallbackHost()
        >>> state.training, state.in_fit
        (False, False)
    """

    model: Any
    loss_func: Any
    metrics: list[Any]
    opt: torch.optim.Optimizer | None
    trainer: Any
    module: Any
    dls: Any
    stage: str | None
    xb: tuple[Any, ...]
    yb: tuple[Any, ...]
    pred: Any
    loss: Any
    loss_grad: Any
    smooth_loss: Tensor
    epoch: int
    n_epoch: int
    n_train_total: int | None
    iter: int
    n_iter: int
    train_iter: int
    pct_train: float
    training: bool
    dl: Any
    exception: BaseException | None
    final_record: list[float] | None
    last_metrics: list[float] | None
    skip_grad_sync: bool
    stop: bool
    logger: Any
    create_mbar: bool
    path: Path
    model_dir: Path
    cb_handler: Any

    @property
    def cbs(self) -> list[Any]: ...
    @property
    def in_fit(self) -> bool: ...
    @property
    def n_inp(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def x(self) -> Any: ...
    @property
    def y(self) -> Any: ...

    def n_iter_per_epoch(self) -> int: ...
    def create_opt(self) -> torch.optim.Optimizer: ...
    def set_smooth_loss(self, source: Callable[[], Tensor]) -> None: ...
    def add_cb(self, cb: Any) -> Any: ...
    def add_cbs(self, cbs: Iterable[Any] | Any | None) -> Any: ...
    def remove_cb(self, cb: Any) -> Any: ...
    def remove_cbs(self, cbs: Iterable[Any]) -> Any: ...
    def added_cbs(self, cbs: Iterable[Any] | Any | None) -> AbstractContextManager[Any]: ...
    def no_logging(self) -> AbstractContextManager[Any]: ...
    def print(self, text: str) -> None: ...
    def log_step(self, values: dict[str, float], step: int) -> None: ...
    def log_epoch(self, values: dict[str, float], extra: dict[str, float] | None = None) -> None: ...
    def save(self, file: str | os.PathLike[str], with_opt: bool = True) -> Path: ...
    def load(
        self,
        file: str | os.PathLike[str],
        device: str | torch.device | None = None,
        with_opt: bool = True,
        strict: bool = True,
    ) -> Any: ...


class LearnerState(LoopState, Protocol):
    """A :class:`LoopState` that also owns its data, optimizer factory and fits (the Learner).

    Example:
        >>> "fit" in dir(LearnerState)
        True
    """

    lr: float
    moms: tuple[float, float, float]
    wd: float | None
    splitter: Any
    opt_func: Any
    trainer_options: dict[str, Any]
    module: Any
    shard_policy: Any
    _pl_cbs: list[Any]  # the Lightning callbacks given in ``cbs`` (they go to the Trainer)

    def fit(
        self,
        n_epoch: int,
        lr: Any = None,
        wd: float | None = None,
        cbs: Iterable[Any] | Any | None = None,
        reset_opt: bool = False,
        ckpt_path: str | os.PathLike[str] | None = None,
        resume: bool = False,
        **trainer_options: Any,
    ) -> None: ...
    def freeze_to(self, n: int) -> None: ...
    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...

"""``CallbackHost``: the loop state callbacks read and write, and the callbacks themselves.

Both hosts of fastai-style callbacks build on it: :class:`~bridge.Learner` (which owns
the data, model and Trainer) and :class:`~bridge.LightningAdapter` (which drives
callbacks on a user's own LightningModule). Attribute names are fastai's.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from .callback import Callback, callback_name
from .dialects import FloatLrs, RunnerView, SeedFlags, V1Flags, unwrap, wrap_callback
from .distributed import to_detach
from .engine import split_batch
from .files import ModelFiles
from .handler import EventDispatch, is_loop_helper
from .hooks import batch_count
from .output import EpochTable, LoopOutput

__all__ = ["CallbackHost"]


class CallbackHost(ModelFiles, LoopOutput):
    """Loop state with fastai names plus callback management (add, remove, aliases, dialects).

    State: ``model, opt, loss_func, xb, yb, pred, loss, loss_grad, epoch, n_epoch, iter,
    n_iter, train_iter, pct_train, training, dl, smooth_loss, metrics, trainer, module,
    stage`` ("fit", "validate", "predict" or None), ``final_record``, ``exception``.

    Example:
        >>> host = CallbackHost()
        >>> host.epoch, host.training, host.cbs
        (0, False, [])
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.loss_func: Any = None
        self.metrics: list[Any] = []
        self.opt: torch.optim.Optimizer | None = None
        self.trainer: pl.Trainer | None = None
        self.module: pl.LightningModule | None = None
        self.dls: Any = None
        self.stage: str | None = None
        self.xb: tuple[Any, ...] = (None,)
        self.yb: tuple[Any, ...] = (None,)
        self.pred: Any = None
        self.loss: Any = None
        self.loss_grad: Any = None
        self._smooth_loss: Tensor | None = torch.tensor(0.0)
        self._smooth_source: Callable[[], Tensor] | None = None
        self.epoch, self.n_epoch, self.iter, self.n_iter = 0, 1, 0, 0
        #: Training batches of the whole fit when Lightning's ``max_steps`` ends it first (``pct_train``'s
        #: span); None: fastai's ``n_epoch * n_iter``.
        self.n_train_total: int | None = None
        self.train_iter, self.pct_train = 0, 0.0
        self.training = False
        self.dl: Any = None
        self.exception: BaseException | None = None
        self.final_record: list[float] | None = None
        self.last_metrics: list[float] | None = None
        #: Set by GradientAccumulation on a batch that only accumulates: under DDP the
        #: module then skips the gradient all-reduce of that backward.
        self.skip_grad_sync = False
        #: The article's (and course-v3 Runner's) stop flag: True ends the current pass after this batch.
        self.stop = False
        #: fastai's: called by the Recorder with each epoch's row (``recorder.log``); the default prints
        #: the epoch table. fastai's CSVLogger and ProgressCallback wrap or replace it.
        self.logger: Any = EpochTable(self)
        #: fastai's flag for its ProgressCallback (a master bar over the epochs).
        self.create_mbar = True
        #: Where ``save``/``load`` and file-writing callbacks work (``path/model_dir/name.pth``).
        self.path = Path(".")
        self.model_dir = Path("models")
        self._n_inp = 1
        self.cb_handler = EventDispatch(training=functools.partial(getattr, self, "training"))
        self._aliases: dict[str, Any] = {}
        self._handles: dict[int, Any] = {}
        self._pl_cbs: list[pl.Callback] = []
        self._view: RunnerView | None = None
        self._flags: V1Flags | None = None
        self._seed: SeedFlags | None = None

    # -- the smoothed loss ---------------------------------------------------------------------------
    @property
    def smooth_loss(self) -> Tensor:
        """fastai's ``learn.smooth_loss``: the Recorder's debiased moving average of the train loss.

        Computed when first read after a batch (the Recorder's ``source``), not at every batch:
        most fits never read it between epochs.

        Example:
            >>> host = CallbackHost(); host.set_smooth_loss(lambda: torch.tensor(0.5)); host.smooth_loss
            tensor(0.5000)
        """
        value = self._smooth_loss
        if value is None:
            assert self._smooth_source is not None
            value = self._smooth_loss = self._smooth_source()
        return value

    @smooth_loss.setter
    def smooth_loss(self, value: Tensor) -> None:
        self._smooth_loss, self._smooth_source = value, None

    def set_smooth_loss(self, source: Callable[[], Tensor]) -> None:
        """``smooth_loss`` becomes ``source()`` when next read (the Recorder's, after each training batch)."""
        self._smooth_loss, self._smooth_source = None, source

    # -- dialect support ---------------------------------------------------------------------------
    def _runner_view(self) -> RunnerView:
        if self._view is None:
            self._view = RunnerView(self)
            self.cb_handler.add(FloatLrs(self))
        return self._view

    def _seed_flags(self) -> SeedFlags:
        if self._seed is None:
            self._seed = SeedFlags(self)
            self.cb_handler.add(self._seed)
        return self._seed

    def _v1_flags(self) -> V1Flags:
        if self._flags is None:
            self._flags = V1Flags(self)
            self.cb_handler.add(self._flags)
            self.cb_handler.add(self._flags.prelude)
        return self._flags

    @property
    def x(self) -> Any:
        """The input, de-tupled when the batch has one input (fastai v2 ``learn.x``)."""
        return self.xb[0] if len(self.xb) == 1 else self.xb

    @property
    def y(self) -> Any:
        """The target, de-tupled when the batch has one target (fastai v2 ``learn.y``)."""
        return self.yb[0] if len(self.yb) == 1 else self.yb

    def to_detach(self, b: Any, cpu: bool = True, gather: bool = True) -> Any:
        """fastai's ``learn.to_detach``: ``b``'s tensors detached, on the CPU, gathered across ranks (DDP).

        Example:
            >>> learn.to_detach((torch.ones(1, requires_grad=True),))[0].requires_grad
            False
        """
        return to_detach(b, cpu, gather)

    def _split(self, b: Any) -> None:
        """fastai's ``learn._split``: ``xb``, ``yb`` from a batch (the first ``n_inp`` elements are inputs)."""
        self.xb, self.yb = split_batch(b, self.n_inp)

    @property
    def in_fit(self) -> bool:
        """True in a real training fit: not an evaluation, and not a trial fit whose weights are
        thrown away (an ``LRFinder``, i.e. a callback exposed as ``learn.lr_finder``, is running).

        Trackers, loggers and savers act only when this is True.

        Example:
            >>> CallbackHost().in_fit
            False
        """
        return self.stage == "fit" and "lr_finder" not in self.__dict__

    @property
    def cbs(self) -> list[Any]:
        """The callbacks as the user gave them, sorted by ``order`` (internal helpers excluded)."""
        return [unwrap(h) for h in self.cb_handler.cbs if not is_loop_helper(h)]

    def n_iter_per_epoch(self) -> int:
        """Training batches per epoch in this process (after Lightning's distributed sampler).

        Example:
            >>> learn.n_iter_per_epoch()  # 32 items, bs 16
            2
        """
        train_dl = getattr(self.dls, "train_dl", None)
        return batch_count(self.trainer.num_training_batches if self.trainer is not None else None, train_dl)

    @property
    def n_inp(self) -> int:
        """How many leading batch elements are inputs."""
        return self._n_inp

    # -- callbacks -------------------------------------------------------------------------------
    def add_cb(self, cb: Any) -> Self:
        """Add one callback (an instance, or a class to instantiate) and expose it as ``learn.<name>``.

        Callbacks of any dialect (fastai v2, course-v3, fastai v1, duck-typed) are accepted;
        Lightning callbacks go to the Trainer.

        Example:
            >>> from callbacks import SaveModelCallback
            >>> cb = SaveModelCallback()
            >>> learn.add_cb(cb) is learn, learn.save_model is cb
            (True, True)
        """
        if isinstance(cb, type):
            cb = cb()
        if isinstance(cb, pl.Callback):
            self._pl_cbs.append(cb)
            return self
        if self._translate_cb(cb):
            return self
        handle = wrap_callback(cb, self)
        if handle is cb:
            try:
                cb.learn = self
            except AttributeError as exc:
                raise TypeError(f"add_cb: cannot set `learn` on {type(cb).__name__} ({exc})") from None
        name = callback_name(cb) if handle is not cb or not isinstance(cb, Callback) else cb.name
        owner = self._aliases.get(name)
        if owner is None and hasattr(self, name):
            warnings.warn(
                f"add_cb: not exposing {type(cb).__name__} as `learn.{name}`: the Learner already has an "
                f"attribute of that name",
                stacklevel=2,
            )
        elif owner is None:
            setattr(self, name, cb)
            self._aliases[name] = cb
        self._handles[id(cb)] = handle
        self.cb_handler.add(handle)
        return self

    def _translate_cb(self, cb: Any) -> bool:
        """Hook for callbacks that become something else (e.g. a Trainer setting); True if consumed."""
        return False

    def add_cbs(self, cbs: Iterable[Any] | Any | None) -> Self:
        """Add several callbacks.

        Example:
            >>> from callbacks import GradientClip, TerminateOnNaNCallback
            >>> _ = learn.add_cbs([GradientClip(1.0), TerminateOnNaNCallback()])
            >>> [type(c).__name__ for c in learn.cbs]  # sorted by ``order``
            ['TrainEvalCallback', 'TerminateOnNaNCallback', 'GradientClip', 'Recorder']
        """
        if cbs is None:
            return self
        if not isinstance(cbs, (list, tuple)):
            cbs = [cbs]
        for cb in cbs:
            self.add_cb(cb)
        return self

    def remove_cb(self, cb: Any) -> Self:
        """Remove a callback (or every callback of a class), alias included if it owns it.

        Example:
            >>> _ = learn.remove_cb(learn.recorder)
            >>> [type(c).__name__ for c in learn.cbs], hasattr(learn, "recorder")
            (['TrainEvalCallback'], False)
        """
        if isinstance(cb, type):
            for c in [c for c in self.cbs if isinstance(c, cb)]:
                self.remove_cb(c)
            return self
        if isinstance(cb, pl.Callback):
            self._pl_cbs = [c for c in self._pl_cbs if c is not cb]
            return self
        self.cb_handler.remove(self._handles.pop(id(cb), cb))
        for name, owner in list(self._aliases.items()):
            if owner is cb:
                del self._aliases[name]
                if self.__dict__.get(name) is cb:
                    delattr(self, name)
        return self

    def remove_cbs(self, cbs: Iterable[Any]) -> Self:
        """Remove several callbacks.

        Example:
            >>> _ = learn.remove_cbs(list(learn.cbs))
            >>> list(learn.cbs)
            []
        """
        for cb in list(cbs):
            self.remove_cb(cb)
        return self

    @contextlib.contextmanager
    def added_cbs(self, cbs: Iterable[Any] | Any | None) -> Iterator[Self]:
        """Callbacks present only inside the ``with`` block.

        Example:
            >>> from callbacks import GradientClip
            >>> with learn.added_cbs([GradientClip(1.0)]):
            ...     print([type(c).__name__ for c in learn.cbs])
            ['TrainEvalCallback', 'GradientClip', 'Recorder']
            >>> [type(c).__name__ for c in learn.cbs]
            ['TrainEvalCallback', 'Recorder']
        """
        before = list(self.cbs) + list(self._pl_cbs)
        self.add_cbs(cbs)
        added = [c for c in list(self.cbs) + list(self._pl_cbs) if not any(c is b for b in before)]
        try:
            yield self
        finally:
            self.remove_cbs(added)

    @contextlib.contextmanager
    def removed_cbs(self, cbs: Iterable[Any]) -> Iterator[Self]:
        """Callbacks absent inside the ``with`` block (put back afterwards).

        Example:
            >>> with learn.removed_cbs([learn.recorder]):
            ...     print([type(c).__name__ for c in learn.cbs])
            ['TrainEvalCallback']
            >>> [type(c).__name__ for c in learn.cbs]
            ['TrainEvalCallback', 'Recorder']
        """
        cbs = list(cbs)
        self.remove_cbs(cbs)
        try:
            yield self
        finally:
            self.add_cbs(cbs)

    def show_training_loop(self) -> None:
        """Print which callbacks run at each event, in loop order.

        Example:
            >>> learn.show_training_loop()  # doctest: +ELLIPSIS
            Start Fit
              - before_fit            : TrainEvalCallback, Recorder
            ...
            End Fit
        """
        print(self.cb_handler.show_training_loop())

    @contextlib.contextmanager
    def no_logging(self) -> Iterator[Self]:
        """No epoch table and nothing sent to the loggers inside the block (fastai's ``no_logging``).

        Example:
            >>> with learn.no_logging():  # no epoch table printed
            ...     learn.fit(1)
            >>> len(learn.recorder.values)  # but the epoch is recorded
            1
        """
        old = self.__dict__.get("_no_logging", False)
        self._no_logging = True
        try:
            yield self
        finally:
            self._no_logging = old

    def create_opt(self) -> torch.optim.Optimizer:
        """Build the optimizer; a host without an optimizer factory (the adapter's) names where it comes from.

        Example:
            >>> CallbackHost().create_opt()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            RuntimeError: CallbackHost has no optimizer factory: its optimizer is the LightningModule's ...
        """
        raise RuntimeError(
            f"{type(self).__name__} has no optimizer factory: its optimizer is the LightningModule's "
            "(configure_optimizers)"
        )

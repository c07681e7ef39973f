"""``LightningAdapter``: fastai-style callbacks (any dialect) in a Lightning project you already have.

Lightning callbacks cannot replace a batch or a loss. For the duration of a fit the adapter
wraps the module's ``training_step``, ``validation_step`` and ``forward`` (restoring them
afterwards), so the two-way events work on an unchanged ``LightningModule``:

- ``before_batch`` may rebind ``xb`` / ``yb``: the step receives the rebuilt batch;
- ``after_pred`` (fired when the step calls ``self(...)``) may rebind ``pred``: forward
  returns it;
- ``after_loss`` may rebind ``loss`` / ``loss_grad``: the step returns what backward uses.
  With ``loss_func`` given, the adapter computes the loss as ``loss_func(pred, *yb)`` (the
  step still runs, for its logging); without it, the loss is what the step returned.

The remaining events come from Lightning's hooks: ``after_backward`` from ``on_after_backward``
(scaled gradients under fp16), ``before_step`` from ``on_before_optimizer_step`` (unscaled),
``after_step`` / ``after_batch`` from ``on_train_batch_end``. Manual optimization: :mod:`bridge.adapter_manual`.

Limits (Lightning's automatic optimization owns backward, step and zero_grad): a cancel of the
batch or of backward before backward skips backward *and* the step (the step returns ``None``,
which Lightning does not allow under DDP); a cancel at ``before_step`` skips the step by clearing
the gradients; gradients cannot be kept across batches (``CancelBatchException`` after backward
does not skip ``zero_grad``).

Example: :class:`LightningAdapter` counts the batches of a plain ``LightningModule``'s fit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from . import hooks
from .adapter_host import AdapterHost, check_pred
from .adapter_manual import MANUAL_PATCH, ManualSteps, check_manual
from .adapter_patch import Patched, is_wrapper, patch, unpatch
from .callback_state import CKPT_KEY, callback_states
from .engine import BatchEngine, BatchOps, split_batch
from .fast_setattr import restore, speed_up
from .hypers import fastai_api
from .idle_hooks import restore_idle_hooks, skip_idle_hooks
from .levels import Levels
from .profiler import quiet_profiler, restore_profiler
from .recorder import Recorder
from .train_eval import TrainEvalCallback

__all__ = ["LightningAdapter"]

SplitFn = Callable[[Any], tuple[tuple[Any, ...], tuple[Any, ...]]]
JoinFn = Callable[[tuple[Any, ...], tuple[Any, ...], Any], Any]


class _AdapterOps(BatchOps):
    """The engine's batch on a user's module: the module's own step computes pred and loss."""

    def __init__(self, adapter: LightningAdapter, split: SplitFn | None, join: JoinFn | None) -> None:
        super().__init__(adapter.learn)
        self.adapter = adapter
        self.split_fn, self.join_fn = split, join
        self.pred_pending = False  # the next forward call of the module fires after_pred
        self.output: Any = None
        self._call: tuple[Patched, Any, tuple[Any, ...], dict[str, Any]] | None = None

    def split(self, batch: Any) -> None:
        learn = self.learn
        if self.split_fn is not None:
            xb, yb = self.split_fn(batch)
            learn.xb, learn.yb = tuple(xb), tuple(yb)
        else:
            learn.xb, learn.yb = split_batch(batch, learn.n_inp)

    def join(self, batch: Any) -> Any:
        learn = self.learn
        if self.join_fn is not None:
            return self.join_fn(learn.xb, learn.yb, batch)
        if isinstance(batch, tuple):
            return (*learn.xb, *learn.yb)
        if isinstance(batch, list):
            return [*learn.xb, *learn.yb]
        return learn.xb[0]

    def begin(self, patched: Patched, batch: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._call, self.output = (patched, batch, args, kwargs), None
        learn = self.learn
        learn.loss = learn.loss_grad = None  # a step that returns no loss leaves none (not the last batch's)

    def predict(self) -> Any:
        assert self._call is not None
        patched, batch, args, kwargs = self._call
        engine = self.adapter.engine
        self.pred_pending = True
        try:
            self.output = patched.call(self.join(batch), *args, **kwargs)
        finally:
            fired, self.pred_pending = not self.pred_pending, False
        if not fired and self.output is not None and self.learn.cb_handler.subscribers("after_pred"):
            raise RuntimeError(
                f"LightningAdapter: {type(patched.module).__name__}.{patched.name} never called the module "
                "(`self(x)`), so after_pred cannot fire; call self(x) instead of a submodule in the step"
            )
        return self.learn.pred if fired else engine.set_pred(None)

    def forward_called(self, pred: Any) -> Any:
        """The module's forward returned ``pred`` inside the step: after_pred fires (once a step)."""
        if not self.pred_pending:
            return pred
        self.pred_pending = False
        return self.adapter.engine.set_pred(pred)

    def loss(self) -> Tensor | None:
        learn, output = self.learn, self.output
        if learn.loss_func is not None and learn.yb and learn.pred is not None:
            return super().loss()
        loss = output.get("loss") if isinstance(output, dict) else output
        return loss if isinstance(loss, Tensor) else None


_STATE_KEY = "LightningAdapter"

#: Per-batch Callback hooks the adapter does not use. Lightning skips a hook that is not callable, and
#: pays ~1 µs for each one it calls (profiler context, hook name, state_key): these are set to None.
_UNUSED_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
)


class LightningAdapter(pl.Callback):
    """Run fastai-style callbacks (v2, course-v3, v1, duck-typed) on any LightningModule + Trainer.

    Args:
        cbs: the callbacks (instances or classes).
        loss_func: ``loss_func(pred, *yb)``; when given, it computes the loss (needed by
            callbacks that change the loss, such as MixUp).
        n_inp: leading batch elements that are inputs (the rest are targets).
        split: ``split(batch) -> (xb, yb)`` for other batch layouts (e.g. dicts).
        join: ``join(xb, yb, batch) -> batch``, the inverse of ``split``.
        recorder: add a :class:`~bridge.Recorder` (history, values) as a Learner does; under the
            adapter it prints no epoch table.
        path: the folder of ``learn.save`` / ``learn.load`` (``path/models/<name>.pth``, e.g. for
            ``SaveModelCallback``); by default the Trainer's ``default_root_dir``.

    The callbacks see ``self.learn``: the adapter's loop state, where ``model`` is the
    LightningModule, ``opt`` its optimizer and ``trainer`` the Trainer.

    Example:
        >>> from bridge import Callback, LightningAdapter
        >>> class CountBatches(Callback):
        ...     n = 0
        ...     def after_batch(self) -> None:
        ...         self.n += 1
        >>> counter = CountBatches()
        >>> adapter = LightningAdapter([counter], recorder=False)
        >>> import lightning.pytorch as pl
        >>> class Tiny(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(2, 2)
        ...     def training_step(self, batch, batch_idx):
        ...         return nn.functional.cross_entropy(self.lin(batch[0]), batch[1])
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> trainer = pl.Trainer(callbacks=[adapter], max_epochs=2, logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
        >>> trainer.fit(Tiny(), learn.dls.train_dataloader())
        >>> counter.n  # 2 epochs of 2 batches
        4
    """

    def __init__(
        self,
        cbs: Iterable[Any] | Any | None = None,
        loss_func: Callable[..., Tensor] | None = None,
        n_inp: int = 1,
        split: SplitFn | None = None,
        join: JoinFn | None = None,
        recorder: bool = True,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if loss_func is not None and not callable(loss_func):
            raise TypeError(f"LightningAdapter: `loss_func` must be callable or None, got {type(loss_func).__name__}")
        if isinstance(n_inp, bool) or not isinstance(n_inp, int) or n_inp < 1:
            raise ValueError(f"LightningAdapter: `n_inp` must be an int >= 1, got {n_inp!r}")
        if (split is None) != (join is None):
            raise ValueError("LightningAdapter: give both `split` and `join`, or neither")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"LightningAdapter: `path` must be a folder (str or os.PathLike) or None, got {path!r}")
        self.learn = AdapterHost(loss_func, n_inp, None if path is None else Path(path))
        self.levels = Levels(self.learn)
        self.levels.on_cancelled = self._cancelled
        self.engine = BatchEngine(self.learn, self.levels)
        self._ops = _AdapterOps(self, split, join)
        self._manual = ManualSteps(self.learn, self.levels, self.engine, self._ops)
        self._is_manual = False
        defaults: list[Any] = [TrainEvalCallback()]
        if recorder:
            defaults.append(Recorder())
        self.learn.add_cbs(defaults)
        self.learn.add_cbs(cbs)
        self._module: pl.LightningModule | None = None
        self._profiler: Any = None  # the Trainer's own, restored at teardown
        self._epoch_started = -1  # the epoch of the last on_train_epoch_start
        self._idle: list[str] = []  # the module's hooks skipped for this fit (bridge.idle_hooks)
        self._class: type | None = None  # the module's own class, while it has bridge.fast_setattr's
        for name in _UNUSED_BATCH_HOOKS:
            if getattr(type(self), name) is getattr(pl.Callback, name):  # not a subclass's own
                self.__dict__[name] = None

    @property
    def cbs(self) -> list[Any]:
        """The callbacks the adapter runs, sorted by ``order``."""
        return self.learn.cbs

    @property
    def state_key(self) -> str:
        # One adapter per Trainer (Lightning refuses two stateful callbacks with one key). Each
        # callback's state is keyed inside (callback_state): a resume restores those that match.
        return _STATE_KEY

    # -- patching ----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        learn = self.learn
        learn.trainer, learn.module, learn.model = trainer, pl_module, pl_module
        learn.dls = getattr(trainer, "datamodule", None)
        self._profiler = quiet_profiler(trainer)
        if learn._given_path is None:
            learn.path = Path(trainer.default_root_dir)
        check_pred(learn, pl_module)
        self._wrap(pl_module, "training_step", self._training_step)
        self._wrap(pl_module, "forward", self._forward)
        if type(pl_module).validation_step is not pl.LightningModule.validation_step:
            self._wrap(
                pl_module, "validation_step", self._validation_step
            )  # none: patching one in would run validation
        self._is_manual = not pl_module.automatic_optimization
        if self._is_manual:  # see bridge.adapter_manual
            check_manual(trainer, learn.loss_func)
            self._wrap(pl_module, MANUAL_PATCH, self._manual.manual_backward)
        self._idle = skip_idle_hooks(pl_module)  # Lightning's empty per-batch hooks: not called
        self._class = speed_up(pl_module)  # Lightning's hook-name writes, ~30 a batch (bridge.fast_setattr)
        self._module = pl_module

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        unpatch(pl_module)
        restore_idle_hooks(pl_module, self._idle)
        self._idle = []
        restore(pl_module, self._class)
        self._class = None
        self._manual.unwrap()
        restore_profiler(trainer, self._profiler)
        self._profiler = None
        self._module = None

    def _wrap(self, module: pl.LightningModule, name: str, method: Callable[..., Any]) -> None:
        patch(module, name, functools.partial(method, Patched(module, name)))

    def _cancelled(self, level: str) -> None:
        if level == "fit" and self.learn.trainer is not None:
            self.learn.trainer.should_stop = True
        if level in ("fit", "epoch"):
            self._wrap_batch_start()

    def _wrap_batch_start(self) -> None:
        """From now on the module's ``on_train_batch_start`` is the adapter's: -1 (skip the rest of
        the epoch) once it is cancelled, training resumed after a validation or checkpoint inside it."""
        module = self._module
        if module is not None and not is_wrapper(vars(module).get("on_train_batch_start")):
            self._wrap(module, "on_train_batch_start", self._on_train_batch_start)

    def _on_train_batch_start(self, patched: Patched, *args: Any, **kwargs: Any) -> Any:
        trainer, module = self.learn.trainer, patched.module
        assert trainer is not None  # wrapped during a fit only
        skip = hooks.on_train_batch_start(
            self.levels, trainer, self._epoch_started, lambda: self.on_train_epoch_start(trainer, module)
        )
        result = patched.call(*args, **kwargs)
        return -1 if skip else result  # -1 (from the module's hook only) skips the rest of the epoch

    def _forward(self, patched: Patched, *args: Any, **kwargs: Any) -> Any:
        return self._ops.forward_called(patched.original(*args, **kwargs))

    def _skip(self) -> None:
        trainer = self.learn.trainer
        if trainer is not None and trainer.world_size > 1:
            raise RuntimeError(
                "LightningAdapter: a cancel asked to skip a training step, and Lightning's automatic "
                "optimization cannot skip one under distributed training; cancel the train phase at batch "
                "boundaries you control, or train with bridge.Learner (manual optimization) instead"
            )

    def _training_step(self, patched: Patched, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if self._is_manual:
            return self._manual.training_step(patched, batch, *args, **kwargs)
        levels, learn, ops = self.levels, self.learn, self._ops
        if not levels.innermost("train"):
            self._skip()
            return None
        learn.iter = args[0] if args and isinstance(args[0], int) else learn.iter
        ops.split(batch)
        ops.begin(patched, batch, args, kwargs)
        levels.guard(self.engine.forward, ops, "backward")
        if not levels.innermost("backward"):
            if levels.innermost("batch"):
                # CancelBackward: no backward, hence no step either under automatic optimization.
                levels.guard(levels.close_level, "batch")
            self._skip()
            return None
        target = self.engine.backward_target()
        if isinstance(ops.output, dict):
            return {**ops.output, "loss": target}
        return target

    def _validation_step(self, patched: Patched, batch: Any, *args: Any, **kwargs: Any) -> Any:
        levels, learn, ops = self.levels, self.learn, self._ops
        if not levels.innermost("validate"):
            return patched.call(batch, *args, **kwargs)
        learn.iter = args[0] if args and isinstance(args[0], int) else learn.iter
        ops.split(batch)
        ops.begin(patched, batch, args, kwargs)
        levels.guard(self.engine.forward, ops, "batch", local="batch")
        if learn.loss is not None:
            learn.valid_loss_seen = True
        return ops.output

    # -- Lightning hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.learn.opt = fastai_api(trainer.optimizers[0]) if trainer.optimizers else None
        if self._is_manual:
            self._manual.wrap(trainer)
        hooks.on_fit_start(self.levels, trainer)
        if trainer.ckpt_path is not None:  # a resume may start inside an epoch (see _on_train_batch_start)
            self._wrap_batch_start()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_fit_end(self.levels)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        hooks.on_exception(self.levels, exception)
        self.teardown(trainer, pl_module, "fit")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = trainer.current_epoch
        self.learn.valid_loss_seen = False
        hooks.on_train_epoch_start(self.levels, trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_train_epoch_end(self.levels)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_validation_epoch_start(self.levels, trainer)
        if self.levels.train_paused and hooks.trains_on(trainer):  # training goes on in this epoch
            self._wrap_batch_start()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_validation_epoch_end(self.levels, trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_validation_start(self.levels, trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks.on_validation_end(self.levels, trainer)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        levels = self.levels
        if levels.innermost("backward"):
            levels.guard(levels.close_level, "backward")

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        levels = self.levels
        if not levels.innermost("batch"):
            if levels.is_open("fit") and self.learn.training:
                optimizer.zero_grad(set_to_none=True)  # the batch was cancelled after backward: no step
            return
        levels.guard(levels.open_level, "step")
        if not levels.innermost("step"):
            optimizer.zero_grad(set_to_none=True)  # CancelStep (or an outer cancel): make the step a no-op

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        levels = self.levels
        levels.guard(levels.close_level, "step")
        levels.guard(levels.close_level, "batch")

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {CKPT_KEY: callback_states(self.learn.cbs)}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Checkpoints before 2026-12-02 keyed the adapter by its callbacks' names ("LightningAdapter[A, B]").
        states = checkpoint.get("callbacks")
        if isinstance(states, dict) and _STATE_KEY not in states:
            old = [k for k in states if isinstance(k, str) and k.startswith(_STATE_KEY + "[")]
            if len(old) == 1:
                states[_STATE_KEY] = states.pop(old[0])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.levels.pending_state = state_dict.get(CKPT_KEY)

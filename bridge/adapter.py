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

The remaining events come from Lightning's hooks: ``after_backward`` from
``on_after_backward`` (scaled gradients under fp16), ``before_step`` from
``on_before_optimizer_step`` (unscaled), ``after_step`` / ``after_batch`` from
``on_train_batch_end``.

Limits (Lightning's automatic optimization owns backward, step and zero_grad): a cancel
of the batch or of backward before backward skips backward *and* the step (the step
returns ``None``, which Lightning does not allow under DDP); a cancel at ``before_step``
skips the step by clearing the gradients; gradients cannot be kept across batches
(``CancelBatchException`` after backward does not skip ``zero_grad``).

Example:
    >>> # trainer = Trainer(callbacks=[LightningAdapter([MixUp()], loss_func=F.cross_entropy)])
    >>> # trainer.fit(my_module, my_datamodule)
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from .host import CallbackHost
from .loop import EventLoop
from .state import CKPT_KEY, callback_states
from .train_eval import TrainEvalCallback

__all__ = ["LightningAdapter"]

SplitFn = Callable[[Any], tuple[tuple[Any, ...], tuple[Any, ...]]]
JoinFn = Callable[[tuple[Any, ...], tuple[Any, ...], Any], Any]


class _Host(CallbackHost):
    """Loop state for callbacks running on a foreign module."""

    def __init__(self, loss_func: Callable[..., Tensor] | None, n_inp: int) -> None:
        super().__init__()
        self.loss_func = loss_func
        self._n_inp = n_inp
        self._no_logging = True  # the user's module owns its logging


class _Patched:
    """How the adapter calls a patched module method: the method's name and the class's original.

    Built once per fit and method (not per call): ``original`` is the class's function
    bound to the module.
    """

    def __init__(self, module: pl.LightningModule, name: str) -> None:
        self.module, self.name = module, name
        self.original: Callable[..., Any] = types.MethodType(getattr(type(module), name), module)


def _dispatch(module: pl.LightningModule, name: str, *args: Any, **kwargs: Any) -> Any:
    adapter = module.__dict__.get(_ADAPTER_ATTR)
    if adapter is None:  # e.g. a copy made after the fit
        return getattr(type(module), name)(module, *args, **kwargs)
    return adapter._calls[name](*args, **kwargs)


# Plain functions bound to the module (real methods, so Lightning's override checks see code).
def _training_step(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
    return _dispatch(self, "training_step", *args, **kwargs)


def _validation_step(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
    return _dispatch(self, "validation_step", *args, **kwargs)


def _forward(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
    return _dispatch(self, "forward", *args, **kwargs)


def _on_train_batch_start(self: pl.LightningModule, *args: Any, **kwargs: Any) -> Any:
    return _dispatch(self, "on_train_batch_start", *args, **kwargs)


_PATCHES = {
    "training_step": _training_step,
    "validation_step": _validation_step,
    "forward": _forward,
    "on_train_batch_start": _on_train_batch_start,
}
_ADAPTER_ATTR = "_fastlight_adapter"


class LightningAdapter(pl.Callback):
    """Run fastai-style callbacks (v2, course-v3, v1, duck-typed) on any LightningModule + Trainer.

    Args:
        cbs: the callbacks (instances or classes).
        loss_func: ``loss_func(pred, *yb)``; when given, it computes the loss (needed by
            callbacks that change the loss, such as MixUp).
        n_inp: leading batch elements that are inputs (the rest are targets).
        split: ``split(batch) -> (xb, yb)`` for other batch layouts (e.g. dicts).
        join: ``join(xb, yb, batch) -> batch``, the inverse of ``split``.
        recorder: add a :class:`~callbacks.Recorder` (history, epoch table) as a Learner does.

    The callbacks see ``self.learn``: the adapter's loop state, where ``model`` is the
    LightningModule, ``opt`` its optimizer and ``trainer`` the Trainer.

    Example:
        >>> from bridge import Callback, LightningAdapter
        >>> class CountBatches(Callback):
        ...     n = 0
        ...     def after_batch(self) -> None:
        ...         self.n += 1
        >>> adapter = LightningAdapter([CountBatches()])
        >>> # pl.Trainer(callbacks=[adapter]).fit(module, datamodule)
    """

    def __init__(
        self,
        cbs: Iterable[Any] | Any | None = None,
        loss_func: Callable[..., Tensor] | None = None,
        n_inp: int = 1,
        split: SplitFn | None = None,
        join: JoinFn | None = None,
        recorder: bool = True,
    ) -> None:
        if loss_func is not None and not callable(loss_func):
            raise TypeError(f"LightningAdapter: `loss_func` must be callable or None, got {type(loss_func).__name__}")
        if isinstance(n_inp, bool) or not isinstance(n_inp, int) or n_inp < 1:
            raise ValueError(f"LightningAdapter: `n_inp` must be an int >= 1, got {n_inp!r}")
        if (split is None) != (join is None):
            raise ValueError("LightningAdapter: give both `split` and `join`, or neither")
        self.learn = _Host(loss_func, n_inp)
        self.loop = EventLoop(self.learn)
        self.loop.on_cancelled = self._cancelled
        self._split_fn, self._join_fn = split, join
        defaults: list[Any] = [TrainEvalCallback()]
        if recorder:
            from callbacks.recorder import Recorder  # the Learner's default callbacks, here too

            defaults.append(Recorder())
        self.learn.add_cbs(defaults)
        self.learn.add_cbs(cbs)
        self._pred_pending = False
        self._pred_seen = False
        self._module: pl.LightningModule | None = None
        self._loss_set: Any = None
        self._loss_clone: Any = None
        self._calls: dict[str, Callable[..., Any]] = {}
        self._key: tuple[int, str] = (-1, "")

    @property
    def cbs(self) -> list[Any]:
        """The callbacks the adapter runs, sorted by ``order``."""
        return self.learn.cbs

    @property
    def state_key(self) -> str:
        # Lightning reads it at every hook call: rebuilt only when the callbacks change.
        version = self.learn.cb_handler.version
        if self._key[0] != version:
            self._key = (version, f"LightningAdapter[{', '.join(type(c).__name__ for c in self.cbs)}]")
        return self._key[1]

    # -- patching ----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        learn = self.learn
        learn.trainer, learn.module, learn.model = trainer, pl_module, pl_module
        learn.dls = getattr(trainer, "datamodule", None)
        pl_module.__dict__[_ADAPTER_ATTR] = self
        self._calls = {
            name: functools.partial(getattr(self, "_" + name), _Patched(pl_module, name)) for name in _PATCHES
        }
        for name, fn in _PATCHES.items():
            setattr(pl_module, name, types.MethodType(fn, pl_module))
        self._module = pl_module

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name, fn in _PATCHES.items():
            if getattr(pl_module.__dict__.get(name), "__func__", None) is fn:
                delattr(pl_module, name)
        pl_module.__dict__.pop(_ADAPTER_ATTR, None)
        self._calls = {}
        self._module = None

    def _split(self, batch: Any) -> None:
        learn = self.learn
        if self._split_fn is not None:
            xb, yb = self._split_fn(batch)
            learn.xb, learn.yb = tuple(xb), tuple(yb)
        elif isinstance(batch, (list, tuple)):
            learn.xb, learn.yb = tuple(batch[: learn.n_inp]), tuple(batch[learn.n_inp :])
        else:
            learn.xb, learn.yb = (batch,), ()

    def _join(self, batch: Any) -> Any:
        learn = self.learn
        if self._join_fn is not None:
            return self._join_fn(learn.xb, learn.yb, batch)
        if isinstance(batch, tuple):
            return (*learn.xb, *learn.yb)
        if isinstance(batch, list):
            return [*learn.xb, *learn.yb]
        return learn.xb[0]

    def _forward(self, patched: _Patched, *args: Any, **kwargs: Any) -> Any:
        pred = patched.original(*args, **kwargs)
        if not self._pred_pending:
            return pred
        self._pred_pending = False
        self._pred_seen = True
        learn = self.learn
        learn.pred = pred
        learn.cb_handler("after_pred")
        return learn.pred

    def _loss_from(self, output: Any) -> Any:
        learn = self.learn
        if learn.loss_func is not None and learn.yb:
            return learn.loss_func(learn.pred, *learn.yb)
        if isinstance(output, dict):
            return output.get("loss")
        return output

    def _run_step(self, patched: _Patched, batch: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        learn = self.learn
        self._pred_pending, self._pred_seen = True, False
        output = patched.original(self._join(batch), *args, **kwargs)
        self._pred_pending = False
        if not self._pred_seen and learn.cb_handler.subscribers("after_pred"):
            raise RuntimeError(
                f"LightningAdapter: {type(patched.module).__name__}.{patched.name} never called the module "
                "(`self(x)`), so after_pred cannot fire; call self(x) instead of a submodule in the step"
            )
        return output

    def _cancelled(self, level: str) -> None:
        if level == "fit" and self.learn.trainer is not None:
            self.learn.trainer.should_stop = True

    def _on_train_batch_start(self, patched: _Patched, *args: Any, **kwargs: Any) -> Any:
        result = patched.original(*args, **kwargs)
        # -1 (from the module's hook only) skips the rest of the epoch and its validation.
        return -1 if not self.loop.is_open("epoch") else result

    def _skip(self) -> None:
        trainer = self.learn.trainer
        if trainer is not None and trainer.world_size > 1:
            raise RuntimeError(
                "LightningAdapter: a cancel asked to skip a training step, and Lightning's automatic "
                "optimization cannot skip one under distributed training; cancel the train phase at batch "
                "boundaries you control, or train with bridge.Learner (manual optimization) instead"
            )

    def _training_step(self, patched: _Patched, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        loop, learn = self.loop, self.learn
        if not loop.innermost("train"):
            self._skip()
            return None
        learn.iter = batch_idx
        self._split(batch)
        output: Any = None

        def body() -> None:
            nonlocal output
            loop.open_level("batch")
            output = self._run_step(patched, batch, (batch_idx, *args), kwargs)
            loss = self._loss_from(output)
            learn.loss_grad, learn.loss = loss, loss.clone() if isinstance(loss, Tensor) else loss
            self._loss_set, self._loss_clone = learn.loss_grad, learn.loss
            learn.cb_handler("after_loss")
            loop.open_level("backward")

        loop.guard(body)
        if not loop.innermost("backward"):
            if loop.innermost("batch"):
                # CancelBackward: no backward, hence no step either under automatic optimization.
                loop.guard(lambda: loop.close_level("batch"))
            self._skip()
            return None
        target = learn.loss_grad
        if target is self._loss_set and learn.loss is not self._loss_clone:
            target = learn.loss  # callbacks written for fastai < 2.5 rebind `loss` only
        if isinstance(output, dict):
            return {**output, "loss": target}
        return target

    def _validation_step(self, patched: _Patched, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        loop, learn = self.loop, self.learn
        if not loop.innermost("validate"):
            return patched.original(batch, batch_idx, *args, **kwargs)
        learn.iter = batch_idx
        self._split(batch)
        output: Any = None

        def body() -> None:
            nonlocal output
            loop.open_level("batch")
            output = self._run_step(patched, batch, (batch_idx, *args), kwargs)
            loss = self._loss_from(output)
            learn.loss_grad, learn.loss = loss, loss.clone() if isinstance(loss, Tensor) else loss
            learn.cb_handler("after_loss")
            loop.close_level("batch")

        loop.guard(body)
        return output

    # -- Lightning hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.learn.opt = trainer.optimizers[0] if trainer.optimizers else None
        self.loop.fit_start(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.fit_end()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.loop.fit_exception(exception)
        self.teardown(trainer, pl_module, "fit")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.train_epoch_start(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.train_epoch_end()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.validation_epoch_start(trainer)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.validation_epoch_end(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.validation_start(trainer, "validate")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.validation_end(trainer)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = self.loop
        if loop.innermost("backward"):
            loop.guard(lambda: loop.close_level("backward"))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        loop = self.loop
        if not loop.innermost("batch"):
            if loop.is_open("fit") and self.learn.training:
                _drop_grads(optimizer)  # the batch was cancelled after backward: no step
            return
        loop.guard(lambda: loop.open_level("step"))
        if not loop.innermost("step"):
            _drop_grads(optimizer)  # CancelStep (or an outer cancel): make the step a no-op

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loop = self.loop
        loop.guard(lambda: loop.close_level("step"))
        loop.guard(lambda: loop.close_level("batch"))

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {CKPT_KEY: callback_states(self.learn.cbs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loop.pending_state = state_dict.get(CKPT_KEY)


def _drop_grads(optimizer: Any) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None

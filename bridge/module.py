"""``LearnerModule``: the LightningModule that runs fastai's batch inside Lightning.

Lightning's callbacks cannot replace a batch or a loss, and its automatic optimization
zeroes gradients inside its own closure, so fastai's batch (with its cancels) cannot be
built from callback hooks. This module uses manual optimization and runs the whole fastai
batch in ``training_step``::

    before_batch -> pred = model(*xb) -> after_pred -> loss_grad = loss_func(pred, *yb)
    -> after_loss -> before_backward -> backward -> after_backward -> before_step
    -> opt.step() -> after_step -> zero_grad -> after_batch

``before_step`` fires from ``on_before_optimizer_step``, which Lightning calls after the
GradScaler's ``unscale_``, so callbacks see true gradients under every precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn

from .exceptions import (
    CancelBackwardException,
    CancelBatchException,
    CancelException,
    CancelStepException,
)
from .loop import EventLoop
from .resumable import ResumableDataLoader
from .state import CKPT_KEY, callback_states

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["LearnerModule"]

# Agreed votes after which no rank may take the optimizer step.
_NO_STEP = frozenset({"step", "batch", "validate", "train", "epoch", "fit"})


class _StepAborted(Exception):
    """Raised from on_before_optimizer_step to abort a step every rank agreed to skip."""


class _ExceptionHook(pl.Callback):
    """Lightning calls only ``on_exception`` when fit fails; fire ``after_fit`` from there."""

    def __init__(self, module: LearnerModule) -> None:
        self.module = module
        # Lightning reads state_key on every hook call: build it once.
        self._state_key = f"{type(self).__qualname__}[{id(module)}]"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.module._on_fit_exception(exception)

    # Lightning keeps one callback per type from configure_callbacks; state is per learner.
    @property
    def state_key(self) -> str:
        return self._state_key


class _LossRefs:
    """The tensors a batch set as ``loss_grad`` / ``loss``, kept off ``nn.Module.__setattr__``."""

    __slots__ = ("clone", "set")

    def __init__(self) -> None:
        self.set: Tensor | None = None
        self.clone: Tensor | None = None


class LearnerModule(pl.LightningModule):
    """The LightningModule a :class:`~bridge.Learner` trains; usable with any ``Trainer``.

    Holds the model (as ``self.model``) and the learner's metrics (so they move to the
    device and sync across ranks). Every hook drives the learner's callbacks.

    Example:
        >>> import lightning.pytorch as pl
        >>> # learn = Learner(data, model, loss_func=...)
        >>> # pl.Trainer(max_epochs=2).fit(learn.module, datamodule=learn.dls)
    """

    def __init__(self, learn: Learner) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.learn = learn
        self.model = learn.model
        self.metrics = nn.ModuleList(learn.metrics)
        self.loop = EventLoop(learn)
        self.loop.on_cancelled = self._cancelled
        self._lopt: Any = None
        self._world = 1
        self._scaler: Any = None
        self._last_scale = 0.0
        self._epoch_started: int | None = None  # the epoch whose on_train_epoch_start ran
        # Written twice per batch: a plain object, not nn.Module attributes (each
        # nn.Module.__setattr__ runs isinstance checks against parameters, modules, buffers).
        self._refs = _LossRefs()

    def forward(self, *xb: Any) -> Any:
        return self.learn.model(*xb)

    # -- set-up -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.learn.opt is None:
            self.learn.create_opt()
        return self.learn.opt

    def configure_callbacks(self) -> list[pl.Callback]:
        # A Lightning callback costs a few hook dispatches per batch; the Learner's data
        # modules forward on_exception themselves, so the hook is only for other loaders.
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "forwards_exceptions_to_learner", False):
            return []
        return [_ExceptionHook(self)]

    def on_fit_start(self) -> None:
        learn = self.learn
        if learn.opt is None:
            learn.create_opt()
        lopts = self.optimizers()
        self._lopt = lopts[0] if isinstance(lopts, list) else lopts
        self._world = self.trainer.world_size
        plugin = self.trainer.precision_plugin
        self._scaler = getattr(plugin, "scaler", None) if isinstance(plugin, MixedPrecision) else None
        self._last_scale = self._scaler.get_scale() if self._scaler is not None else 0.0
        self._epoch_started = None
        train_dl = getattr(learn.dls, "train_dl", None)
        if isinstance(train_dl, ResumableDataLoader):
            train_dl.forget_resume()  # a restore from an earlier fit that never iterated
        self.loop.fit_start(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = {"callbacks": callback_states(self.learn.cbs), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY, {})
        self.loop.pending_state = state.get("callbacks")
        # Now, before Lightning draws the next epoch's shuffle order (FitLoop.setup_data).
        _set_rng_state(state.get("rng"))

    def on_fit_end(self) -> None:
        self.loop.fit_end()

    def _on_fit_exception(self, exc: BaseException) -> None:
        self.loop.fit_exception(exc)

    def on_train_epoch_start(self) -> None:
        self._epoch_started = self.trainer.current_epoch
        self.loop.train_epoch_start(self.trainer)

    def _cancelled(self, level: str) -> None:
        if level == "fit" and self._trainer is not None:
            self.trainer.should_stop = True  # no more epochs; what is left of this one is muted

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # -1 makes Lightning skip the rest of the epoch *and* its validation; under DDP only
        # once every rank agrees (a rank still waiting to tell the others keeps stepping).
        loop = self.loop
        if loop.is_open("epoch") or loop.deferred is not None:
            return None
        if self._epoch_started != self.trainer.current_epoch and loop.is_open("fit"):
            # Resumed from a mid-epoch checkpoint: Lightning does not call on_train_epoch_start.
            self.on_train_epoch_start()
            return None if loop.is_open("epoch") else -1
        return -1

    def on_validation_epoch_start(self) -> None:
        self.loop.validation_epoch_start(self.trainer)

    def on_validation_epoch_end(self) -> None:
        self.loop.validation_epoch_end(self.trainer)

    def on_train_epoch_end(self) -> None:
        self.loop.train_epoch_end()

    def on_validation_start(self) -> None:
        self.loop.validation_start(self.trainer, self.learn.stage or "validate")

    def on_validation_end(self) -> None:
        self.loop.validation_end(self.trainer)

    # -- batches ----------------------------------------------------------------------------
    def _split(self, batch: Any) -> None:
        learn = self.learn
        n_inp = learn.n_inp
        if isinstance(batch, (list, tuple)):
            learn.xb, learn.yb = tuple(batch[:n_inp]), tuple(batch[n_inp:])
        else:
            learn.xb, learn.yb = (batch,), ()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        loop = self.loop
        if loop.sync is not None:
            return self._ddp_training_step(batch, batch_idx)
        if not loop.innermost("train"):
            return None
        learn = self.learn
        learn.iter = batch_idx
        self._split(batch)
        try:
            self._train_batch(learn)
        except CancelException as exc:
            loop.cancel(exc)
        loss = learn.loss
        return loss.detach() if isinstance(loss, Tensor) else None

    def _train_batch(self, learn: Learner) -> None:
        cbs = learn.cb_handler.__call__  # a bound method: cheaper to call than the object
        try:
            cbs("before_batch")
            learn.pred = learn.model(*learn.xb)
            cbs("after_pred")
            if learn.yb:
                loss = _loss(learn)
                self._refs.set = learn.loss_grad = loss
                self._refs.clone = learn.loss = loss.clone()
            cbs("after_loss")
            if learn.yb:
                self._backward(learn, cbs)
                self._step(learn, cbs)
                learn.opt.zero_grad()  # type: ignore[union-attr]  # set at fit start
        except CancelBatchException:
            cbs("after_cancel_batch")
        cbs("after_batch")

    def _backward(self, learn: Learner, cbs: Any) -> None:
        try:
            cbs("before_backward")
            self._do_backward(self._backward_target(learn))
        except CancelBackwardException:
            cbs("after_cancel_backward")
        cbs("after_backward")

    def _backward_target(self, learn: Learner) -> Any:
        target = learn.loss_grad
        # Callbacks written for fastai < 2.5 rebind `loss` only: that is what backward uses.
        refs = self._refs
        if target is refs.set and learn.loss is not refs.clone:
            target = learn.loss
        return target

    def _do_backward(self, target: Any) -> None:
        # Accumulation-only batches (GradientAccumulation) skip DDP's gradient all-reduce.
        if getattr(self.learn, "skip_grad_sync", False) and self._world > 1:
            with self.trainer.strategy.block_backward_sync():  # type: ignore[attr-defined]
                self.manual_backward(target)
        else:
            self.manual_backward(target)

    def _step(self, learn: Learner, cbs: Any) -> None:
        try:
            try:
                self._lopt.step()
            except BaseException:
                self._restore_scaler()
                raise
            if self._scaler_skipped():
                cbs("after_cancel_step")
        except CancelStepException:
            cbs("after_cancel_step")
        cbs("after_step")

    def _scaler_skipped(self) -> bool:
        """True if the fp16 GradScaler just skipped the step (inf/nan grads), as fastai reports it.

        The scaler lowers its scale when it skips; reading the scale is one device sync a
        batch, paid only with an fp16 scaler (fastai's fp16 callback pays it too).
        """
        scaler = self._scaler
        if scaler is None:
            return False
        scale = scaler.get_scale()
        skipped = bool(scale < self._last_scale)
        self._last_scale = scale
        return skipped

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        loop = self.loop
        if loop.sync is not None and self.trainer.state.fn == "fit":
            loop.guard(lambda: loop.open_level("step"))  # before_step
            agreed = self._agree_batch()
            if agreed & _NO_STEP or not loop.innermost("step"):
                raise _StepAborted()
            return
        if loop.is_open("train"):
            self.learn.cb_handler("before_step")

    # -- the training batch under DDP: every cancel agreed across ranks, one all-reduce a batch ------
    def _ddp_training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        """fastai's batch with cancels agreed at one point (before the optimizer step).

        A rank that cancels still joins DDP's gradient all-reduce (with a zero loss) and the
        agreement; then every rank applies the cancel there. A cancel raised after the step
        waits for the next batch's agreement (or the next hook's).
        """
        loop, learn = self.loop, self.learn
        if loop.deferred is None and not loop.innermost("train"):
            return None  # closed on every rank alike: nobody runs backward
        cbs = learn.cb_handler.__call__  # a bound method: cheaper to call than the object
        if loop.deferred is None:
            learn.iter = batch_idx
            self._split(batch)

            def forward() -> None:
                loop.open_level("batch")
                learn.pred = learn.model(*learn.xb)
                cbs("after_pred")
                if learn.yb:
                    loss = _loss(learn)
                    self._refs.set = learn.loss_grad = loss
                    self._refs.clone = learn.loss = loss.clone()
                cbs("after_loss")
                loop.open_level("backward")

            loop.guard(forward)
        if loop.deferred is None and loop.innermost("backward") and learn.yb:
            self._do_backward(self._backward_target(learn))
            loop.guard(lambda: loop.close_level("backward"))
        else:
            self._zero_backward()
            loop.votes.add("zero_grad")
        stepped = False
        if loop.deferred is None and loop.innermost("batch"):
            try:
                self._lopt.step()  # before_step and the agreement run in on_before_optimizer_step
                stepped = True
                if self._scaler_skipped():  # inf grads are all-reduced: every rank skips alike
                    loop.fire("after_cancel_step")
            except _StepAborted:
                self._restore_scaler()
            except BaseException:
                self._restore_scaler()
                raise
        else:
            self._agree_batch()
        if stepped:
            loop.guard(lambda: loop.close_level("step"))  # after_step
        if loop.deferred is None and loop.innermost("batch"):
            learn.opt.zero_grad()  # type: ignore[union-attr]  # set at fit start
        loop.guard(lambda: loop.close_level("batch"))  # after_batch
        loss = learn.loss
        return loss.detach() if isinstance(loss, Tensor) else None

    def _zero_backward(self) -> None:
        """A backward that adds nothing, so this rank still meets DDP's gradient all-reduce."""
        params = [p for p in self.learn.model.parameters() if p.requires_grad]
        if params:
            self._do_backward(torch.stack([p.sum() for p in params]).sum() * 0.0)

    def _agree_batch(self) -> set[str]:
        agreed = self.loop.agree()
        if "zero_grad" in agreed or "backward" in agreed:
            # Some rank's backward carried nothing: drop the batch's gradients everywhere.
            self.learn.opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]  # set at fit start
        return agreed

    def _restore_scaler(self) -> None:
        """Undo a GradScaler ``unscale_`` whose step was cancelled.

        The scaler would refuse the next ``unscale_`` ("already been called"), and grads
        kept for accumulation must be scaled again before the next backward adds to them.
        """
        plugin = self.trainer.precision_plugin
        scaler = getattr(plugin, "scaler", None) if isinstance(plugin, MixedPrecision) else None
        if scaler is None:
            return
        opt = self.learn.opt
        assert opt is not None
        state = scaler._per_optimizer_states.get(id(opt))
        if not state or state.get("stage") is None or state["stage"].name != "UNSCALED":
            return
        scale = scaler.get_scale()
        with torch.no_grad():
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(scale)
        scaler._per_optimizer_states[id(opt)] = torch.amp.grad_scaler._refresh_per_optimizer_state()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loop = self.loop
        if loop.deferred is not None or not loop.innermost("validate"):
            return
        learn = self.learn
        learn.iter = batch_idx
        self._split(batch)
        cbs = learn.cb_handler.__call__  # a bound method: cheaper to call than the object
        try:
            try:
                cbs("before_batch")
                learn.pred = learn.model(*learn.xb)
                cbs("after_pred")
                if learn.yb:
                    loss = _loss(learn)
                    learn.loss_grad = loss
                    learn.loss = loss.clone()
                cbs("after_loss")
            except CancelBatchException:
                cbs("after_cancel_batch")
            cbs("after_batch")
        except CancelException as exc:
            loop.guard(_raiser(exc))  # under DDP: deferred to the agreement at validation end


def _loss(learn: Learner) -> Tensor:
    """``learn.loss_func(pred, *yb)``; a function that cannot be called so, or returns no tensor, is named."""
    try:
        loss = learn.loss_func(learn.pred, *learn.yb)
    except TypeError as exc:
        raise TypeError(
            f"Learner: `loss_func`(pred, *yb) raised TypeError: {exc}; it must be callable as loss_func(pred, *yb)"
        ) from exc
    if not isinstance(loss, Tensor):
        raise TypeError(f"Learner: `loss_func` must return a tensor, got {type(loss).__name__}")
    return loss


def _raiser(exc: BaseException) -> Any:
    def raise_it() -> None:
        raise exc

    return raise_it


def _rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA) generator states: what a resumed run needs to shuffle alike."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any] | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

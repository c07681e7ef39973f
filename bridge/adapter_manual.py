"""``LightningAdapter`` on a module with manual optimization (``automatic_optimization = False``).

The module runs its own ``manual_backward`` and ``optimizer.step()`` calls, any number a batch
(a GAN: one per optimizer). For the fit the adapter wraps ``manual_backward`` and the
``step`` of each of the Trainer's ``LightningOptimizer`` objects, and maps fastai's events onto
what the module does:

- ``before_batch`` before the module's ``training_step`` (which receives the rebuilt batch);
  ``after_pred`` at its first ``self(...)`` call;
- at each ``manual_backward(loss)``: ``after_loss`` (``loss`` / ``loss_grad`` may be rebound:
  backward uses ``loss_grad``), ``before_backward``, the backward, ``after_backward``;
- at each ``optimizer.step()``: ``before_step`` with ``learn.opt`` the optimizer being stepped
  (gradients final, from Lightning's ``on_before_optimizer_step``), the step, ``after_step``;
- ``after_batch`` after the step returns.

The adapter never zeroes a gradient: every optimizer's gradients are the module's. A cancel
acts per step: ``CancelBackwardException`` skips that backward, ``CancelStepException``
that optimizer step (its gradients are dropped, so the step changes nothing),
``CancelBatchException`` the rest of the batch's backwards and steps.

Not honoured, refused when the fit starts: ``loss_func=`` (the loss is what the module passes
to ``manual_backward``, so callbacks that rebuild it from ``loss_func``, such as MixUp, cannot
act), and distributed training (a cancel on one rank would leave the others waiting in
their gradient all-reduce).

Example:
    >>> MANUAL_PATCH
    'manual_backward'
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .hypers import fastai_api

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from .engine import BatchEngine
    from .levels import Levels
    from .protocol import LoopState

__all__ = ["MANUAL_PATCH", "ManualSteps", "check_manual"]

#: The module method the adapter wraps under manual optimization.
MANUAL_PATCH = "manual_backward"


def check_manual(trainer: pl.Trainer | None, loss_func: Any) -> None:
    """Refuse, at setup, what manual optimization cannot honour.

    Example:
        >>> try:
        ...     check_manual(None, loss_func=print)
        ... except ValueError as exc:
        ...     print(str(exc)[:69])
        LightningAdapter: `loss_func` cannot be used with manual optimization
    """
    if loss_func is not None:
        raise ValueError(
            "LightningAdapter: `loss_func` cannot be used with manual optimization (automatic_optimization=False): "
            "the loss is what the module passes to manual_backward, so callbacks that rebuild it from loss_func "
            "(MixUp, CutMix, LabelSmoothing) cannot act; drop loss_func="
        )
    if trainer is not None and trainer.world_size > 1:
        raise ValueError(
            "LightningAdapter: manual optimization (automatic_optimization=False) is supported in one process "
            f"only, got world_size={trainer.world_size}: a cancel on one rank would leave the others waiting"
        )


class ManualSteps:
    """The batch of a manual-optimization module, on the one batch engine.

    ``ops`` is the adapter's batch ops (``split``, ``join``, ``begin``, ``pred_pending``).

    Example:
        >>> from bridge.engine import BatchEngine
        >>> from bridge.host import CallbackHost
        >>> from bridge.levels import Levels
        >>> host = CallbackHost(); levels = Levels(host)
        >>> ManualSteps(host, levels, BatchEngine(host, levels), ops=None).in_step
        False
    """

    def __init__(self, learn: LoopState, levels: Levels, engine: BatchEngine, ops: Any) -> None:
        self.learn, self.levels, self.engine, self.ops = learn, levels, engine, ops
        self.in_step = False  # inside the module's training_step, run by the adapter
        self.backwards = 0  # manual_backward calls of this batch
        self._wrapped: list[Any] = []

    # -- the step -------------------------------------------------------------------------------
    def training_step(self, patched: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        levels, learn, ops, engine = self.levels, self.learn, self.ops, self.engine
        if not levels.innermost("train"):
            return None  # training was cancelled: the module's step (backwards, steps) does not run
        learn.iter = args[0] if args and isinstance(args[0], int) else learn.iter
        ops.split(batch)
        ops.begin(patched, batch, args, kwargs)
        self.backwards = 0
        levels.guard(engine.open_batch)
        if not levels.innermost("batch"):
            return None  # cancelled at before_batch
        ops.pred_pending, self.in_step = True, True
        try:
            output = patched.call(ops.join(batch), *args, **kwargs)
        finally:
            self.in_step = False
        ops.output = output
        if levels.innermost("batch") and self.backwards == 0:
            self._pred()
            loss = output.get("loss") if isinstance(output, dict) else output
            levels.guard(engine.manual_loss, loss if isinstance(loss, Tensor) else None, False)
        ops.pred_pending = False
        return output

    def _pred(self) -> None:
        """``after_pred`` with ``pred=None`` when the step never called ``self(...)`` (or refuse if one needs it)."""
        ops = self.ops
        if not ops.pred_pending:
            return
        ops.pred_pending = False
        if self.learn.cb_handler.subscribers("after_pred"):
            patched = ops._call[0]
            raise RuntimeError(
                f"LightningAdapter: {type(patched.module).__name__}.{patched.name} never called the module "
                "(`self(x)`) before manual_backward, so after_pred cannot fire; call self(x) in the step"
            )
        self.engine.set_pred(None)

    def manual_backward(self, patched: Any, loss: Any, *args: Any, **kwargs: Any) -> None:
        levels, engine = self.levels, self.engine
        if not self.in_step:
            patched.call(loss, *args, **kwargs)  # outside the adapter's batch: the module's own business
            return
        if not levels.innermost("batch"):
            return  # the batch was cancelled: the rest of its backwards do not run
        self._pred()
        self.backwards += 1
        levels.guard(engine.manual_loss, loss if isinstance(loss, Tensor) else None, True)
        if not levels.innermost("backward"):
            return  # cancelled at after_loss / before_backward
        patched.call(engine.backward_target(), *args, **kwargs)
        levels.guard(levels.close_level, "backward")  # unless on_after_backward closed it already

    # -- the optimizers' steps ------------------------------------------------------------------
    def wrap(self, trainer: pl.Trainer) -> None:
        """Wrap each ``LightningOptimizer.step`` of the fit (the objects ``self.optimizers()`` returns)."""
        for lopt in trainer.strategy._lightning_optimizers:
            setattr(lopt, "step", functools.partial(self._step, lopt, lopt.step))  # noqa: B010 (an instance attribute)
            self._wrapped.append(lopt)

    def unwrap(self) -> None:
        for lopt in self._wrapped:
            lopt.__dict__.pop("step", None)
        self._wrapped = []

    def _step(self, lopt: Any, original: Any, closure: Any = None, **kwargs: Any) -> Any:
        if not self.in_step:
            return original(closure, **kwargs)
        self.learn.opt = fastai_api(lopt.optimizer)
        # before_step fires from on_before_optimizer_step, inside the step (gradients final)
        result = original(closure, **kwargs)
        self.levels.guard(self.levels.close_level, "step")
        return result

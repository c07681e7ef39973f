"""``LearnerModule``: the LightningModule that runs fastai's batch inside Lightning.

Lightning's callbacks cannot replace a batch or a loss, and its automatic optimization
zeroes gradients inside its own closure, so fastai's batch (with its cancels) cannot be
built from callback hooks. This module uses manual optimization and runs the whole fastai
batch (:mod:`bridge.engine`) in ``training_step``; its other hooks are the level
transitions of :mod:`bridge.hooks`.

``before_step`` fires from ``on_before_optimizer_step``, which Lightning calls after the
GradScaler's ``unscale_``, so callbacks see true gradients under every precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer.call import _call_lightning_datamodule_hook as dm_hook
from lightning.pytorch.trainer.call import _call_lightning_module_hook as lm_hook
from torch import Tensor, nn

from . import hooks
from .callback_state import CKPT_KEY, callback_states
from .engine import BatchEngine, BatchOps, split_batch
from .fast_setattr import fast_setattr
from .idle_hooks import skip_idle_hooks
from .levels import Levels
from .loaders import ResumableDataLoader
from .sharding import check_strategy, is_model_parallel, remap_optimizer, shard_model

if TYPE_CHECKING:
    from .protocol import LearnerState

__all__ = ["LearnerModule"]


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


class _ModuleOps(BatchOps):
    """The Learner's batch on Lightning: manual backward, the LightningOptimizer's step, the GradScaler."""

    def __init__(self, module: LearnerModule) -> None:
        super().__init__(module.learn)
        self.module = module
        self.lopt: Any = None
        self.world = 1
        self.scaler: Any = None
        self.last_scale = 0.0
        #: Under FSDP every rank runs one forward (and backward) per batch: its collectives must match.
        self.sharded = False
        self.batch: Any = None
        self.out: Any = None  # this batch's forward output, None until the forward ran

    def start_batch(self, batch: Any) -> None:
        self.batch, self.out = batch, None

    def predict(self) -> Any:
        learn = self.learn
        self.out = learn.model(*learn.xb)
        return self.out

    def forward_anyway(self) -> Any:
        """Under FSDP, the forward a rank whose batch was cancelled before it still owes the others."""
        if self.out is None:
            xb, _ = split_batch(self.batch, self.learn.n_inp)
            self.out = self.learn.model(*xb)
        return self.out

    def fit_start(self, trainer: pl.Trainer) -> None:
        lopts = self.module.optimizers()
        self.lopt = lopts[0] if isinstance(lopts, list) else lopts
        self.world = trainer.world_size
        self.sharded = is_model_parallel(trainer.strategy) and self.world > 1
        plugin = trainer.precision_plugin
        self.scaler = getattr(plugin, "scaler", None) if isinstance(plugin, MixedPrecision) else None
        self.last_scale = self.scaler.get_scale() if self.scaler is not None else 0.0

    def backward(self, target: Tensor) -> None:
        module = self.module
        # Accumulation-only batches (GradientAccumulation) skip DDP's gradient all-reduce.
        if self.learn.skip_grad_sync and self.sharded:  # FSDP2: keep unsharded grads, no reduce-scatter
            _gradient_sync(self.learn.model, False)
            try:
                module.manual_backward(target)
            finally:
                _gradient_sync(self.learn.model, True)
        elif self.learn.skip_grad_sync and self.world > 1:
            with module.trainer.strategy.block_backward_sync():  # type: ignore[attr-defined]
                module.manual_backward(target)
        else:
            module.manual_backward(target)

    def zero_backward(self) -> None:
        if self.sharded:  # through the forward's graph, so FSDP's reduce-scatter runs as on the other ranks
            outs = [t for t in _tensors(self.forward_anyway()) if t.requires_grad]
            if outs:
                self.backward(torch.stack([t.float().sum() for t in outs]).sum() * 0.0)
            return
        params = [p for p in self.learn.model.parameters() if p.requires_grad]
        if params:
            self.backward(torch.stack([p.sum() for p in params]).sum() * 0.0)

    def step(self) -> None:
        self.lopt.step()  # on_before_optimizer_step -> engine.before_step, after unscale_

    def scaler_skipped(self) -> bool:
        """True if the fp16 GradScaler just skipped the step (inf/nan grads), as fastai reports it.

        The scaler lowers its scale when it skips; reading the scale is one device sync a
        batch, paid only with an fp16 scaler (fastai's fp16 callback pays it too).
        """
        scaler = self.scaler
        if scaler is None:
            return False
        scale = scaler.get_scale()
        skipped = bool(scale < self.last_scale)
        self.last_scale = scale
        return skipped

    def aborted(self) -> None:
        """Undo a GradScaler ``unscale_`` whose step was cancelled.

        The scaler would refuse the next ``unscale_`` ("already been called"), and grads
        kept for accumulation must be scaled again before the next backward adds to them.
        """
        plugin = self.module.trainer.precision_plugin
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


class LearnerModule(pl.LightningModule):
    """The LightningModule a :class:`~bridge.Learner` trains; usable with any ``Trainer``.

    Holds the model (as ``self.model``) and the learner's metrics (so they move to the
    device and sync across ranks). Every hook drives the learner's callbacks.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from bridge import DataBunch, Learner
        >>> ds = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
        >>> learn = Learner(DataBunch.from_datasets(ds, ds, bs=4), torch.nn.Linear(2, 1),
        ...                 loss_func=torch.nn.MSELoss(), path=tempfile.mkdtemp())
        >>> trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(learn.module, datamodule=learn.dls)  # doctest: +ELLIPSIS
        epoch ...
        >>> learn.train_iter
        2
    """

    def __init__(self, learn: LearnerState) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.learn = learn
        self.model = learn.model
        self.metrics = nn.ModuleList(learn.metrics)
        self.levels = Levels(learn)
        self.levels.on_cancelled = self._cancelled
        self.engine = BatchEngine(learn, self.levels)
        self._ops = _ModuleOps(self)
        self._epoch_started: int | None = None  # the epoch whose on_train_epoch_start ran
        self._hook_selector: Any = None
        self._hook_callers: dict[str, Any] = {}
        skip_idle_hooks(self)  # Lightning's empty per-batch hooks: not called (see bridge.idle_hooks)

    __setattr__ = fast_setattr  # Lightning's hook-name writes, ~30 a batch (bridge.fast_setattr)

    def forward(self, *xb: Any) -> Any:
        return self.learn.model(*xb)

    # -- set-up -------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``: shard the model with ``learn.shard_policy`` (see :mod:`bridge.sharding`).

        Runs in every Trainer's set-up; a model already sharded is left as it is. An optimizer
        built before is pointed at the sharded parameters.
        """
        trainer = self._trainer
        strategy = trainer.strategy if trainer is not None else None
        check_strategy(strategy)
        self._ops.sharded = is_model_parallel(strategy) and trainer is not None and trainer.world_size > 1
        if not is_model_parallel(strategy):
            return
        mesh = getattr(strategy, "device_mesh", None)
        model = self.learn.model
        before = dict(model.named_parameters())
        if shard_model(model, mesh, getattr(self.learn, "shard_policy", None)):
            if self.learn.opt is not None:
                remap_optimizer(self.learn.opt, before, model)

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
        self._ops.fit_start(self.trainer)
        self._epoch_started = None
        train_dl = getattr(learn.dls, "train_dl", None)
        if isinstance(train_dl, ResumableDataLoader):
            train_dl.forget_resume()  # a restore from an earlier fit that never iterated
        hooks.on_fit_start(self.levels, self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = {"callbacks": callback_states(self.learn.cbs), "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY, {})
        self.levels.pending_state = state.get("callbacks")
        # Now, before Lightning draws the next epoch's shuffle order (FitLoop.setup_data).
        _set_rng_state(state.get("rng"))

    def on_fit_end(self) -> None:
        hooks.on_fit_end(self.levels)

    def _on_fit_exception(self, exc: BaseException) -> None:
        hooks.on_exception(self.levels, exc)

    def on_train_epoch_start(self) -> None:
        self._epoch_started = self.trainer.current_epoch
        hooks.on_train_epoch_start(self.levels, self.trainer)

    def _cancelled(self, level: str) -> None:
        if level == "fit" and self._trainer is not None:
            self.trainer.should_stop = True  # no more epochs; what is left of this one is muted

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # -1 makes Lightning skip the rest of the epoch *and* its validation.
        skip = hooks.on_train_batch_start(self.levels, self.trainer, self._epoch_started, self.on_train_epoch_start)
        return -1 if skip else None

    def on_validation_model_zero_grad(self) -> None:
        # Lightning clears the gradients before validating; fastai keeps them (a batch cancelled to
        # accumulate, as GradientAccumulation does, carries its gradients over the epoch's end).
        return

    def on_validation_epoch_start(self) -> None:
        hooks.on_validation_epoch_start(self.levels, self.trainer)

    def on_validation_epoch_end(self) -> None:
        hooks.on_validation_epoch_end(self.levels, self.trainer)

    def on_train_epoch_end(self) -> None:
        hooks.on_train_epoch_end(self.levels)

    def on_validation_start(self) -> None:
        hooks.on_validation_start(self.levels, self.trainer)

    def on_validation_end(self) -> None:
        hooks.on_validation_end(self.levels, self.trainer)

    def _call_batch_hook(self, hook_name: str, *args: Any) -> Any:
        # Lightning asks, three times a batch, whether the data module overrides each batch-transfer
        # hook (two ``is_overridden`` walks a call with a data module: profile of issue 21). The
        # answer cannot change within a Trainer's run: keep it per data-hook selector.
        trainer = self._trainer
        selector = getattr(getattr(trainer, "_data_connector", None), "_datahook_selector", None)
        if trainer is None or selector is None:
            return super()._call_batch_hook(hook_name, *args)
        if selector is not self._hook_selector:
            self._hook_selector, self._hook_callers = selector, {}
        call = self._hook_callers.get(hook_name)
        if call is None:
            owner = selector.get_instance(hook_name)
            call = self._hook_callers[hook_name] = lm_hook if isinstance(owner, type(self)) else dm_hook
        return call(trainer, hook_name, *args)

    # -- batches: the engine's ----------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        self._ops.start_batch(batch)
        return self.engine.train_batch(batch, batch_idx, self._ops)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self.engine.before_step(self._ops)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        ops = self._ops
        ops.start_batch(batch)
        self.engine.valid_batch(batch, batch_idx, ops)
        if ops.sharded and ops.out is None:  # cancelled on this rank only: FSDP's all-gathers still run
            with torch.no_grad():
                ops.forward_anyway()


def _gradient_sync(model: nn.Module, on: bool) -> None:
    """FSDP2's ``set_requires_gradient_sync`` on every sharded module of ``model``."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_requires_gradient_sync(on, recurse=False)


def _tensors(out: Any) -> list[Tensor]:
    """The tensors in a model's output (a tensor, or lists / tuples / dicts of them)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


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

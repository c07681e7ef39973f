"""``Learner``: fastai's training API (fit, validate, get_preds, save/load, callbacks) on Lightning."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from torch import Tensor, nn

from .callback import Callback
from .checkpoint_io import AtomicCheckpointIO
from .checkpoint_timing import epoch_end_saves
from .data import DataBunch, forward_exception, unrepeated
from .distributed import atomic_save
from .host import CallbackHost
from .interrupt import interrupt_raises
from .metrics import as_metric, metric_name
from .module import LearnerModule
from .optim import NO_WD, Adam, OptFunc, param_groups, set_hyper
from .spawn import ship_state_back
from .train_eval import TrainEvalCallback

__all__ = ["Learner"]

_TRAINER_KWARGS = frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
# Options the Learner owns, with what to use instead.
_RESERVED = {
    "max_epochs": "pass the number of epochs to fit(n_epoch)",
    "min_epochs": "fastai always runs the n_epoch given to fit(); use EarlyStoppingCallback to stop early",
    "gradient_clip_val": "use callbacks.GradientClip(max_norm=...) (fastai's way; it sees unscaled grads)",
    "gradient_clip_algorithm": "use callbacks.GradientClip(norm_type=...)",
    "accumulate_grad_batches": "use callbacks.GradientAccumulation(n_acc=...)",
}
# Lightning warnings that are noise for a Learner: the Recorder logs at its own pace, CPU
# loaders with num_workers=0 are the user's choice, and the pytree one is Lightning's own.
_QUIET_WARNINGS = (
    ".*smaller than the logging interval.*",
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    # Lightning's advice for manual optimization and every_n_train_steps; a Learner saves
    # after the whole batch, step included, which is what a resume needs.
    ".*no pre-optimization state was saved.*",
    # resume=True reads the default checkpoint whatever ModelCheckpoint wrote it.
    ".*callbacks used to create the checkpoint need to be provided.*",
)
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _check_trainer_options(where: str, options: dict[str, Any]) -> None:
    for key in options:
        if key in _RESERVED:
            raise ValueError(f"{where}: the Trainer option `{key}` is managed by the Learner; {_RESERVED[key]}")
        if key not in _TRAINER_KWARGS:
            raise TypeError(
                f"{where}: unknown keyword `{key}`; Learner keywords are its own arguments plus any "
                f"lightning.Trainer option ({', '.join(sorted(_TRAINER_KWARGS - set(_RESERVED)))})"
            )


def _check_epochs(n_epoch: object) -> int:
    if isinstance(n_epoch, bool) or not isinstance(n_epoch, int) or n_epoch < 1:
        raise ValueError(f"fit: `n_epoch` must be an int >= 1, got {n_epoch!r}")
    return n_epoch


def _check_lr(lr: object, where: str = "Learner") -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        if isinstance(lr, slice):
            raise TypeError(
                f"{where}: `lr` as a slice (discriminative learning rates) needs fit_one_cycle with a splitter"
            )
        raise ValueError(f"{where}: `lr` must be a positive finite number, got {lr!r}")
    return float(lr)


def _check_wd(wd: object, where: str) -> None:
    if wd is None:
        return
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise ValueError(f"{where}: `wd` must be a finite number >= 0 or None, got {wd!r}")


def _check_moms(moms: object) -> None:
    if (
        not isinstance(moms, (tuple, list))
        or len(moms) != 3
        or not all(isinstance(m, (int, float)) and not isinstance(m, bool) and 0.0 <= m <= 1.0 for m in moms)
    ):
        raise ValueError(f"Learner: `moms` must be 3 numbers in [0, 1] (start, middle, end), got {moms!r}")


def _check_path(value: object, name: str, where: str) -> str:
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(f"{where}: `{name}` must be a path (str or os.PathLike), got {type(value).__name__}")
    if "\x00" in text:
        raise ValueError(f"{where}: `{name}` must be a path without NUL characters, got {value!r}")
    return text


#: ``ckpt_path`` values that Lightning resolves itself (plus ``registry:<name>...`` and URLs).
_CKPT_SPECIAL = frozenset({"last", "best", "hpc", "registry"})


def _check_ckpt_path(ckpt_path: object) -> None:
    if ckpt_path is None:
        return
    text = _check_path(ckpt_path, "ckpt_path", "fit")
    if isinstance(ckpt_path, str) and (text in _CKPT_SPECIAL or text.lower().startswith("registry:") or "://" in text):
        return
    if not os.path.isfile(text):
        raise FileNotFoundError(
            f"fit: `ckpt_path` {text!r} is not a checkpoint file; give a file written by Lightning, "
            "one of 'last', 'best', 'hpc', 'registry', or use resume=True"
        )


def _call_splitter(splitter: Callable[[nn.Module], Any], model: nn.Module) -> list[list[nn.Parameter]]:
    # Only the call and the reading of its result are wrapped: a wrong signature or a result
    # of the wrong shape names `splitter` instead of failing inside param_groups or torch.
    try:
        splits = [list(split) for split in splitter(model)]
    except (TypeError, ValueError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"Learner: `splitter`(model) must return lists of parameters: {exc}") from exc
    for split in splits:
        for p in split:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"Learner: `splitter`(model) must return lists of parameters, got a {type(p).__name__} in a list"
                )
    return splits


def trainable_params(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's default splitter: one group with every parameter that requires grad.

    Example:
        >>> from torch import nn
        >>> len(trainable_params(nn.Linear(2, 1))[0])
        2
    """
    return [[p for p in model.parameters() if p.requires_grad]]


class Learner(CallbackHost):
    """Train ``model`` on ``data`` the fastai way, on Lightning's ``Trainer``.

    Args:
        data: a :class:`~bridge.DataBunch` (also available as ``learn.dls``).
        model: the ``nn.Module`` to train; called as ``model(*xb)``.
        loss_func: ``loss_func(pred, *yb) -> tensor``.
        opt_func: ``opt_func(param_groups, lr=...) -> torch.optim.Optimizer``; fastai's Adam
            (torch ``AdamW``, betas (0.9, 0.99), eps 1e-5, wd 0.01) by default.
        lr: default learning rate of ``fit`` (1e-3).
        splitter: ``splitter(model) -> list of parameter lists`` (param groups).
        cbs: callbacks for every fit (fastai v2 style, or any object defining events;
            Lightning callbacks go to the Trainer).
        metrics: torchmetrics ``Metric`` objects or functions ``f(pred, *yb) -> tensor``.
        path, model_dir: where ``save`` writes (``path/model_dir``) and logs go (``path``).
        wd: weight decay for ``fit`` (None: the optimizer's default).
        wd_bn_bias: apply weight decay to bias and normalisation parameters too.
        moms: momentums for ``fit_one_cycle`` (fastai's (0.95, 0.85, 0.95)).
        default_cbs: add ``TrainEvalCallback`` and ``Recorder`` (as fastai does).
        **trainer_options: any ``lightning.Trainer`` keyword (accelerator, devices,
            strategy, precision, plugins, logger, enable_progress_bar, ...), used by every
            fit; ``fit(...)`` may override them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from bridge import DataBunch, Learner
        >>> ds = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
        >>> data = DataBunch.from_datasets(ds, ds, bs=16)
        >>> learn = Learner(data, nn.Linear(4, 2), loss_func=nn.CrossEntropyLoss(), logger=False,
        ...                 enable_progress_bar=False, path=__import__("tempfile").mkdtemp())
        >>> learn.fit(1)  # doctest: +ELLIPSIS
        epoch ...
        >>> len(learn.validate())
        1
    """

    module: LearnerModule

    def __init__(
        self,
        data: DataBunch,
        model: nn.Module,
        loss_func: Callable[..., Tensor] | None = None,
        opt_func: OptFunc = Adam,
        lr: float = 1e-3,
        splitter: Callable[[nn.Module], Sequence[Sequence[nn.Parameter]]] = trainable_params,
        cbs: Iterable[Any] | Any | None = None,
        metrics: Iterable[Any] | Any | None = None,
        path: str | os.PathLike[str] | None = None,
        model_dir: str | os.PathLike[str] = "models",
        wd: float | None = None,
        wd_bn_bias: bool = False,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        default_cbs: bool = True,
        **trainer_options: Any,
    ) -> None:
        if not isinstance(data, DataBunch):
            raise TypeError(
                f"Learner: `data` must be a bridge.DataBunch, got {type(data).__name__}; "
                "wrap loaders with DataBunch(train_dl, valid_dl) or DataBunch.from_datasets(...)"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"Learner: `model` must be a torch.nn.Module, got {type(model).__name__}")
        if not any(True for _ in model.parameters()):
            raise ValueError(f"Learner: `model` ({type(model).__name__}) has no parameters; there is nothing to train")
        if loss_func is None:
            loss_func = getattr(data.train_ds, "loss_func", None)
        if loss_func is None or not callable(loss_func):
            raise TypeError(
                f"Learner: `loss_func` must be callable as loss_func(pred, *yb), got {type(loss_func).__name__}; "
                "e.g. loss_func=nn.CrossEntropyLoss()"
            )
        if not callable(opt_func):
            raise TypeError(f"Learner: `opt_func` must be callable as opt_func(params, lr=...), got {opt_func!r}")
        if not callable(splitter):
            raise TypeError(f"Learner: `splitter` must be callable as splitter(model), got {splitter!r}")
        _check_wd(wd, "Learner")
        _check_moms(moms)
        if path is not None:
            _check_path(path, "path", "Learner")
        _check_path(model_dir, "model_dir", "Learner")
        _check_trainer_options("Learner", trainer_options)

        super().__init__()
        self.dls = data
        self._n_inp = data.n_inp
        self.model = model
        self.loss_func = loss_func
        self.opt_func = opt_func
        self.lr = _check_lr(lr)
        self.splitter = splitter
        self.path = Path(path) if path is not None else Path(".")
        self.model_dir = Path(model_dir)
        self.wd = wd
        self.wd_bn_bias = wd_bn_bias
        self.moms = moms
        self.trainer_options = dict(trainer_options)
        if metrics is None:
            metrics = []
        elif not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self.metrics = [as_metric(m, i) for i, m in enumerate(metrics)]
        self.module = LearnerModule(self)
        if default_cbs:
            from callbacks.recorder import Recorder  # the one bridge -> callbacks edge

            self.add_cbs([TrainEvalCallback(), Recorder()])
        self.add_cbs(cbs)
        self.cb_handler("after_create")

    # -- fastai aliases ------------------------------------------------------------------------
    @property
    def data(self) -> DataBunch:
        """fastai v1 name of ``dls``."""
        data: DataBunch = self.dls
        return data

    @contextlib.contextmanager
    def no_bar(self) -> Iterator[Learner]:
        """No progress bar for the fits inside the block (fastai's ``no_bar``).

        Example:
            >>> # with learn.no_bar(): learn.fit(1)
        """
        had = "enable_progress_bar" in self.trainer_options
        old = self.trainer_options.get("enable_progress_bar")
        self.trainer_options["enable_progress_bar"] = False
        try:
            yield self
        finally:
            if had:
                self.trainer_options["enable_progress_bar"] = old
            else:
                del self.trainer_options["enable_progress_bar"]

    def summary(self, max_depth: int = 2, with_shapes: bool = True) -> str:
        """Lightning's model summary of the Learner's module plus the callbacks per event (fastai's ``summary``).

        Layers (to ``max_depth``), input/output sizes of one validation batch (``with_shapes``),
        parameter counts, optimizer, loss, and which callbacks run at each event.

        Example:
            >>> # print(learn.summary())
        """
        from .summary import summary

        return summary(self, max_depth, with_shapes)

    def _translate_cb(self, cb: Any) -> bool:
        # A ported fastai MixedPrecision callback becomes the Trainer's precision setting.
        from .precision import translate_precision_callback

        return translate_precision_callback(self, cb)

    # -- optimizer -------------------------------------------------------------------------------
    def create_opt(self) -> torch.optim.Optimizer:
        """Build ``self.opt`` from ``opt_func``, the splitter's param groups and ``lr``.

        Example:
            >>> # learn.create_opt(); learn.opt.param_groups[0]["lr"]
        """
        groups = param_groups(self.model, _call_splitter(self.splitter, self.model), self.wd_bn_bias)
        try:
            opt = self.opt_func(groups, lr=self.lr)
        except TypeError as exc:
            raise TypeError(f"Learner: `opt_func` must be callable as opt_func(param_groups, lr=...): {exc}") from exc
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"Learner: `opt_func` returned {type(opt).__name__}, not a torch.optim.Optimizer")
        for group in opt.param_groups:
            if group.get(NO_WD) and "weight_decay" in group:
                group["weight_decay"] = 0.0
        if self.wd is not None:
            set_hyper(opt, "wd", self.wd)
        self.opt = opt
        return opt

    # -- training --------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        """Where each fit keeps its resumable Lightning checkpoint, ``last.ckpt``.

        Example:
            >>> # learn.checkpoint_dir / "last.ckpt"
        """
        return self.path / "checkpoints"

    def _make_trainer(self, overrides: dict[str, Any], for_fit: bool = False) -> pl.Trainer:
        opts: dict[str, Any] = {
            "accelerator": "auto",
            "devices": 1,
            "num_sanity_val_steps": 0,
            "enable_checkpointing": for_fit,
            "enable_model_summary": False,
            "enable_progress_bar": _interactive_output(),
            "default_root_dir": str(self.path),
        }
        opts.update(self.trainer_options)
        opts.update(overrides)
        if "logger" not in opts or opts["logger"] is True:
            opts["logger"] = TensorBoardLogger(save_dir=str(self.path), name="lightning_logs", default_hp_metric=False)
        callbacks = opts.pop("callbacks", None) or []
        if isinstance(callbacks, pl.Callback):
            callbacks = [callbacks]
        opts["callbacks"] = list(callbacks) + list(self._pl_cbs)
        _refuse_unsupported(opts["callbacks"])
        opts["plugins"] = _with_atomic_io(opts.get("plugins"), opts.get("strategy"))
        has_ckpt = any(isinstance(c, ModelCheckpoint) for c in opts["callbacks"])
        if has_ckpt and "enable_checkpointing" not in {**self.trainer_options, **overrides}:
            opts["enable_checkpointing"] = True
        elif for_fit and opts["enable_checkpointing"] and not has_ckpt:
            # The resumable checkpoint of every fit (weights, optimizer, loops, callback
            # state, RNG), rewritten at each epoch end: what `fit(..., resume=True)` reads.
            opts["callbacks"].append(
                ModelCheckpoint(
                    dirpath=str(self.checkpoint_dir),
                    filename="last",
                    save_top_k=1,
                    every_n_epochs=1,
                    enable_version_counter=False,
                )
            )
        with _quiet():
            return pl.Trainer(**opts)

    def fit(
        self,
        n_epoch: int,
        lr: float | None = None,
        wd: float | None = None,
        cbs: Iterable[Any] | Any | None = None,
        reset_opt: bool = False,
        ckpt_path: str | os.PathLike[str] | None = None,
        resume: bool = False,
        **trainer_options: Any,
    ) -> None:
        """Train for ``n_epoch`` epochs at ``lr`` (default ``self.lr``), on a new ``lightning.Trainer``.

        ``cbs`` are added for this fit only. ``trainer_options`` override the Learner's
        (e.g. ``devices=2, strategy="ddp"``). Each fit keeps ``checkpoint_dir/last.ckpt``
        up to date at every epoch end (``enable_checkpointing=False`` turns it off);
        ``resume=True`` continues from it, ``ckpt_path`` from any Lightning checkpoint.
        ``n_epoch`` counts the whole run, so a run killed after epoch 2 of 4 and resumed
        with ``fit(4, resume=True)`` trains epochs 2 and 3.

        Example:
            >>> # learn.fit(3, lr=1e-2); learn.fit(1, precision="bf16-mixed")
        """
        _check_epochs(n_epoch)
        if lr is not None:
            _check_lr(lr, "fit")
        _check_wd(wd, "fit")
        if not resume:  # with resume=True a ckpt_path is refused below
            _check_ckpt_path(ckpt_path)
        _check_trainer_options("fit", trainer_options)
        if resume:
            if ckpt_path is not None:
                raise ValueError("fit: give `resume=True` or `ckpt_path=...`, not both")
            last = self.checkpoint_dir / "last.ckpt"
            if last.exists():
                ckpt_path = last
            else:
                warnings.warn(
                    f"fit(resume=True): no checkpoint at {str(last)!r}; training from the start", stacklevel=2
                )
        with self.added_cbs(cbs):
            if reset_opt or self.opt is None:
                self.create_opt()
            assert self.opt is not None
            wd = self.wd if wd is None else wd
            if wd is not None:
                set_hyper(self.opt, "wd", wd)
            set_hyper(self.opt, "lr", self.lr if lr is None else lr)
            self.n_epoch = n_epoch
            self.module.metrics = nn.ModuleList(self.metrics)
            self.trainer = trainer = self._make_trainer({"max_epochs": n_epoch, **trainer_options}, for_fit=True)
            self.exception = None
            ship_state_back(trainer, self)
            saves = epoch_end_saves(trainer.callbacks)  # type: ignore[attr-defined]
            with interrupt_raises(self), saves, _quiet(), warnings.catch_warnings():
                # The default checkpoint rewrites last.ckpt in place: its folder is meant to be full.
                warnings.filterwarnings("ignore", f"Checkpoint directory {re.escape(str(self.checkpoint_dir))} exists")
                trainer.fit(self.module, datamodule=self.dls, ckpt_path=None if ckpt_path is None else str(ckpt_path))

    def _evaluate(self, dl: Any, cbs: Iterable[Any] | Any | None, stage: str) -> None:
        overrides: dict[str, Any] = {"logger": False, "enable_progress_bar": False}
        with self.added_cbs(cbs):
            self.stage = stage
            self.module.metrics = nn.ModuleList(self.metrics)
            trainer = self._make_trainer(overrides)
            self.trainer = trainer
            ship_state_back(trainer, self)
            try:
                with interrupt_raises(self), _quiet():
                    trainer.validate(self.module, datamodule=_EvalData(dl), verbose=False)
            finally:
                self.stage = None

    def validate(self, ds_idx: int = 1, dl: Any = None, cbs: Iterable[Any] | Any | None = None) -> list[float] | None:
        """Run the validation loop; return ``[valid_loss, *metrics]`` (fastai's ``validate``).

        Example:
            >>> # valid_loss, accuracy = learn.validate()
        """
        self.final_record = None
        self._evaluate(self.dls[ds_idx] if dl is None else dl, cbs, "validate")
        return self.final_record

    def get_preds(
        self,
        ds_idx: int = 1,
        dl: Any = None,
        act: Callable[[Tensor], Tensor] | None = None,
        cbs: Iterable[Any] | Any | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Predictions and targets on the validation set (or ``dl``), in dataset order.

        ``act`` is applied to the predictions (e.g. ``torch.softmax``-like); raw model
        outputs otherwise.

        Example:
            >>> # preds, targs = learn.get_preds(); (preds.argmax(1) == targs).float().mean()
        """
        gather = _GatherPreds()
        extra = [gather] + (list(cbs) if isinstance(cbs, (list, tuple)) else [cbs] if cbs is not None else [])
        self._evaluate(self.dls[ds_idx] if dl is None else dl, extra, "predict")
        preds, targs = gather.result()
        if act is not None:
            preds = act(preds)
        return preds, targs

    def predict(self, item: Any) -> Any:
        """fastai's ``(decoded, decoded_index, probabilities)`` for one item, or the raw output (``bridge.decode``)."""
        from .decode import predict

        return predict(self, item)

    def test_dl(self, items: Any, with_labels: bool = False, bs: int | None = None) -> Any:
        """``learn.dls.test_dl(...)``: a loader over new items for ``get_preds(dl=...)``."""
        return self.dls.test_dl(items, with_labels=with_labels, bs=bs)

    def export(self, fname: str | os.PathLike[str] | None = None, pickle: bool = False) -> Path:
        """Write the model for ``load_learner`` to ``path/fname`` (``bridge.export.export_learner``)."""
        from .export import export_learner

        return export_learner(self, fname, pickle=pickle)

    # -- recipes (implemented in callbacks.schedule / callbacks.lr_finder / bridge.freeze) --------
    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: float | slice | None = None,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        wd: float | None = None,
        moms: tuple[float, float, float] | None = None,
        cbs: Iterable[Any] | Any | None = None,
        reset_opt: bool = False,
        **trainer_options: Any,
    ) -> None:
        """fastai's one-cycle policy: cosine warm-up to ``lr_max``, then cosine annealing.

        Example:
            >>> # learn.fit_one_cycle(3, lr_max=1e-2)
        """
        from callbacks.schedule import fit_one_cycle

        fit_one_cycle(self, n_epoch, lr_max, div, div_final, pct_start, wd, moms, cbs, reset_opt, **trainer_options)

    def fit_flat_cos(
        self,
        n_epoch: int,
        lr: float | slice | None = None,
        div_final: float = 1e5,
        pct_start: float = 0.75,
        wd: float | None = None,
        cbs: Iterable[Any] | Any | None = None,
        reset_opt: bool = False,
        **trainer_options: Any,
    ) -> None:
        """fastai's flat-then-cosine schedule.

        Example:
            >>> # learn.fit_flat_cos(3, lr=1e-2)
        """
        from callbacks.schedule import fit_flat_cos

        fit_flat_cos(self, n_epoch, lr, div_final, pct_start, wd, cbs, reset_opt, **trainer_options)

    def fit_sgdr(
        self,
        n_cycles: int,
        cycle_len: int,
        lr_max: float | slice | None = None,
        cycle_mult: int = 2,
        cbs: Iterable[Any] | Any | None = None,
        reset_opt: bool = False,
        wd: float | None = None,
        **trainer_options: Any,
    ) -> None:
        """fastai's SGDR: cosine cycles whose length grows by ``cycle_mult``.

        Example:
            >>> # learn.fit_sgdr(3, 1, lr_max=1e-2)
        """
        from callbacks.schedule import fit_sgdr

        fit_sgdr(self, n_cycles, cycle_len, lr_max, cycle_mult, cbs, reset_opt, wd, **trainer_options)

    def fine_tune(
        self,
        epochs: int,
        base_lr: float = 2e-3,
        freeze_epochs: int = 1,
        lr_mult: float = 100,
        pct_start: float = 0.3,
        div: float = 5.0,
        **kwargs: Any,
    ) -> None:
        """fastai's recipe: freeze, one cycle, unfreeze, one cycle with discriminative rates.

        Example:
            >>> # learn.fine_tune(3)
        """
        from callbacks.schedule import fine_tune

        fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, **kwargs)

    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10,
        num_it: int = 100,
        stop_div: bool = True,
        show_plot: bool = True,
        suggest_funcs: Sequence[Callable[..., Any]] | None = None,
        **trainer_options: Any,
    ) -> Any:
        """fastai's learning-rate finder; returns ``SuggestedLRs`` (one field per suggestion function).

        Example:
            >>> # learn.lr_find().valley
        """
        from callbacks.lr_finder import lr_find

        return lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot, suggest_funcs, **trainer_options)

    def freeze_to(self, n: int) -> None:
        """Freeze the param groups before group ``n`` (norm layers stay trainable).

        Example:
            >>> # learn.freeze_to(-1)
        """
        from .freeze import freeze_to

        freeze_to(self, n)

    def freeze(self) -> None:
        """Freeze all param groups but the last.

        Example:
            >>> # learn.freeze()
        """
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every param group trainable.

        Example:
            >>> # learn.unfreeze()
        """
        self.freeze_to(0)

    def to_fp16(self) -> Learner:
        """Train with fp16 mixed precision (``precision="16-mixed"``, with a GradScaler).

        Example:
            >>> # learn.to_fp16().fit(1)
        """
        from .precision import set_precision

        return set_precision(self, "16-mixed")

    def to_bf16(self) -> Learner:
        """Train with bf16 mixed precision (``precision="bf16-mixed"``).

        Example:
            >>> # learn.to_bf16().fit(1)
        """
        from .precision import set_precision

        return set_precision(self, "bf16-mixed")

    def to_fp32(self) -> Learner:
        """Train in full precision again.

        Example:
            >>> # learn.to_fp32()
        """
        from .precision import set_precision

        return set_precision(self, "32-true")

    # -- end recipes ---------------------------------------------------------------------------------

    # -- files -----------------------------------------------------------------------------------
    def _file(self, file: str | os.PathLike[str]) -> Path:
        p = Path(file)
        if p.suffix == "" and not p.is_absolute() and len(p.parts) == 1:
            return self.path / self.model_dir / f"{file}.pth"
        return p if p.is_absolute() else self.path / self.model_dir / p

    def save(self, file: str | os.PathLike[str], with_opt: bool = True) -> Path:
        """Save the model (and optimizer) to ``path/model_dir/file.pth``; return that path.

        Written by global rank 0 only, atomically.

        Example:
            >>> # learn.save("stage1")  -> Path('models/stage1.pth')
        """
        state: Any = self.model.state_dict()
        if with_opt and self.opt is not None:
            state = {"model": state, "opt": self.opt.state_dict()}
        return atomic_save(state, self._file(file))

    def load(
        self,
        file: str | os.PathLike[str],
        device: str | torch.device | None = None,
        with_opt: bool = True,
        strict: bool = True,
    ) -> Learner:
        """Load what ``save`` wrote (``torch.load(weights_only=True)``: no code is unpickled).

        Example:
            >>> # learn.load("stage1")
        """
        path = self._file(file)
        if not path.exists():
            raise FileNotFoundError(f"Learner.load: no file {str(path)!r}")
        try:
            state = torch.load(path, map_location=device or self.device, weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"Learner.load: {str(path)!r} is not a loadable model file ({type(exc).__name__}: {exc}); "
                "only tensors and plain containers are accepted (weights_only=True)"
            ) from exc
        has_opt = isinstance(state, dict) and set(state) == {"model", "opt"}
        model_state = state["model"] if has_opt else state
        try:
            self.model.load_state_dict(model_state, strict=strict)
        except RuntimeError as exc:
            raise RuntimeError(f"Learner.load: {str(path)!r} does not fit this model: {exc}") from exc
        if has_opt and with_opt:
            if self.opt is None:
                self.create_opt()
            assert self.opt is not None
            try:
                self.opt.load_state_dict(state["opt"])
            except (ValueError, KeyError) as exc:
                warnings.warn(
                    f"Learner.load: could not load the optimizer state ({exc}); kept a fresh one", stacklevel=2
                )
        return self

    def __repr__(self) -> str:
        names = ", ".join(metric_name(m) for m in self.metrics)
        return f"Learner({type(self.model).__name__}, {self.dls!r}, metrics=[{names}], cbs={self.cbs})"


def _interactive_output() -> bool:
    """True where a progress bar can redraw in place: a terminal, or a Jupyter kernel.

    In a pipe or a log file the bar's carriage returns and cursor moves would garble the
    epoch table, so the default there is no bar (``enable_progress_bar=True`` still forces it).
    """
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _with_atomic_io(plugins: Any, strategy: Any) -> Any:
    """The Trainer's plugins plus :class:`AtomicCheckpointIO`, unless the user chose a checkpoint I/O."""
    listed = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in listed) or getattr(strategy, "_checkpoint_io", None) is not None:
        return plugins
    return [*listed, AtomicCheckpointIO()]


def _refuse_unsupported(callbacks: list[Any]) -> None:
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb._train_time_interval is not None:
            raise TypeError(
                "Learner: ModelCheckpoint(train_time_interval=...) never saves in a Learner fit: with manual "
                "optimization Lightning only checks every_n_train_steps; use every_n_train_steps=... instead"
            )
        if isinstance(cb, StochasticWeightAveraging):
            raise TypeError(
                "Learner: Lightning's StochasticWeightAveraging is not supported: the Learner's module uses "
                "manual optimization, where Lightning never steps SWA's learning-rate schedule (`swa_lrs` would "
                "be ignored) and its batch-norm update epoch would train; average weights with "
                "torch.optim.swa_utils.AveragedModel in a callback's after_epoch instead"
            )


class _GatherPreds(Callback):
    """Collects predictions and targets during a ``get_preds`` pass; under DDP, from every rank."""

    order = 60

    def before_validate(self) -> None:
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []
        self._result: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))

    def after_batch(self) -> None:
        learn = self.learn
        assert learn is not None
        self._preds.append(learn.pred.detach())
        if learn.yb:
            self._targs.append(learn.yb[0].detach())

    def after_validate(self) -> None:
        preds = torch.cat(self._preds).cpu() if self._preds else torch.empty(0)
        targs = torch.cat(self._targs).cpu() if self._targs else torch.empty(0)
        if _dist_ready() and torch.distributed.get_world_size() > 1:
            # Rank r holds items r, r+W, ... (bridge.data.unrepeated): gather and interleave.
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (preds, targs))
            preds, targs = _interleave([p for p, _ in parts]), _interleave([t for _, t in parts])
        self._result = (preds, targs)

    def result(self) -> tuple[Tensor, Tensor]:
        return self._result

    def state_dict(self) -> dict[str, Any]:  # how the result comes back from ddp_spawn workers
        return {"preds": self._result[0], "targs": self._result[1]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._result = (state["preds"], state["targs"])


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _interleave(parts: list[Tensor]) -> Tensor:
    """Put back dataset order from per-rank shards ``r::W``."""
    if not parts or (parts[0].numel() == 0 and all(p.numel() == 0 for p in parts)):
        return parts[0] if parts else torch.empty(0)
    total = sum(p.shape[0] for p in parts)
    out = parts[0].new_empty((total, *parts[0].shape[1:]))
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


class _EvalData(pl.LightningDataModule):
    """One evaluation loader, given to Lightning so that DDP shards it without repeats."""

    def __init__(self, dl: Any) -> None:
        super().__init__()
        self.dl = dl

    forwards_exceptions_to_learner = True

    def val_dataloader(self) -> Any:
        return unrepeated(self.dl, getattr(self, "trainer", None))

    def on_exception(self, exception: BaseException) -> None:
        forward_exception(self, exception)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep Lightning's start-up chatter (GPU/TPU availability, tips) out of the output."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)

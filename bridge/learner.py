"""``Learner``: fastai's training API (fit, validate, get_preds, save/load, callbacks) on Lightning."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint_timing import epoch_end_saves
from .checks import check_epochs, check_lr, check_moms, check_path, check_wd
from .data import DataBunch
from .evaluate import evaluate, get_preds
from .host import CallbackHost
from .hypers import fastai_api
from .interrupt import interrupt_raises
from .lr_finder import lr_find
from .lr_ranges import freeze, freeze_to, set_lr, unfreeze
from .metrics import as_metric, metric_name
from .module import LearnerModule
from .optim import (
    FORMS,
    NO_WD,
    Adam,
    OptFunc,
    call_splitter,
    check_opt_func,
    check_ready_opt,
    param_groups,
    set_hyper,
    trainable_params,
)
from .precision import to_bf16, to_fp16, to_fp32, translate_precision_callback
from .recipes import fine_tune, fit_flat_cos, fit_one_cycle, fit_sgdr
from .recorder import Recorder
from .spawn import ship_state_back
from .summary import summary as model_summary
from .train_eval import TrainEvalCallback
from .trainer import check_ckpt_path, check_trainer_options, checkpoint_dir, make_trainer, quiet

__all__ = ["Learner", "trainable_params"]


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
        opt: torch.optim.Optimizer | None = None,
        shard_policy: Callable[[nn.Module, Any], None] | None = None,
        **trainer_options: Any,
    ) -> None:
        if isinstance(data, nn.Module) and isinstance(model, torch.optim.Optimizer):
            # The article's (course-v3's) form: Learner(model, opt, loss_func, data).
            data, model, opt, opt_func = opt_func, data, model, Adam
            if not isinstance(data, DataBunch):
                raise TypeError(
                    f"Learner(model, opt, loss_func, data): `data` must be a bridge.DataBunch, got "
                    f"{type(data).__name__}; {FORMS}"
                )
        if not isinstance(data, DataBunch):
            raise TypeError(
                f"Learner: `data` must be a bridge.DataBunch, got {type(data).__name__}; "
                f"wrap loaders with DataBunch(train_dl, valid_dl) or DataBunch.from_datasets(...); {FORMS}"
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
        check_opt_func(opt_func)
        if not callable(splitter):
            raise TypeError(f"Learner: `splitter` must be callable as splitter(model), got {splitter!r}")
        if opt is not None:
            check_ready_opt(opt, model)
        check_wd(wd, "Learner")
        check_moms(moms, "Learner")
        if path is not None:
            check_path(path, "path", "Learner")
        check_path(model_dir, "model_dir", "Learner")
        check_trainer_options("Learner", trainer_options)

        super().__init__()
        self.dls = data
        self._n_inp = data.n_inp
        self.model = model
        self.loss_func = loss_func
        self.opt_func = opt_func
        check_lr(lr, "Learner", allow_zero=True)
        #: A ready optimizer given by the user: used as it is (its learning rates too, unless fit gets `lr`).
        self.opt = fastai_api(opt, self) if opt is not None else None
        self._ready_opt = opt is not None
        self.lr = float(opt.param_groups[0]["lr"]) if opt is not None else float(lr)
        self.splitter = splitter
        self.path = Path(path) if path is not None else Path(".")
        self.model_dir = Path(model_dir)
        self.wd = wd
        self.wd_bn_bias = wd_bn_bias
        self.moms = moms
        self.trainer_options = dict(trainer_options)
        #: Under ModelParallelStrategy: ``shard_policy(model, mesh)`` shards the model (bridge.sharding's default).
        self.shard_policy = shard_policy
        if metrics is None:
            metrics = []
        elif not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self.metrics = [as_metric(m, i) for i, m in enumerate(metrics)]
        self.module = LearnerModule(self)
        if default_cbs:
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
            >>> with learn.no_bar():
            ...     print(learn.trainer_options["enable_progress_bar"])
            False
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
            >>> print(learn.summary())  # doctest: +ELLIPSIS
            Learner...
        """
        return model_summary(self, max_depth, with_shapes)

    def _translate_cb(self, cb: Any) -> bool:
        # A ported fastai MixedPrecision callback becomes the Trainer's precision setting.
        return translate_precision_callback(self, cb)

    # -- optimizer -------------------------------------------------------------------------------
    def create_opt(self) -> torch.optim.Optimizer:
        """Build ``self.opt`` from ``opt_func``, the splitter's param groups and ``lr``.

        Example:
            >>> _ = learn.create_opt()
            >>> [g["lr"] for g in learn.opt.param_groups]  # weights, then biases (no weight decay)
            [0.001, 0.001]
        """
        if self._ready_opt and self.opt is not None:
            # A ready optimizer: a fresh one of its class over its own groups (same hyper-parameters).
            old = self.opt
            self.opt = fastai_api(type(old)([dict(g) for g in old.param_groups], **old.defaults), self)
            return self.opt
        groups = param_groups(self.model, call_splitter(self.splitter, self.model), self.wd_bn_bias)
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
        self.opt = fastai_api(opt, self)
        return self.opt

    # -- training --------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        """Where each fit keeps its resumable Lightning checkpoint, ``last.ckpt``.

        Example:
            >>> learn.checkpoint_dir.is_relative_to(learn.path)
            True
        """
        return checkpoint_dir(self.path)

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
            >>> learn.fit(2, lr=1e-2)  # doctest: +ELLIPSIS
            epoch  train_loss  valid_loss  time
            0 ...
            1 ...
            >>> len(learn.recorder.values)
            2
        """
        check_epochs(n_epoch, "fit")
        check_lr(lr, "fit", groups=True, allow_zero=True)
        check_wd(wd, "fit")
        if not resume:  # with resume=True a ckpt_path is refused below
            check_ckpt_path(ckpt_path)
        check_trainer_options("fit", trainer_options)
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
        options = dict(self.trainer_options)  # a ported precision callback in `cbs` ends with this fit
        with self.added_cbs(cbs), _restored(self, options):
            if reset_opt or self.opt is None:
                self.create_opt()
            assert self.opt is not None
            wd = self.wd if wd is None else wd
            if wd is not None:
                set_hyper(self.opt, "wd", wd)
            if lr is not None or not self._ready_opt:  # a ready optimizer keeps its own rates
                set_lr(self, lr, "lr", "fit")
            self.n_epoch = n_epoch
            self.module.metrics = nn.ModuleList(self.metrics)
            self.trainer = trainer = make_trainer(
                self.path, self.trainer_options, {"max_epochs": n_epoch, **trainer_options}, self._pl_cbs, for_fit=True
            )
            self.exception = None
            ship_state_back(trainer, self)
            saves = epoch_end_saves(trainer.callbacks)  # type: ignore[attr-defined]
            with interrupt_raises(self), saves, quiet(), warnings.catch_warnings():
                # The default checkpoint rewrites last.ckpt in place: its folder is meant to be full.
                warnings.filterwarnings("ignore", f"Checkpoint directory {re.escape(str(self.checkpoint_dir))} exists")
                trainer.fit(self.module, datamodule=self.dls, ckpt_path=None if ckpt_path is None else str(ckpt_path))

    def validate(self, ds_idx: int = 1, dl: Any = None, cbs: Iterable[Any] | Any | None = None) -> list[float] | None:
        """Run the validation loop; return ``[valid_loss, *metrics]`` (fastai's ``validate``).

        Example:
            >>> (valid_loss,) = learn.validate()
            >>> x, y = learn.dls.valid_ds.tensors
            >>> round(valid_loss, 5) == round(learn.loss_func(learn.model(x), y).item(), 5)
            True
        """
        self.final_record = None
        evaluate(self, self.dls[ds_idx] if dl is None else dl, cbs, "validate")
        return self.final_record

    get_preds = get_preds

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

    # -- recipes: fastai's, written once as functions of the learner and bound here as methods ----
    fit_one_cycle = fit_one_cycle
    fit_flat_cos = fit_flat_cos
    fit_sgdr = fit_sgdr
    fine_tune = fine_tune
    lr_find = lr_find

    freeze_to = freeze_to

    freeze = freeze
    unfreeze = unfreeze

    to_fp16 = to_fp16
    to_bf16 = to_bf16
    to_fp32 = to_fp32

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: fall through to the model, as fastai's Learner
        # does (learn.parameters(), learn.modules(), a model attribute), after its own names.
        model = self.__dict__.get("model")
        if name.startswith("__") or model is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r} (nor has its model, {type(model).__name__})"
            ) from None

    def __repr__(self) -> str:
        names = ", ".join(metric_name(m) for m in self.metrics)
        return f"Learner({type(self.model).__name__}, {self.dls!r}, metrics=[{names}], cbs={self.cbs})"


@contextlib.contextmanager
def _restored(learn: Learner, options: dict[str, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        learn.trainer_options = options

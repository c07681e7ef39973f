"""``validate`` / ``get_preds``: a validation pass on its own Trainer, or nested inside a running fit.

Outside a fit, each evaluation runs ``trainer.validate`` on a new ``lightning.Trainer`` (DDP
shards the loader without repeats; the events are fastai's: ``before_fit, before_epoch,
before_validate ... after_validate, after_epoch, after_fit``). Inside a fit — fastai's
``FetchPredsCallback`` calls ``get_preds(..., inner=True)`` from ``after_validate`` — the pass runs
on the fit's own Trainer and model, through the same batch engine: with ``inner=True`` only
``before_validate ... after_validate`` fire (fastai's ``validation_context(inner=True)``), and the
outer fit's loop state (open levels, epoch, batch, stage, model mode) is put back afterwards,
so the fit goes on to its last epoch. A nested pass is one rank's own: under DDP each rank
evaluates the whole loader, without collectives.

Example:
    >>> preds, targs, losses = learn.get_preds(with_loss=True)
    >>> torch.allclose(losses.mean(), torch.tensor(learn.validate()[0]))
    True
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .interrupt import interrupt_raises
from .preds import EvalData, GatherPreds
from .spawn import ship_state_back
from .trainer import make_trainer, quiet

if TYPE_CHECKING:
    from .protocol import LearnerState as Learner

__all__ = ["evaluate", "get_preds", "unreduced"]

#: Loop state a nested pass borrows and gives back.
_LOOP_STATE = ("stage", "epoch", "iter", "n_iter", "train_iter", "pct_train", "dl", "xb", "yb", "pred", "loss",
               "loss_grad", "training", "final_record", "last_metrics")  # fmt: skip


def _listify(cbs: Iterable[Any] | Any | None) -> list[Any]:
    return list(cbs) if isinstance(cbs, (list, tuple)) else [] if cbs is None else [cbs]


def evaluate(learn: Learner, dl: Any, cbs: Iterable[Any] | Any | None, stage: str, inner: bool = False) -> None:
    """One validation pass of ``learn`` over ``dl`` with ``cbs`` added for it (``stage``: validate / predict).

    Example:
        >>> evaluate(learn, learn.dls.valid_dl, None, "validate"); len(learn.final_record)
        1
    """
    if learn.module.levels.is_open("fit"):
        _nested(learn, dl, cbs, stage, inner)
        return
    overrides: dict[str, Any] = {"logger": False, "enable_progress_bar": False}
    with learn.added_cbs(cbs):
        learn.stage = stage
        learn.module.metrics = torch.nn.ModuleList(learn.metrics)
        trainer = make_trainer(learn.path, learn.trainer_options, overrides, learn._pl_cbs)
        learn.trainer = trainer
        ship_state_back(trainer, learn)
        try:
            with interrupt_raises(learn), quiet():
                trainer.validate(learn.module, datamodule=EvalData(dl), verbose=False)
        finally:
            learn.stage = None


def _nested(learn: Learner, dl: Any, cbs: Iterable[Any] | Any | None, stage: str, inner: bool) -> None:
    module = learn.module
    levels, engine, ops, trainer = module.levels, module.engine, module._ops, learn.trainer
    saved_levels = (list(levels.open), levels.deferred, set(levels.votes), levels.sync)
    saved = {name: getattr(learn, name) for name in _LOOP_STATE}
    was_training = learn.model.training
    precision = trainer.precision_plugin.val_step_context() if trainer is not None else _nothing()
    try:
        with learn.added_cbs(cbs), learn.no_logging(), torch.no_grad(), precision:
            levels.open.clear()
            levels.deferred, levels.votes, levels.sync = None, set(), None
            learn.stage = stage
            if inner:
                levels.open.extend(["fit", "epoch"])  # already open around us: no before_fit / before_epoch
            else:
                levels.open_level("fit")
                levels.open_level("epoch")
            levels.guard(levels.open_level, "validate")
            learn.dl, learn.n_iter = dl, len(dl)
            for i, batch in enumerate(dl):
                if not levels.innermost("validate"):
                    break
                if trainer is not None:
                    batch = trainer.strategy.batch_to_device(batch)
                engine.valid_batch(batch, i, ops)
            levels.guard(levels.close_level, "validate")
            if not inner:
                levels.guard(levels.close_level, "epoch")
                levels.guard(levels.close_level, "fit")
    finally:
        levels.open[:], levels.deferred, levels.votes, levels.sync = saved_levels
        record = learn.final_record
        for name, value in saved.items():
            setattr(learn, name, value)
        learn.final_record = record if stage == "validate" else saved["final_record"]
        learn.model.train(was_training)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def unreduced(loss_func: Any) -> Callable[..., Tensor]:
    """``loss_func`` giving one loss per item, as fastai's ``loss_not_reduced``.

    Example:
        >>> unreduced(torch.nn.functional.cross_entropy)(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)).shape
        torch.Size([3])
    """
    if hasattr(loss_func, "reduction"):
        per_item = copy.copy(loss_func)
        per_item.reduction = "none"
        return per_item  # type: ignore[no-any-return]
    return functools.partial(loss_func, reduction="none")


def get_preds(
    learn: Learner,
    ds_idx: int = 1,
    dl: Any = None,
    with_input: bool = False,
    with_decoded: bool = False,
    with_loss: bool = False,
    act: Callable[[Tensor], Tensor] | None = None,
    inner: bool = False,
    reorder: bool = True,
    cbs: Iterable[Any] | Any | None = None,
    **kwargs: Any,
) -> tuple[Any, ...]:
    """fastai's ``get_preds``: predictions and targets of ``dls[ds_idx]`` (or ``dl``), in dataset order.

    Returns ``(inputs?, preds, targs, decoded?, losses?)``, the optional parts as asked. ``act``
    defaults to the loss function's ``activation`` (fastai's losses have one; torch's do not:
    raw outputs), ``decoded`` is the loss function's ``decodes(preds)`` (the predictions
    themselves without one), ``losses`` one per item (the loss function unreduced). ``inner``:
    called from inside a fit (only the validate events fire). ``reorder`` is accepted for
    fastai's signature: the result is always in dataset order.

    Example:
        >>> inputs, preds, targs = learn.get_preds(with_input=True)
        >>> torch.equal(inputs, learn.dls.valid_ds.tensors[0]), preds.shape
        (True, torch.Size([32, 2]))
    """
    nested = learn.module.levels.is_open("fit")
    gather = GatherPreds(with_input=with_input, gather=not nested)
    evaluate(learn, learn.dls[ds_idx] if dl is None else dl, [gather, *_listify(cbs)], "predict", inner=inner)
    inputs, preds, targs = gather.result()
    losses = None
    if with_loss:
        per_item = unreduced(learn.loss_func)(preds, targs)
        first = targs[0] if isinstance(targs, (tuple, list)) else targs
        n = len(first) if hasattr(first, "__len__") else per_item.shape[0]
        # fastai's GatherPredsCallback: one loss an item (a flattened loss is averaged per item).
        losses = per_item if per_item.numel() == n else per_item.reshape(n, -1).mean(1)
    if act is None:
        act = getattr(learn.loss_func, "activation", None)
    if act is not None:
        preds = act(preds)
    res: list[Any] = [preds, targs]
    if with_decoded:
        decodes = getattr(learn.loss_func, "decodes", None)
        res.append(decodes(preds) if decodes is not None else preds)
    if with_input:
        res.insert(0, inputs)
    if with_loss:
        res.append(losses)
    return tuple(res)

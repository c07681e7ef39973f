"""``summary(learn)``: Lightning's model summary plus the callbacks that run at each event.

fastai's ``learn.summary()`` shows the layers with their output shapes and parameter
counts, then the optimizer, the loss and the callbacks; this is the same on Lightning's
``ModelSummary`` of the Learner's module, with the callbacks listed per event in loop
order (as ``learn.show_training_loop()``) and the Lightning callbacks that run on the
Trainer beside them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities.model_summary.model_summary import ModelSummary

from .events import EVENT_NAMES
from .handler import is_loop_helper

if TYPE_CHECKING:
    from .protocol import LearnerState

__all__ = ["callbacks_per_event", "summary"]


def _check_depth(max_depth: object) -> int:
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
        raise ValueError(f"summary: `max_depth` must be an int >= -1 (-1: every layer), got {max_depth!r}")
    return max_depth


def callbacks_per_event(learn: LearnerState) -> dict[str, list[str]]:
    """Class names of the callbacks that run at each event, in loop order (events with none left out).

    Names are the user's classes (a fastai v1 or course-v3 callback shows as itself, not as
    the dialect wrapper that drives it); internal helpers are not listed.

    Example:
        >>> callbacks_per_event(learn)["after_batch"]
        ['TrainEvalCallback', 'Recorder']
    """
    handler = learn.cb_handler
    table: dict[str, list[str]] = {}
    for event in EVENT_NAMES:
        names = [
            type(getattr(cb, "wrapped", cb)).__name__ for cb in handler.subscribers(event) if not is_loop_helper(cb)
        ]
        if names:
            table[event] = names
    return table


def _example_input(learn: LearnerState) -> tuple[Any, ...] | None:
    """The inputs of the first validation batch, drawn without touching torch's global RNG."""
    dl = getattr(learn.dls, "valid_dl", None) or getattr(learn.dls, "train_dl", None)
    if dl is None:
        return None
    with torch.random.fork_rng(devices=[]):  # a DataLoader iterator draws a seed even unshuffled
        try:
            batch = next(iter(dl))
        except StopIteration:
            return None
    if isinstance(batch, (list, tuple)):
        return tuple(batch[: learn.n_inp])
    return (batch,)


@contextlib.contextmanager
def _example_on(module: Any, example: tuple[Any, ...] | None) -> Any:
    old = module.example_input_array
    module.example_input_array = example
    try:
        yield
    finally:
        module.example_input_array = old


def summary(learn: LearnerState, max_depth: int = 2, with_shapes: bool = True) -> str:
    """Lightning's model summary of ``learn.module`` and the callbacks per event, as text.

    Args:
        learn: the :class:`~bridge.Learner`.
        max_depth: layers shown (1: the model as one row, 2: its children, -1: every layer).
        with_shapes: run the first validation batch through the model (eval mode, no grad,
            torch's RNG untouched) to show input and output sizes, as fastai does.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from bridge import DataBunch, Learner
        >>> ds = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
        >>> learn = Learner(DataBunch.from_datasets(ds, ds, bs=4), nn.Linear(4, 2),
        ...                 loss_func=nn.CrossEntropyLoss(), logger=False)
        >>> text = summary(learn)
        >>> "10        Total params" in text and "after_batch" in text
        True
    """
    max_depth = _check_depth(max_depth)
    module = learn.module
    assert module is not None  # every Learner builds its LearnerModule
    example = _example_input(learn) if with_shapes else None
    with _example_on(module, example):
        model_summary = ModelSummary(module, max_depth=max_depth)
        table = str(model_summary)
    lines = [
        f"{type(learn).__name__} summary: {type(learn.model).__name__}",
        table,
        "",
        f"Optimizer: {getattr(learn.opt_func, '__name__', type(learn.opt_func).__name__)}"
        + (f" ({type(learn.opt).__name__})" if learn.opt is not None else ""),
        f"Loss function: {getattr(learn.loss_func, '__name__', type(learn.loss_func).__name__)}",
        "",
        "Callbacks per event (fastai-style, sorted by `order`):",
    ]
    per_event = callbacks_per_event(learn)
    width = max((len(e) for e in per_event), default=0)
    lines += [f"  {event:<{width}}  {', '.join(names)}" for event, names in per_event.items()]
    if not per_event:
        lines.append("  (none)")
    pl_cbs = [type(cb).__name__ for cb in learn._pl_cbs]
    if pl_cbs:
        lines += ["", "Lightning callbacks (run by the Trainer): " + ", ".join(pl_cbs)]
    return "\n".join(lines)

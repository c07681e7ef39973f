"""``test_dl``: a loader over new items, built like the validation one (fastai v2's ``dls.test_dl``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = ["items_dataset", "items_loader"]

_ACCEPTED = "a torch Dataset, a Tensor or numpy array (one item per row), a tuple of them (columns) or a list of items"


def _column(x: object, where: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    raise TypeError(f"{where}: `items` as a tuple must hold Tensors or numpy arrays (columns), got {type(x).__name__}")


def items_dataset(items: Any, where: str = "test_dl") -> Dataset[Any]:
    """``items`` as a map-style dataset: each element is one item (its inputs, then any targets).

    Example:
        >>> import torch
        >>> ds = items_dataset((torch.zeros(3, 2), torch.arange(3)))
        >>> len(ds), ds[2][1].item()
        (3, 2)
    """
    if isinstance(items, IterableDataset):
        raise TypeError(
            f"{where}: `items` must be a map-style dataset (indexable, with a length), got an IterableDataset"
        )
    if isinstance(items, (Tensor, np.ndarray)):
        x = _column(items, where)
        if x.ndim == 0:
            raise ValueError(f"{where}: `items` as a tensor needs one item per row, got a 0-d tensor")
        ds: Any = TensorDataset(x)
    elif isinstance(items, tuple):
        cols = [_column(c, where) for c in items]
        if not cols or any(c.ndim == 0 for c in cols):
            raise ValueError(
                f"{where}: `items` as a tuple needs columns with one item per row, got {len(cols)} column(s)"
            )
        lengths = {len(c) for c in cols}
        if len(lengths) > 1:
            raise ValueError(f"{where}: the columns in `items` must have the same length, got {[len(c) for c in cols]}")
        ds = TensorDataset(*cols)
    elif isinstance(items, (list, Dataset)) or (
        hasattr(items, "__getitem__") and hasattr(items, "__len__") and not isinstance(items, (str, bytes, dict))
    ):
        ds = items
    else:
        raise TypeError(f"{where}: `items` must be {_ACCEPTED}, got {type(items).__name__}")
    try:
        n = len(ds)
    except TypeError as exc:
        raise TypeError(f"{where}: `items` must have a length ({exc})") from exc
    if n == 0:
        raise ValueError(f"{where}: `items` is empty; it needs at least one item")
    result: Dataset[Any] = ds
    return result


def _check_parts(ds: Dataset[Any], n_inp: int, with_labels: bool, where: str) -> None:
    first = ds[0]
    parts = len(first) if isinstance(first, (tuple, list)) else 1
    if with_labels and parts <= n_inp:
        raise ValueError(
            f"{where}: with_labels=True needs items of the {n_inp} input(s) followed by targets, "
            f"got items of {parts} part(s); pass with_labels=False for inputs only"
        )
    if not with_labels and parts != n_inp:
        raise ValueError(
            f"{where}: with_labels=False takes items of the {n_inp} input(s) only (the data's n_inp), "
            f"got items of {parts} part(s); pass with_labels=True for items with targets"
        )


def items_loader(
    items: Any,
    like: DataLoader[Any] | None = None,
    n_inp: int = 1,
    with_labels: bool = False,
    bs: int | None = None,
    where: str = "test_dl",
) -> DataLoader[Any]:
    """An evaluation loader over ``items`` in order, with ``like``'s batch size, collate function and workers.

    ``items`` is a torch ``Dataset``, a Tensor or numpy array (one item per row), a tuple of
    them (columns: the inputs, then the targets with ``with_labels=True``) or a list of items.
    Items hold the ``n_inp`` inputs only, or (``with_labels=True``) the inputs then the targets.
    No shuffling, no dropped last batch: ``learn.get_preds(dl=...)`` returns one row per item,
    in order (under DDP too: every rank reads a disjoint share, gathered back in order).

    Example:
        >>> import torch
        >>> dl = items_loader(torch.randn(10, 3), bs=4)
        >>> [b[0].shape[0] for b in dl]
        [4, 4, 2]
    """
    if not isinstance(with_labels, bool):
        raise TypeError(f"{where}: `with_labels` must be a bool, got {with_labels!r}")
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise ValueError(f"{where}: `bs` must be an int >= 1 or None, got {bs!r}")
    ds = items_dataset(items, where)
    _check_parts(ds, n_inp, with_labels, where)
    from .loaders import EvalDataLoader

    if like is None:
        return EvalDataLoader(ds, batch_size=bs or 64, shuffle=False)
    workers = like.num_workers
    return EvalDataLoader(
        ds,
        batch_size=bs or like.batch_size or 64,
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        collate_fn=like.collate_fn,
        pin_memory=like.pin_memory,
        persistent_workers=workers > 0 and like.persistent_workers,
        timeout=like.timeout,
    )

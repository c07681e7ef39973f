"""``DataBunch``: a train and a valid ``DataLoader`` (optionally a test one) as a LightningDataModule."""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler, TensorDataset

from .loaders import EvalDataLoader, ResumableDataLoader

__all__ = ["DataBunch", "forward_exception", "unrepeated"]


def _check_loader(arg: str, dl: object, required: bool = True) -> DataLoader[Any] | None:
    if dl is None and not required:
        return None
    if not isinstance(dl, DataLoader):
        raise TypeError(
            f"DataBunch: `{arg}` must be a torch.utils.data.DataLoader, got {type(dl).__name__}; "
            "to start from datasets use DataBunch.from_datasets(train_ds, valid_ds, bs=...)"
        )
    ds = dl.dataset
    if isinstance(ds, Sized) and len(ds) == 0:
        raise ValueError(f"DataBunch: the dataset of `{arg}` is empty (len 0); it needs at least one item")
    return dl


def _check_dataset(arg: str, ds: object, required: bool = True) -> Dataset[Any] | None:
    if ds is None and not required:
        return None
    if not isinstance(ds, Dataset) and not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise TypeError(
            f"DataBunch.from_datasets: `{arg}` must be a torch Dataset (or have __getitem__ and __len__), "
            f"got {type(ds).__name__}"
        )
    if isinstance(ds, (str, bytes)):
        raise TypeError(f"DataBunch.from_datasets: `{arg}` must be a torch Dataset, got {type(ds).__name__} {ds!r}")
    try:
        n = len(ds)
    except TypeError as exc:  # e.g. a 0-d tensor
        raise TypeError(
            f"DataBunch.from_datasets: `{arg}` must be a torch Dataset with a length, got {type(ds).__name__} ({exc})"
        ) from exc
    if n == 0:
        raise ValueError(f"DataBunch.from_datasets: `{arg}` is empty (len 0); it needs at least one item")
    return ds  # type: ignore[return-value]


def _infer_c(ds: object) -> int | None:
    # Only where it is cheap: an explicit attribute, or integer targets of a TensorDataset.
    for attr in ("c", "n_classes", "num_classes"):
        value = getattr(ds, attr, None)
        if isinstance(value, int):
            return value
    classes = getattr(ds, "classes", None)
    if classes is not None and hasattr(classes, "__len__"):
        return len(classes)
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        y = ds.tensors[-1]
        if y.ndim == 1 and not y.is_floating_point() and not y.is_complex() and y.numel():
            return int(y.max().item()) + 1
    return None


class DataBunch(pl.LightningDataModule):
    """A training and a validation ``DataLoader``, usable by ``Learner`` or any ``Trainer``.

    Args:
        train_dl: the training ``DataLoader``.
        valid_dl: the validation ``DataLoader``.
        c: number of classes (or outputs); inferred from integer targets when cheap. Third, as
            in the article's (course-v3's) ``DataBunch(train_dl, valid_dl, c)``.
        test_dl: an optional test ``DataLoader`` (keyword only; then ``dls.test``, fastai v1's
            ``data.test_dl``; ``dls.test_dl(items)`` has fastai v2's meaning).
        n_inp: how many leading elements of a batch are inputs, the rest are targets (keyword only).

    Under DDP, Lightning swaps in a ``DistributedSampler`` for these loaders.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.randn(100, 4), torch.randint(0, 3, (100,))
        >>> data = DataBunch.from_datasets(TensorDataset(x[:80], y[:80]), TensorDataset(x[80:], y[80:]), bs=16)
        >>> data.c, len(data.train_dl), data.one_batch()[0].shape
        (3, 5, torch.Size([16, 4]))
    """

    def __init__(
        self,
        train_dl: DataLoader[Any],
        valid_dl: DataLoader[Any],
        c: int | None = None,
        *,
        test_dl: DataLoader[Any] | None = None,
        n_inp: int = 1,
    ) -> None:
        super().__init__()
        self.train_dl: DataLoader[Any] = _check_loader("train_dl", train_dl)  # type: ignore[assignment]
        self.valid_dl: DataLoader[Any] = _check_loader("valid_dl", valid_dl)  # type: ignore[assignment]
        self.test = _check_loader("test_dl", test_dl, required=False)
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ValueError(f"DataBunch: `c` must be a positive int or None, got {c!r}")
        if not isinstance(n_inp, int) or isinstance(n_inp, bool) or n_inp < 1:
            raise ValueError(f"DataBunch: `n_inp` must be an int >= 1, got {n_inp!r}")
        self.c = c if c is not None else _infer_c(self.train_dl.dataset)
        self.n_inp = n_inp

    @classmethod
    def from_datasets(  # type: ignore[override]  # fastai's names and arguments, not Lightning's
        cls,
        train_ds: Dataset[Any],
        valid_ds: Dataset[Any],
        test_ds: Dataset[Any] | None = None,
        bs: int = 64,
        val_bs: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
        c: int | None = None,
        n_inp: int = 1,
    ) -> DataBunch:
        """Build the loaders from datasets (fastai v1's ``DataBunch.create``).

        The training loader shuffles (``shuffle``); validation and test loaders keep
        dataset order. ``val_bs`` defaults to ``bs``.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> ds = TensorDataset(torch.randn(10, 2), torch.randint(0, 2, (10,)))
            >>> DataBunch.from_datasets(ds, ds, bs=4).valid_dl.batch_size
            4
        """
        _check_dataset("train_ds", train_ds)
        _check_dataset("valid_ds", valid_ds)
        _check_dataset("test_ds", test_ds, required=False)
        for arg, value in (("bs", bs), ("val_bs", bs if val_bs is None else val_bs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DataBunch.from_datasets: `{arg}` must be an int >= 1, got {value!r}")
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"DataBunch.from_datasets: `num_workers` must be an int >= 0, got {num_workers!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(
                "DataBunch.from_datasets: `collate_fn` must be callable as collate_fn(list of items) or None, "
                f"got {collate_fn!r}"
            )
        for arg, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("pin_memory", pin_memory)):
            if not isinstance(flag, bool):
                raise TypeError(f"DataBunch.from_datasets: `{arg}` must be a bool, got {flag!r}")
        vbs = bs if val_bs is None else val_bs
        common: dict[str, Any] = dict(
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )
        train_dl = ResumableDataLoader(train_ds, batch_size=bs, shuffle=shuffle, drop_last=drop_last, **common)
        valid_dl = EvalDataLoader(valid_ds, batch_size=vbs, shuffle=False, **common)
        test_dl = EvalDataLoader(test_ds, batch_size=vbs, shuffle=False, **common) if test_ds is not None else None
        return cls(train_dl, valid_dl, c if c is not None else _infer_c(train_ds), test_dl=test_dl, n_inp=n_inp)

    # fastai names --------------------------------------------------------------------
    @property
    def train_ds(self) -> Dataset[Any]:
        """The training dataset."""
        return self.train_dl.dataset

    @property
    def valid_ds(self) -> Dataset[Any]:
        """The validation dataset."""
        return self.valid_dl.dataset

    @property
    def train(self) -> DataLoader[Any]:
        """fastai v2 alias of ``train_dl``."""
        return self.train_dl

    @property
    def valid(self) -> DataLoader[Any]:
        """fastai v2 alias of ``valid_dl``."""
        return self.valid_dl

    @property
    def device(self) -> torch.device:
        """Where batches go: the Trainer's device during a fit, else the CPU (fastai's ``dls.device``).

        Example:
            >>> learn.dls.device
            device(type='cpu')
        """
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def __getitem__(self, i: int) -> DataLoader[Any]:
        """``dls[0]`` is the training loader, ``dls[1]`` the validation one (fastai v2)."""
        loaders = [self.train_dl, self.valid_dl] + ([self.test] if self.test is not None else [])
        return loaders[i]

    def test_dl(self, items: Any, with_labels: bool = False, bs: int | None = None) -> DataLoader[Any]:
        """fastai v2's ``test_dl``: a loader over ``items`` built like the validation one (see ``bridge.items``)."""
        from .items import items_loader

        return items_loader(items, self.valid_dl, self.n_inp, with_labels, bs)

    def one_batch(self) -> Any:
        """The first batch of the training loader.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> ds = TensorDataset(torch.zeros(6, 2), torch.zeros(6))
            >>> len(DataBunch.from_datasets(ds, ds, bs=3).one_batch())
            2
        """
        return next(iter(self.train_dl))

    # LightningDataModule -------------------------------------------------------------
    #: ``on_exception`` below tells a LearnerModule being fitted on this data (after_fit runs).
    forwards_exceptions_to_learner = True

    def on_exception(self, exception: BaseException) -> None:
        forward_exception(self, exception)

    def train_dataloader(self) -> DataLoader[Any]:
        return self.train_dl

    def val_dataloader(self) -> DataLoader[Any]:
        return unrepeated(self.valid_dl, getattr(self, "trainer", None))

    def test_dataloader(self) -> DataLoader[Any]:
        if self.test is None:
            raise ValueError("DataBunch: no test_dl was given")
        return self.test

    def __repr__(self) -> str:
        return (
            f"DataBunch(train: {len(self.train_dl.dataset)} items, "  # type: ignore[arg-type]
            f"valid: {len(self.valid_dl.dataset)} items, c={self.c})"  # type: ignore[arg-type]
        )


def unrepeated(dl: DataLoader[Any], trainer: Any) -> DataLoader[Any]:
    """Under DDP, an evaluation loader that gives rank ``r`` items ``r, r+W, r+2W, ...`` once each.

    Lightning's default ``DistributedSampler`` pads the last shard by repeating items, so
    validation losses and metrics would count some samples twice. Only loaders that read
    the dataset in order are changed; anything else is left to Lightning.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> dl = DataLoader(TensorDataset(torch.arange(5.0)), batch_size=2)
        >>> unrepeated(dl, trainer=None) is dl
        True
    """
    world = getattr(trainer, "world_size", 1) if trainer is not None else 1
    if world <= 1 or not isinstance(dl.sampler, SequentialSampler) or isinstance(dl.dataset, IterableDataset):
        return dl
    sampler = UnrepeatedDistributedSampler(dl.dataset, num_replicas=world, rank=trainer.global_rank, shuffle=False)
    cls = EvalDataLoader if isinstance(dl, EvalDataLoader) else DataLoader
    return cls(
        dl.dataset,
        batch_size=dl.batch_size,
        sampler=sampler,
        num_workers=dl.num_workers,
        collate_fn=dl.collate_fn,
        pin_memory=dl.pin_memory,
        drop_last=False,
        persistent_workers=dl.persistent_workers,
        generator=dl.generator,
    )


def forward_exception(datamodule: pl.LightningDataModule, exception: BaseException) -> None:
    """Lightning's failure hook of a data module: run after_fit of the LearnerModule being fitted.

    Replaces a per-fit Lightning callback whose hooks would cost something on every batch.

    Example:
        >>> learn.dls.trainer is None  # no fit running: nothing to forward to
        True
        >>> forward_exception(learn.dls, ValueError("stop"))
    """
    trainer = getattr(datamodule, "trainer", None)
    module = getattr(trainer, "lightning_module", None) if trainer is not None else None
    handler = getattr(module, "_on_fit_exception", None)
    if callable(handler):
        handler(exception)

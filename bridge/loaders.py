"""``ResumableDataLoader``: a ``DataLoader`` that a Lightning checkpoint can stop and resume mid-epoch.

Lightning saves the ``state_dict()`` of every training loader that has one with the loop
state, and gives it back through ``load_state_dict`` before the resumed epoch iterates.
This loader's state is small: how many batches of the current pass it has served, and
the global torch RNG state at the moment its sampler drew the pass's order. On resume
it draws the same order again (in a forked RNG, so the global RNG is not disturbed),
skips the served batches' *indices* without loading them, and serves the next unseen
batch. Samplers that only use the global RNG when their pass starts (``shuffle=True``'s
``RandomSampler``) and deterministic ones (``DistributedSampler``, sequential) replay
exactly; a sampler that keeps drawing from the global RNG during the pass does not.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _DatasetKind

__all__ = ["EvalDataLoader", "ResumableDataLoader"]


class ResumableDataLoader(DataLoader):  # type: ignore[type-arg]
    """Drop-in ``DataLoader`` whose position inside an epoch is kept in Lightning checkpoints.

    ``DataBunch.from_datasets`` builds its training loader with it; pass one yourself to
    ``DataBunch(train_dl=...)`` to get the same. With a plain ``DataLoader``, a fit resumed
    from a mid-epoch checkpoint runs the rest of that epoch on the first batches of a new
    pass (Lightning warns).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> dl = ResumableDataLoader(TensorDataset(torch.arange(6)), batch_size=2)
        >>> it = iter(dl); first = next(it)
        >>> state = dl.state_dict(); state["served"]
        1
        >>> dl.load_state_dict(state)
        >>> [b[0].tolist() for b in dl]  # continues with the next unseen batch
        [[2, 3], [4, 5]]
    """

    # No __init__ of its own: Lightning re-creates training loaders from DataLoader's
    # signature (to add a DistributedSampler), and the state below is created lazily.

    @property
    def _index_sampler(self) -> Any:
        base = self.batch_sampler if self._auto_collation else self.sampler
        if self._dataset_kind != _DatasetKind.Map:
            return base
        return _Pass(self, base)

    def __iter__(self) -> Any:
        state = self.__dict__
        state["_served"] = 0
        resume = state.get("_resume")
        if resume is None:
            if not (self.persistent_workers and self.num_workers > 0 and self._iterator is not None):
                state["_rng_iter"] = torch.get_rng_state()  # a new iterator draws its workers' base seed now
            return _Count(self, super().__iter__())
        # Creating the iterator draws the workers' base seed from the global RNG: draw the
        # interrupted pass's seed again, and leave the global RNG as the checkpoint restored it.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(resume["rng_iter"])
            it = super().__iter__()
        state["_rng_iter"] = resume["rng_iter"]
        return _Count(self, it)

    def state_dict(self) -> dict[str, Any]:
        """Batches served in the current pass and the RNG states its iterator and order were drawn with."""
        now = torch.get_rng_state()
        rng, rng_iter = self.__dict__.get("_rng"), self.__dict__.get("_rng_iter")
        return {
            "served": int(self.__dict__.get("_served", 0)),
            "rng": rng if rng is not None else now,
            "rng_iter": rng_iter if rng_iter is not None else now,
        }

    def forget_resume(self) -> None:
        """Drop a position restored by :meth:`load_state_dict` that no pass has used yet.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> dl = ResumableDataLoader(TensorDataset(torch.arange(6)), batch_size=2)
            >>> dl.load_state_dict({"served": 1, "rng": torch.get_rng_state(), "rng_iter": torch.get_rng_state()})
            >>> dl.forget_resume(); len(list(dl))
            3
        """
        self.__dict__.pop("_resume", None)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass continue where the saved one stopped (a finished pass starts anew)."""
        served = int(state["served"])
        if self._dataset_kind != _DatasetKind.Map:
            if served:
                warnings.warn(
                    "ResumableDataLoader: an IterableDataset cannot be resumed mid-epoch; the epoch restarts",
                    stacklevel=2,
                )
            return
        if 0 < served < len(self):
            self.__dict__["_resume"] = {"served": served, "rng": state["rng"], "rng_iter": state["rng_iter"]}


class EvalDataLoader(DataLoader):  # type: ignore[type-arg]
    """An evaluation ``DataLoader`` whose passes leave the global torch RNG alone.

    Creating a ``DataLoader`` iterator draws its workers' base seed from the global RNG;
    with persistent workers only the first pass does. A run resumed from a checkpoint
    makes that first draw again, so without this the global RNG (and every later
    shuffle) would differ from the run never stopped. ``DataBunch.from_datasets`` builds
    its validation and test loaders with it.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> dl = EvalDataLoader(TensorDataset(torch.arange(4)), batch_size=2)
        >>> state = torch.get_rng_state(); batches = list(dl)
        >>> torch.equal(state, torch.get_rng_state())
        True
    """

    def __iter__(self) -> Any:
        with torch.random.fork_rng(devices=[]):
            return super().__iter__()


class _Count:
    """Counts the batches handed out, so that the state says exactly how many were served."""

    def __init__(self, loader: ResumableDataLoader, it: Any) -> None:
        self.loader, self.it = loader, it

    def __iter__(self) -> _Count:
        return self

    def __next__(self) -> Any:
        batch = next(self.it)
        self.loader.__dict__["_served"] += 1
        return batch

    def __len__(self) -> int:
        return len(self.it)

    def __getattr__(self, name: str) -> Any:  # the DataLoader iterator's own attributes
        return getattr(self.it, name)


class _Pass:
    """One pass of the sampler: records the RNG state its order is drawn with, or replays a saved one.

    A replay draws the saved order in a forked RNG (the global RNG is left as the
    checkpoint restored it) and skips the served batches' indices without loading them.
    """

    def __init__(self, loader: ResumableDataLoader, base: Any) -> None:
        self.loader, self.base = loader, base

    def __iter__(self) -> Iterator[Any]:
        state = self.loader.__dict__
        resume = state.pop("_resume", None)
        if resume is None:
            state["_rng"] = torch.get_rng_state()
            yield from self.base
            return
        rng, served = resume["rng"], int(resume["served"])
        state["_rng"], state["_served"] = rng, served
        it = iter(self.base)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(rng)
            for _ in range(served):
                next(it)
            first = next(it, _END)
        if first is not _END:
            yield first
            yield from it

    def __len__(self) -> int:
        return len(self.base)


_END = object()

"""``InferenceLearner``: what ``load_learner`` returns — predict, get_preds and test_dl with no training data."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .decode import Decoding, LossMethods, decode_output, item_batch
from .items import items_loader

try:
    from typing import Self
except ImportError:  # Python 3.10
    from typing_extensions import Self

__all__ = ["ExportedModel", "InferenceLearner"]


class ExportedModel(nn.Module):
    """A ``torch.export`` program as a module; its eval-mode behaviour was fixed at export.

    ``train()``/``eval()`` only set this wrapper's flag (an exported program refuses them).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> program = torch.export.export(nn.Linear(2, 1), (torch.ones(3, 2),)).module()
        >>> m = ExportedModel(program).eval()
        >>> m(torch.ones(3, 2)).shape, m.training
        (torch.Size([3, 1]), False)
    """

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, *xb: Tensor) -> Any:
        return self.program(*xb)

    def train(self, mode: bool = True) -> Self:
        self.training = mode
        return self


class _NoData:
    """``learn.dls`` of a loaded learner: ``test_dl`` and the class names, no datasets."""

    def __init__(self, learn: InferenceLearner) -> None:
        self._learn = learn

    @property
    def vocab(self) -> list[Any] | None:
        return self._learn.vocab

    @property
    def n_inp(self) -> int:
        return self._learn.n_inp

    @property
    def c(self) -> int | None:
        return len(self._learn.vocab) if self._learn.vocab is not None else None

    def test_dl(self, items: Any, with_labels: bool = False, bs: int | None = None) -> Any:
        return self._learn.test_dl(items, with_labels=with_labels, bs=bs)

    def __getitem__(self, i: int) -> Any:
        raise IndexError(
            f"a loaded learner has no data (dls[{i}]); build a loader with learn.test_dl(items) "
            "(with_labels=True for items with targets) and pass it as dl=..."
        )


class InferenceLearner:
    """A trained model with its decoding and class names: ``predict``, ``get_preds(dl=...)``, ``test_dl``.

    Args:
        model: the model (an :class:`ExportedModel` after loading a ``.pt2`` export).
        n_inp: how many leading elements of an item or batch are inputs.
        vocab: class names (or None).
        decoding: the output activation and decoding (see :mod:`bridge.decode`), or None.
        bs: batch size of ``test_dl`` (the validation loader's at export).
        inputs: per input, ``{"shape": [...], "dtype": "float32"}`` without the batch dimension;
            inputs are checked against it with a clear error (None: not checked).
        loss_func: the loss function where known (a pickled export), else None.
        path: folder of the file it was loaded from.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> learn = InferenceLearner(nn.Linear(3, 2), vocab=["no", "yes"], decoding=Decoding("softmax", "argmax"))
        >>> preds, targs = learn.get_preds(dl=learn.test_dl(torch.randn(5, 3)))
        >>> preds.shape, targs.numel(), learn.predict(torch.zeros(3))[0] in ("no", "yes")
        (torch.Size([5, 2]), 0, True)
    """

    def __init__(
        self,
        model: nn.Module,
        n_inp: int = 1,
        vocab: Sequence[Any] | None = None,
        decoding: Decoding | LossMethods | None = None,
        bs: int = 64,
        inputs: Sequence[dict[str, Any]] | None = None,
        loss_func: Callable[..., Tensor] | None = None,
        path: str | os.PathLike[str] = ".",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"InferenceLearner: `model` must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(n_inp, bool) or not isinstance(n_inp, int) or n_inp < 1:
            raise ValueError(f"InferenceLearner: `n_inp` must be an int >= 1, got {n_inp!r}")
        self.model = model
        self.n_inp = n_inp
        self.vocab = list(vocab) if vocab is not None else None
        self.decoding = decoding
        self.bs = bs
        self.inputs = [dict(spec) for spec in inputs] if inputs is not None else None
        self.loss_func = loss_func
        self.path = Path(path)
        self.dls = _NoData(self)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (or buffers) are."""
        for t in (*self.model.parameters(), *self.model.buffers()):
            return t.device
        return torch.device("cpu")

    def test_dl(self, items: Any, with_labels: bool = False, bs: int | None = None) -> Any:
        """A loader over new items (see :func:`bridge.items.items_loader`), batch size ``bs`` or the export's."""
        return items_loader(items, None, self.n_inp, with_labels, bs or self.bs)

    def _check(self, xb: Sequence[Any], where: str) -> None:
        if self.inputs is None:
            return
        if len(xb) != len(self.inputs):
            raise ValueError(f"{where}: the exported model takes {len(self.inputs)} input(s), got {len(xb)}")
        for i, (x, spec) in enumerate(zip(xb, self.inputs, strict=True)):
            if not isinstance(x, Tensor):
                raise TypeError(f"{where}: input {i} must be a Tensor, got {type(x).__name__}")
            shape, dtype = list(x.shape[1:]), str(x.dtype).removeprefix("torch.")
            if shape != list(spec["shape"]) or dtype != spec["dtype"]:
                raise ValueError(
                    f"{where}: input {i} holds items of shape {tuple(shape)} and dtype {dtype}; the exported "
                    f"model takes items of shape {tuple(spec['shape'])} and dtype {spec['dtype']}"
                )

    def _forward(self, xb: Sequence[Tensor], where: str) -> Tensor:
        self._check(xb, where)
        out = self.model(*xb)
        if not isinstance(out, Tensor):
            raise TypeError(f"{where}: the model returned {type(out).__name__}, not a Tensor")
        return out

    def get_preds(
        self, ds_idx: int = 1, dl: Any = None, act: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Raw predictions (``act`` applied if given) and targets over ``dl``, in order, as ``Learner.get_preds``.

        A loaded learner has no data: ``dl`` is required (e.g. ``learn.test_dl(items)``); the
        targets are empty when the items have none.
        """
        if dl is None:
            raise ValueError(
                f"get_preds: a loaded learner has no data (ds_idx={ds_idx}); pass dl=learn.test_dl(items) "
                "(with_labels=True for items with targets)"
            )
        preds: list[Tensor] = []
        targs: list[Tensor] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for batch in dl:
                    parts = list(batch) if isinstance(batch, (list, tuple)) else [batch]
                    xb = [x.to(self.device) if isinstance(x, Tensor) else x for x in parts[: self.n_inp]]
                    preds.append(self._forward(xb, "get_preds").detach().cpu())
                    if len(parts) > self.n_inp and isinstance(parts[self.n_inp], Tensor):
                        targs.append(parts[self.n_inp].detach().cpu())
        finally:
            self.model.train(was_training)
        out = torch.cat(preds) if preds else torch.empty(0)
        return (act(out) if act is not None else out), (torch.cat(targs) if targs else torch.empty(0))

    def predict(self, item: Any) -> Any:
        """fastai's ``(decoded, decoded_index, probabilities)`` for one item; raw output without a decoding.

        As ``Learner.predict`` (see :func:`bridge.decode.predict`).
        """
        xb = item_batch(item, self.n_inp, self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self._forward(xb, "predict")
        finally:
            self.model.train(was_training)
        return decode_output(out, self.decoding, self.vocab)

    def __repr__(self) -> str:
        kind = self.decoding.to_dict() if isinstance(self.decoding, Decoding) else self.decoding
        return f"InferenceLearner({type(self.model).__name__}, n_inp={self.n_inp}, vocab={self.vocab}, decoding={kind})"

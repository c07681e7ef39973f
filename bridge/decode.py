"""A loss function's output activation and decoding (fastai's ``loss_func.activation`` / ``decodes``).

``predict(item)`` and ``ClassificationInterpretation`` turn raw model outputs into
probabilities and labels the way the loss function implies: cross entropy -> softmax, then
argmax over the class axis; BCE with logits -> sigmoid, then ``> thresh``; a regression loss
(MSE, L1, ...) -> the raw output. fastai's flat losses and torch's plain losses are recognised
by type and described by a :class:`Decoding`, plain data that ``learn.export()`` writes into the
exported file; any other loss with callable ``activation`` and ``decodes`` methods is used as is
(in the process, or in a pickled export).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "Decoding",
    "LossMethods",
    "decode_output",
    "decoding_for",
    "decoding_of",
    "item_batch",
    "learner_vocab",
    "predict",
    "vocab_of",
]

_ACTIVATIONS = ("softmax", "sigmoid", "none")
_DECODES = ("argmax", "threshold", "none")


@dataclass(frozen=True)
class Decoding:
    """How raw outputs become probabilities (``activation``) and labels (``decodes``); plain data.

    Args:
        activation: ``"softmax"`` (over ``axis``), ``"sigmoid"`` or ``"none"``.
        decodes: ``"argmax"`` (over ``axis``), ``"threshold"`` (``probs > thresh``) or ``"none"``.
        axis: the class axis of a batch of outputs.
        thresh: the threshold of ``"threshold"``.

    Example:
        >>> import torch
        >>> d = Decoding("softmax", "argmax", axis=1)
        >>> probs = d.activate(torch.tensor([[0.0, 2.0, 1.0]]))
        >>> d.decode(probs).tolist(), round(float(probs.sum()), 6)
        ([1], 1.0)
        >>> Decoding.from_dict(d.to_dict()) == d
        True
    """

    activation: str
    decodes: str
    axis: int = -1
    thresh: float = 0.5

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"Decoding: `activation` must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.decodes not in _DECODES:
            raise ValueError(f"Decoding: `decodes` must be one of {_DECODES}, got {self.decodes!r}")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise TypeError(f"Decoding: `axis` must be an int, got {self.axis!r}")
        thresh = self.thresh
        if isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not math.isfinite(thresh):
            raise TypeError(f"Decoding: `thresh` must be a finite number, got {thresh!r}")

    def activate(self, x: Tensor) -> Tensor:
        """Probabilities from a batch of raw outputs."""
        if self.activation == "softmax":
            return x.softmax(dim=self.axis)
        if self.activation == "sigmoid":
            return torch.sigmoid(x)
        return x

    def decode(self, probs: Tensor) -> Tensor:
        """Labels (class indices, or a boolean mask) from a batch of probabilities."""
        if self.decodes == "argmax":
            return probs.argmax(dim=self.axis)
        if self.decodes == "threshold":
            return probs > self.thresh
        return probs

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written into an exported file."""
        return {"activation": self.activation, "decodes": self.decodes, "axis": self.axis, "thresh": self.thresh}

    @classmethod
    def from_dict(cls, spec: object) -> Decoding:
        """Read :meth:`to_dict`'s form back; anything else is a ``ValueError`` naming what is wrong."""
        keys = {"activation", "decodes", "axis", "thresh"}
        if not isinstance(spec, dict) or set(spec) != keys:
            raise ValueError(f"Decoding.from_dict: expected a dict with keys {sorted(keys)}, got {spec!r}")
        try:
            return cls(spec["activation"], spec["decodes"], spec["axis"], spec["thresh"])
        except TypeError as exc:
            raise ValueError(f"Decoding.from_dict: {exc}") from exc


@dataclass(frozen=True)
class LossMethods:
    """A loss function's own ``activation`` and ``decodes`` methods (not plain data: not exportable).

    Example:
        >>> import torch
        >>> m = LossMethods(torch.sigmoid, lambda p: p > 0.9)
        >>> m.decode(m.activate(torch.tensor([0.0, 5.0]))).tolist()
        [False, True]
    """

    activation: Callable[[Tensor], Tensor]
    decodes: Callable[[Tensor], Tensor]

    def activate(self, x: Tensor) -> Tensor:
        """Probabilities from a batch of raw outputs."""
        return self.activation(x)

    def decode(self, probs: Tensor) -> Tensor:
        """Labels from a batch of probabilities."""
        return self.decodes(probs)


# fastai's losses (fastai.losses), by class name: fastai need not be installed.
_FASTAI = {
    "CrossEntropyLossFlat": ("softmax", "argmax"),
    "LabelSmoothingCrossEntropyFlat": ("softmax", "argmax"),
    "LabelSmoothingCrossEntropy": ("softmax", "argmax"),
    "FocalLossFlat": ("softmax", "argmax"),
    "BCEWithLogitsLossFlat": ("sigmoid", "threshold"),
    "BCELossFlat": ("none", "threshold"),
}
_REGRESSION_TYPES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_REGRESSION_NAMES = frozenset({"MSELossFlat", "L1LossFlat"})
_FUNCTIONS: dict[Any, Decoding | None] = {
    F.cross_entropy: Decoding("softmax", "argmax", axis=1),
    F.binary_cross_entropy_with_logits: Decoding("sigmoid", "threshold"),
    F.mse_loss: None,
    F.l1_loss: None,
}


def decoding_for(loss_func: Any) -> Decoding | LossMethods | None:
    """The decoding a loss function implies; None for a regression loss or one with no activation.

    Example:
        >>> from torch import nn
        >>> decoding_for(nn.CrossEntropyLoss())
        Decoding(activation='softmax', decodes='argmax', axis=1, thresh=0.5)
        >>> decoding_for(nn.BCEWithLogitsLoss()).activation, decoding_for(nn.MSELoss()) is None
        ('sigmoid', True)
    """
    if isinstance(loss_func, nn.CrossEntropyLoss):
        return Decoding("softmax", "argmax", axis=1)
    if isinstance(loss_func, nn.BCEWithLogitsLoss):
        return Decoding("sigmoid", "threshold")
    if isinstance(loss_func, _REGRESSION_TYPES):
        return None
    with contextlib.suppress(TypeError):  # an unhashable callable
        if loss_func in _FUNCTIONS:
            return _FUNCTIONS[loss_func]
    name = type(loss_func).__name__
    if name in _FASTAI:
        kind, decoder = _FASTAI[name]
        axis = getattr(loss_func, "axis", -1)
        thresh = getattr(loss_func, "thresh", 0.5)
        return Decoding(kind, decoder, axis=axis if isinstance(axis, int) else -1, thresh=float(thresh))
    if name in _REGRESSION_NAMES:
        return None
    act, dec = getattr(loss_func, "activation", None), getattr(loss_func, "decodes", None)
    if callable(act) and callable(dec):
        return LossMethods(act, dec)
    return None


def decoding_of(learn: Any) -> Decoding | LossMethods | None:
    """A learner's decoding: its own ``decoding`` attribute (a loaded learner), else its loss function's.

    Example:
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> decoding_of(SimpleNamespace(loss_func=nn.CrossEntropyLoss())).decodes
        'argmax'
    """
    own = getattr(learn, "__dict__", {})  # not hasattr: a Learner's attribute lookup falls through to its model
    if "decoding" in own:
        decoding: Decoding | LossMethods | None = own["decoding"]
        return decoding
    return decoding_for(getattr(learn, "loss_func", None))


def _plain(values: Sequence[Any]) -> list[Any]:
    return [v if isinstance(v, (str, int, float, bool)) else str(v) for v in values]


def vocab_of(data: Any) -> list[Any] | None:
    """Class names: ``data.vocab``, else the training (or validation) dataset's ``vocab`` or ``classes``.

    Example:
        >>> from types import SimpleNamespace
        >>> vocab_of(SimpleNamespace(train_ds=SimpleNamespace(classes=("cat", "dog"))))
        ['cat', 'dog']
        >>> vocab_of(SimpleNamespace()) is None
        True
    """
    holders = [data, getattr(data, "train_ds", None), getattr(data, "valid_ds", None)]
    for holder in holders:
        for attr in ("vocab", "classes"):
            value = getattr(holder, attr, None) if holder is not None else None
            if isinstance(value, (list, tuple)) and value:
                return _plain(value)
    return None


def learner_vocab(learn: Any) -> list[Any] | None:
    """A learner's class names: its own ``vocab`` (a loaded learner), else :func:`vocab_of` its data.

    Example:
        >>> from types import SimpleNamespace
        >>> learner_vocab(SimpleNamespace(vocab=["a", "b"])), learner_vocab(SimpleNamespace(dls=None))
        (['a', 'b'], None)
    """
    own = getattr(learn, "__dict__", {})
    if "vocab" in own:
        vocab: list[Any] | None = own["vocab"]
        return vocab
    return vocab_of(getattr(learn, "dls", None))


def _label(decoded: Tensor, vocab: list[Any] | None, threshold: bool) -> Any:
    """fastai's decoded answer for one item: a class name (or index), or the names over the threshold."""
    if threshold:
        if decoded.ndim == 0:
            return vocab[int(decoded)] if vocab is not None and len(vocab) == 2 else bool(decoded)
        hits = [int(i) for i in decoded.flatten().nonzero().flatten()]
        names = vocab is not None and decoded.ndim == 1 and len(vocab) == decoded.numel()
        return [vocab[i] for i in hits] if names and vocab is not None else hits
    if decoded.ndim == 0 and not decoded.is_floating_point():
        i = int(decoded)
        return vocab[i] if vocab is not None and 0 <= i < len(vocab) else i
    return decoded


def item_batch(item: Any, n_inp: int, device: torch.device) -> tuple[Tensor, ...]:
    """One item as a batch of one: ``n_inp`` inputs, each with a new leading dimension.

    ``item`` is one input (tensor or array-like), a tuple of ``n_inp`` inputs, or a dataset
    element whose first ``n_inp`` entries are the inputs (the targets after them are ignored).

    Example:
        >>> import torch
        >>> [x.shape for x in item_batch((torch.zeros(3), torch.tensor(1)), 1, torch.device("cpu"))]
        [torch.Size([1, 3])]
    """
    if isinstance(item, (tuple, list)) and len(item) >= n_inp and all(isinstance(x, Tensor) for x in item[:n_inp]):
        parts = list(item[:n_inp])
    elif n_inp == 1:
        parts = [item]
    else:
        raise TypeError(
            f"predict: `item` must be a tuple of {n_inp} inputs (the data's n_inp), got {type(item).__name__}"
        )
    try:
        return tuple(torch.as_tensor(x).to(device).unsqueeze(0) for x in parts)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"predict: `item` must be a tensor or array-like, got {type(item).__name__} ({exc})") from exc


def decode_output(out: Tensor, decoding: Decoding | LossMethods | None, vocab: list[Any] | None) -> Any:
    """``(decoded, decoded_index, probabilities)`` of the first item of a batch of outputs; raw without a decoding.

    Example:
        >>> import torch
        >>> decode_output(torch.tensor([[0.0, 3.0]]), Decoding("softmax", "argmax"), ["cat", "dog"])[0]
        'dog'
        >>> decode_output(torch.tensor([[0.5]]), None, None).tolist()
        [0.5]
    """
    if decoding is None:
        return out[0]
    probs = decoding.activate(out)
    decoded = decoding.decode(probs)[0]
    threshold = (isinstance(decoding, Decoding) and decoding.decodes == "threshold") or decoded.dtype == torch.bool
    return _label(decoded, vocab, threshold), decoded, probs[0]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict(learn: Any, item: Any) -> Any:
    """fastai's ``predict``: ``(decoded, decoded_index, probabilities)`` for one item; raw output without a decoding.

    The item (no batch dimension; a tuple of inputs when ``n_inp > 1``, or a dataset element
    whose first ``n_inp`` entries are the inputs) goes through the model in eval mode without
    grad. With a decoding (the loss function's, see :func:`decoding_for`): ``decoded`` is the
    class name from the data's ``vocab``/``classes`` (the index without them; the list of names
    over the threshold for BCE), ``decoded_index`` the argmax index (or boolean mask) and
    ``probabilities`` the activated output. Without one (e.g. MSE): the model's raw output.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> model = nn.Linear(2, 3)
        >>> learn = SimpleNamespace(model=model, loss_func=nn.CrossEntropyLoss(), n_inp=1,
        ...                         device=torch.device("cpu"), dls=SimpleNamespace(vocab=["a", "b", "c"]))
        >>> name, index, probs = predict(learn, torch.ones(2))
        >>> name == "abc"[int(index)], round(float(probs.sum()), 6)
        (True, 1.0)
    """
    model: nn.Module = learn.model
    xb = item_batch(item, learn.n_inp, learn.device)
    with _eval_mode(model), torch.no_grad():
        out = model(*xb)
    return decode_output(out, decoding_of(learn), learner_vocab(learn))

"""``ClassificationInterpretation``: what a classifier gets wrong (fastai's, with torchmetrics' confusion matrix).

Built from ``learn.get_preds`` (dataset order, every item once under DDP), so every rank holds
the same, complete result. Plots are matplotlib ``Figure`` objects made without pyplot: they
need no display and leave no global figure state (``fig.savefig("cm.png")``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.utils.data import SequentialSampler
from torchmetrics.functional.classification import multiclass_confusion_matrix

from .decode import Decoding, decoding_of, learner_vocab

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ClassificationInterpretation"]


def _raw(t: Tensor) -> Tensor:
    return t


def _item_losses(loss_func: Any, raw: Tensor, targs: Tensor) -> Tensor | None:
    """One loss per item: the loss function with ``reduction="none"`` where it has one, else item by item."""
    if loss_func is None:
        return None
    if hasattr(loss_func, "reduction"):
        fn = copy.deepcopy(loss_func)
        try:
            fn.reduction = "none"
            if isinstance(fn, nn.Module):
                fn = fn.cpu()
            out = fn(raw, targs)
        except (AttributeError, TypeError, ValueError, RuntimeError):
            out = None
        if isinstance(out, Tensor) and out.shape == (len(raw),):
            return out.detach().float()
    with torch.no_grad():
        return torch.stack(
            [torch.as_tensor(loss_func(raw[i : i + 1], targs[i : i + 1])).float().reshape(()) for i in range(len(raw))]
        )


def _input_of(dl: Any, idx: int, n_inp: int) -> Any:
    dataset = getattr(dl, "dataset", None)
    try:
        item = dataset[idx]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
    return item[0] if isinstance(item, (tuple, list)) and n_inp >= 1 else item


def _show(ax: Axes, x: Any) -> None:
    """An image (H x W, or C x H x W with 1, 3 or 4 channels) as a picture; a vector as bars."""
    ax.set_xticks([])
    ax.set_yticks([])
    if not isinstance(x, Tensor):
        return
    t = x.detach().cpu().float()
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        ax.imshow(t.numpy(), cmap="gray")
    elif t.ndim == 3 and t.shape[0] in (3, 4):
        lo, hi = float(t.min()), float(t.max())
        ax.imshow(((t - lo) / (hi - lo if hi > lo else 1.0)).permute(1, 2, 0).numpy())
    elif t.ndim == 1:
        ax.bar(range(len(t)), t.numpy())


class ClassificationInterpretation:
    """Confusion matrix, most confused pairs and top losses of a single-label classifier.

    Build it with :meth:`from_learner`. ``preds`` are probabilities (the loss function's
    activation, softmax by default), ``targs`` the targets, ``decoded`` the predicted classes
    and ``losses`` one loss per item (None when the learner has no loss function, e.g. loaded
    from a ``.pt2`` export); ``vocab`` names the classes (indices without class names).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from bridge import DataBunch, Learner
        >>> ds = TensorDataset(torch.randn(12, 3), torch.arange(12) % 3)
        >>> learn = Learner(DataBunch.from_datasets(ds, ds, bs=4), nn.Linear(3, 3), nn.CrossEntropyLoss(),
        ...                 logger=False, path=__import__("tempfile").mkdtemp())
        >>> interp = ClassificationInterpretation.from_learner(learn)
        >>> int(interp.confusion_matrix().sum()), len(interp.top_losses(2)[0])
        (12, 2)
    """

    def __init__(
        self,
        dl: Any,
        preds: Tensor,
        targs: Tensor,
        decoded: Tensor,
        losses: Tensor | None,
        vocab: list[Any],
        n_inp: int = 1,
    ) -> None:
        self.dl, self.preds, self.targs, self.decoded, self.losses = dl, preds, targs, decoded, losses
        self.vocab, self.n_inp = vocab, n_inp

    @classmethod
    def from_learner(
        cls, learn: Any, ds_idx: int = 1, dl: Any = None, act: Callable[[Tensor], Tensor] | None = None
    ) -> ClassificationInterpretation:
        """Interpret ``learn``'s predictions on ``dls[ds_idx]`` (the validation set) or on ``dl``.

        ``dl`` may be e.g. ``learn.test_dl((x, y), with_labels=True)``; ``act`` replaces the
        loss function's activation.
        """
        decoding = decoding_of(learn)
        if isinstance(decoding, Decoding) and decoding.decodes == "threshold":
            raise ValueError("ClassificationInterpretation: the loss function is multi-label (sigmoid + threshold)")
        if dl is None:
            dl = learn.dls[ds_idx]
            if not isinstance(getattr(dl, "sampler", None), SequentialSampler) or getattr(dl, "drop_last", False):
                dl = learn.dls.test_dl(dl.dataset, with_labels=True)  # every item, in order (fastai: shuffle=False)
        raw, targs = learn.get_preds(dl=dl, act=_raw)  # explicit: the raw outputs, whatever get_preds' default
        if targs.numel() == 0:
            raise ValueError(
                "ClassificationInterpretation: the loader has no targets; "
                "build it with test_dl(items, with_labels=True)"
            )
        if raw.ndim != 2 or targs.ndim != 1 or targs.is_floating_point() or len(targs) != len(raw):
            raise ValueError(
                "ClassificationInterpretation: needs one score per class for each item (N x C predictions) and "
                f"integer class targets (N), got predictions {tuple(raw.shape)} and targets {tuple(targs.shape)} "
                f"{targs.dtype}"
            )
        if act is None:
            act = decoding.activate if decoding is not None else (lambda t: t.softmax(dim=1))
        preds = act(raw)
        n_classes = raw.shape[1]
        vocab = learner_vocab(learn)
        names = vocab if vocab is not None and len(vocab) == n_classes else list(range(n_classes))
        losses = _item_losses(getattr(learn, "loss_func", None), raw, targs)
        return cls(dl, preds, targs, preds.argmax(dim=1), losses, names, getattr(learn, "n_inp", 1))

    def confusion_matrix(self) -> npt.NDArray[np.int64]:
        """Counts of (actual class, predicted class): rows are actual classes, columns predicted ones."""
        cm = multiclass_confusion_matrix(self.decoded, self.targs, num_classes=len(self.vocab))
        return cm.cpu().numpy().astype(np.int64)

    def most_confused(self, min_val: int = 1) -> list[tuple[Any, Any, int]]:
        """``(actual, predicted, count)`` of the off-diagonal cells with ``count >= min_val``, most frequent first."""
        if isinstance(min_val, bool) or not isinstance(min_val, int):
            raise TypeError(f"most_confused: `min_val` must be an int, got {min_val!r}")
        cm = self.confusion_matrix()
        np.fill_diagonal(cm, 0)
        cells = [(self.vocab[i], self.vocab[j], int(cm[i, j])) for i, j in zip(*np.nonzero(cm >= min_val), strict=True)]
        return sorted(cells, key=lambda c: c[2], reverse=True)

    def top_losses(self, k: int | None = None, largest: bool = True) -> tuple[Tensor, Tensor]:
        """The ``k`` largest (``largest=False``: smallest) per-item losses and their item indices (all without k)."""
        if self.losses is None:
            raise ValueError(
                "top_losses: no per-item losses: the learner has no loss function (a .pt2 export keeps none; "
                "interpret the trained Learner, or load an export(pickle=True) file)"
            )
        n = len(self.losses)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n):
            raise ValueError(f"top_losses: `k` must be an int in [1, {n}] or None, got {k!r}")
        values, indices = self.losses.topk(n if k is None else k, largest=largest)
        return values, indices

    def plot_confusion_matrix(
        self,
        normalize: bool = False,
        title: str = "Confusion matrix",
        cmap: str = "Blues",
        norm_dec: int = 2,
        figsize: tuple[float, float] | None = None,
    ) -> Figure:
        """The confusion matrix as a picture with each cell's count (or row fraction with ``normalize``)."""
        from matplotlib.figure import Figure

        cm = self.confusion_matrix().astype(np.float64)
        if normalize:
            cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1.0)
        n = len(self.vocab)
        fig = Figure(figsize=figsize or (max(4.0, 0.5 * n + 2), max(4.0, 0.5 * n + 2)))
        ax = fig.add_subplot()
        ax.imshow(cm, interpolation="nearest", cmap=cmap)
        ax.set_title(title)
        ticks = list(range(n))
        ax.set_xticks(ticks, [str(v) for v in self.vocab], rotation=90)
        ax.set_yticks(ticks, [str(v) for v in self.vocab])
        thresh = cm.max() / 2.0
        for i in range(n):
            for j in range(n):
                text = f"{cm[i, j]:.{norm_dec}f}" if normalize else f"{int(cm[i, j])}"
                color = "white" if cm[i, j] > thresh else "black"
                ax.text(j, i, text, horizontalalignment="center", verticalalignment="center", color=color)
        ax.set_ylabel("Actual")
        ax.set_xlabel("Predicted")
        ax.grid(False)
        fig.tight_layout()
        return fig

    def plot_top_losses(self, k: int, largest: bool = True, figsize: tuple[float, float] | None = None) -> Figure:
        """The ``k`` items with the largest losses, each titled ``predicted/actual / loss / probability``."""
        from matplotlib.figure import Figure

        values, indices = self.top_losses(k, largest)
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        fig = Figure(figsize=figsize or (3.0 * cols, 3.0 * rows + 0.6))
        axes = fig.subplots(rows, cols, squeeze=False).flatten()
        for ax, loss, idx in zip(axes, values.tolist(), indices.tolist(), strict=False):
            pred = int(self.decoded[idx])
            _show(ax, _input_of(self.dl, idx, self.n_inp))
            prob = float(self.preds[idx, pred])
            ax.set_title(f"{self.vocab[pred]}/{self.vocab[int(self.targs[idx])]} / {loss:.2f} / {prob:.2f}")
        for ax in axes[k:]:
            fig.delaxes(ax)
        fig.suptitle("Prediction/Actual/Loss/Probability")
        fig.tight_layout()
        return fig

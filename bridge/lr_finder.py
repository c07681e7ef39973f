"""fastai's learning-rate finder: ``LRFinder``, ``lr_find``, the suggestion functions and the plot.

``lr_find`` trains for ``num_it`` batches with a learning rate growing exponentially from
``start_lr`` to ``end_lr``, records the smoothed loss, stops when it diverges, puts the
model and optimizer back exactly as they were, and suggests learning rates from the curve.
Under DDP the losses are averaged over ranks (so every rank stops at the same batch and
suggests the same rate).
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .distributed import is_global_zero
from .exceptions import CancelFitException, CancelValidException
from .schedule import ParamScheduler, SchedExp

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .protocol import LearnerState

__all__ = ["LRFinder", "SuggestionMethod", "lr_find", "minimum", "plot_lr_find", "slide", "steep", "valley"]

Suggestion = tuple[float, tuple[float, float]]


# -- suggestion functions: f(lrs, losses, num_it) -> (lr, (lr, loss)) ------------------------------------
def _floats(x: Sequence[float] | Tensor | np.ndarray) -> list[float]:
    if isinstance(x, Tensor):
        return [float(v) for v in x.detach().cpu().reshape(-1).tolist()]
    return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


def _check_curve(lrs: Any, losses: Any, where: str, min_len: int = 2) -> tuple[list[float], list[float]]:
    lr_l, loss_l = _floats(lrs), _floats(losses)
    if len(lr_l) != len(loss_l):
        raise ValueError(f"{where}: `lrs` and `losses` differ in length ({len(lr_l)} vs {len(loss_l)})")
    if len(loss_l) < min_len:
        raise ValueError(f"{where}: needs at least {min_len} points of the curve, got {len(loss_l)}; raise num_it")
    return lr_l, loss_l


def _loss_at(lrs: list[float], losses: list[float], lr: float) -> float:
    """The loss at the recorded lr closest to ``lr`` (first one on ties)."""
    i = min(range(len(lrs)), key=lambda k: abs(lrs[k] - lr))
    return losses[i]


def valley(lrs: Sequence[float] | Tensor, losses: Sequence[float] | Tensor, num_it: int) -> Suggestion:
    """fastai's default suggestion: a rate about halfway into the longest valley of the loss curve.

    With ``lds[i]`` the length of the longest decreasing subsequence ending at ``i`` and
    ``[start, end]`` the longest one, the index is ``start + int(d/3) + int(d/6)`` with
    ``d = end - start``.

    Example:
        >>> lrs = [10 ** (-7 + k / 10) for k in range(60)]
        >>> losses = [2.0 - k / 30 for k in range(40)] + [0.7 + k / 5 for k in range(20)]
        >>> lr, (lr_pt, loss_pt) = valley(lrs, losses, 60)
        >>> lr == lr_pt
        True
    """
    lr_l, loss_l = _check_curve(lrs, losses, "valley", 1)
    n = len(loss_l)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if loss_l[i] < loss_l[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return lr_l[idx], (lr_l[idx], loss_l[idx])


def slide(
    lrs: Sequence[float] | Tensor,
    losses: Sequence[float] | Tensor,
    num_it: int,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> Suggestion:
    """fastai's interval slide rule: walk left from the end while the loss gradient changes by more than ``thresh``.

    Example:
        >>> lrs = [10 ** (-7 + k / 10) for k in range(60)]
        >>> losses = [2.0 - k / 30 for k in range(40)] + [0.7 + (k / 5) ** 2 for k in range(20)]
        >>> slide(lrs, losses, 60)[0] < lrs[-1]
        True
    """
    lr_l, loss_l = _check_curve(lrs, losses, "slide", lr_diff + 1)
    grad = np.gradient(np.asarray(loss_l))
    r_idx, l_idx = -1, -1 - lr_diff
    local_min_lr = lr_l[l_idx]
    while l_idx >= -len(loss_l) and abs(grad[r_idx] - grad[l_idx]) > thresh:
        local_min_lr = lr_l[l_idx]
        r_idx -= 1
        l_idx -= 1
    suggestion = float(local_min_lr) * adjust_value
    loss = float(np.interp(np.log10(suggestion), np.log10(lr_l), loss_l))
    return suggestion, (suggestion, loss)


def minimum(lrs: Sequence[float] | Tensor, losses: Sequence[float] | Tensor, num_it: int) -> Suggestion:
    """fastai's ``minimum``: one tenth of the rate at the lowest loss (the point marks the minimum itself).

    Example:
        >>> minimum([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], 3)
        (0.001, (0.01, 0.5))
    """
    lr_l, loss_l = _check_curve(lrs, losses, "minimum", 1)
    lr_min = lr_l[int(np.argmin(loss_l))]
    return lr_min / 10, (lr_min, _loss_at(lr_l, loss_l, lr_min))


def steep(lrs: Sequence[float] | Tensor, losses: Sequence[float] | Tensor, num_it: int) -> Suggestion:
    """fastai's ``steep``: the rate where the loss falls fastest against ``log(lr)``.

    Example:
        >>> steep([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.3, 0.2], 4)
        (0.01, (0.01, 0.9))
    """
    lr_l, loss_l = _check_curve(lrs, losses, "steep", 2)
    grads = [(loss_l[k + 1] - loss_l[k]) / (math.log(lr_l[k + 1]) - math.log(lr_l[k])) for k in range(len(lr_l) - 1)]
    lr_steep = lr_l[int(np.argmin(grads))]
    return lr_steep, (lr_steep, _loss_at(lr_l, loss_l, lr_steep))


class SuggestionMethod:
    """fastai's names for the suggestion functions (tab completion): ``SuggestionMethod.Valley``...

    Example:
        >>> SuggestionMethod.Valley is valley
        True
    """

    Valley = staticmethod(valley)
    Slide = staticmethod(slide)
    Minimum = staticmethod(minimum)
    Steep = staticmethod(steep)


# -- the callback ------------------------------------------------------------------------------------------
def _check_lr_arg(v: object, name: str) -> list[float]:
    vals: list[Any] = list(v) if isinstance(v, (list, tuple)) else [v]
    out: list[float] = []
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            raise ValueError(f"LRFinder: `{name}` must be a positive finite number (or a list of them), got {v!r}")
        out.append(float(x))
    return out


class LRFinder(ParamScheduler):
    """Training with an exponentially growing learning rate (fastai's ``LRFinder``).

    Sets ``lr = start_lr * (end_lr/start_lr) ** (train_iter/num_it)`` before each batch
    (``start_lr``/``end_lr`` may be lists, one per param group), skips validation, stops
    after ``num_it`` batches or, with ``stop_div``, when the smoothed loss (averaged over
    ranks) exceeds 4x its best or is NaN, then restores the model and optimizer state it
    found at ``before_fit``. ``lrs`` and ``losses`` keep the curve (also in ``state_dict``).
    Usually run through :func:`lr_find`.

    Example:
        >>> with learn.no_logging():
        ...     learn.fit(1, cbs=LRFinder(start_lr=1e-6, end_lr=1, num_it=6))  # runs the epochs it needs
        >>> [f"{lr:.0e}" for lr in learn.recorder.lrs]  # start_lr * (end_lr / start_lr) ** (i / num_it)
        ['1e-06', '1e-05', '1e-04', '1e-03', '1e-02', '1e-01']
    """

    def __init__(
        self,
        start_lr: float | Sequence[float] = 1e-7,
        end_lr: float | Sequence[float] = 10,
        num_it: int = 100,
        stop_div: bool = True,
    ) -> None:
        starts, ends = _check_lr_arg(start_lr, "start_lr"), _check_lr_arg(end_lr, "end_lr")
        if isinstance(start_lr, (list, tuple)) != isinstance(end_lr, (list, tuple)) or len(starts) != len(ends):
            raise ValueError(
                f"LRFinder: `start_lr` and `end_lr` must both be numbers or lists of equal length, "
                f"got {start_lr!r} and {end_lr!r}"
            )
        if any(s >= e for s, e in zip(starts, ends)):
            raise ValueError(f"LRFinder: `start_lr` must be below `end_lr`, got {start_lr!r} and {end_lr!r}")
        if isinstance(num_it, bool) or not isinstance(num_it, int) or num_it < 2:
            raise ValueError(f"LRFinder: `num_it` must be an int >= 2, got {num_it!r}")
        if not isinstance(stop_div, bool):
            raise TypeError(f"LRFinder: `stop_div` must be a bool, got {stop_div!r}")
        scheds = (
            [SchedExp(s, e) for s, e in zip(starts, ends)]
            if isinstance(start_lr, (list, tuple))
            else SchedExp(starts[0], ends[0])
        )
        super().__init__({"lr": scheds})
        # fastai runs at least 6 iterations (the suggestions drop the last 5 points).
        self.num_it = max(num_it, 6)
        self.stop_div = bool(stop_div)
        self.best_loss = math.inf
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._saved: tuple[dict[str, Tensor], dict[str, Any]] | None = None

    def before_fit(self) -> None:
        learn = self.learn
        if getattr(learn, "recorder", None) is None:
            raise RuntimeError("LRFinder: needs the Recorder (its smoothed loss); create the Learner with default_cbs")
        assert learn.opt is not None
        self._saved = (
            {k: v.detach().clone() for k, v in learn.model.state_dict().items()},
            copy.deepcopy(learn.opt.state_dict()),
        )
        try:
            super().before_fit()
        except ValueError as exc:
            raise ValueError(
                f"LRFinder: `start_lr`/`end_lr` must be numbers, or lists with one value per param group: {exc}"
            ) from exc
        self.best_loss = math.inf
        self.lrs, self.losses = [], []
        # Enough epochs for num_it batches of *this* process (fewer per epoch under DDP).
        n_epoch = math.ceil(self.num_it / max(learn.n_iter_per_epoch(), 1))
        if learn.trainer is not None:
            learn.trainer.fit_loop.max_epochs = n_epoch
        learn.n_epoch = n_epoch

    def before_batch(self) -> None:
        self._update_val(self.learn.train_iter / self.num_it)

    def after_batch(self) -> None:
        super().after_batch()
        learn = self.learn
        # This rank's smoothed loss; under DDP the bridge agrees a stop raised on any rank, and
        # the recorded curve (Recorder.losses) is the mean over ranks.
        loss = float(learn.smooth_loss)
        if loss < self.best_loss:
            self.best_loss = loss
        if self.stop_div and (loss > 4 * self.best_loss or math.isnan(loss)):
            raise CancelFitException()
        if learn.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self) -> None:
        if self._in_fit:
            raise CancelValidException()

    def after_fit(self) -> None:
        learn = self.learn
        if learn.opt is not None:
            learn.opt.zero_grad()
        if self._saved is not None:
            model_state, opt_state = self._saved
            learn.model.load_state_dict(model_state)
            if learn.opt is not None:
                learn.opt.load_state_dict(opt_state)
            self._saved = None
        rec = getattr(learn, "recorder", None)
        if self._in_fit and rec is not None:
            self.lrs, self.losses = [float(x) for x in rec.lrs], [float(x) for x in rec.losses]
        super().after_fit()

    def state_dict(self) -> dict[str, Any]:
        """The curve and recorded values (for shipping results back from spawned ranks)."""
        return {**super().state_dict(), "lrs": list(self.lrs), "losses": list(self.losses), "best_loss": self.best_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.lrs, self.losses = list(state["lrs"]), list(state["losses"])
        self.best_loss = float(state["best_loss"])


# -- plot -----------------------------------------------------------------------------------------------
def plot_lr_find(
    recorder: Any,
    skip_end: int = 5,
    return_fig: bool = True,
    suggestions: Sequence[tuple[float, float]] | None = None,
    nms: Sequence[str] | None = None,
    **kwargs: Any,
) -> Figure:
    """fastai's ``Recorder.plot_lr_find``: loss against learning rate (log scale), suggestions marked.

    Plots ``recorder.lrs`` / ``recorder.losses`` without the last ``skip_end`` points;
    ``suggestions`` are ``(lr, loss)`` points named by ``nms``. Returns the matplotlib
    Figure (works without a display).

    Example:
        >>> with learn.no_logging():
        ...     learn.fit(1, cbs=LRFinder(num_it=6))
        >>> fig = plot_lr_find(learn.recorder, skip_end=1)
        >>> fig.axes[0].get_xscale(), len(fig.axes[0].lines[0].get_xdata())  # 6 points, the last skipped
        ('log', 5)
    """
    import matplotlib.pyplot as plt

    lrs = list(recorder.lrs) if skip_end == 0 else list(recorder.lrs)[:-skip_end]
    losses = list(recorder.losses) if skip_end == 0 else list(recorder.losses)[:-skip_end]
    n = min(len(lrs), len(losses))
    fig, ax = plt.subplots(1, 1, **kwargs)
    ax.plot(lrs[:n], losses[:n])
    ax.set_ylabel("Loss")
    ax.set_xlabel("Learning Rate")
    ax.set_xscale("log")
    if suggestions:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]
        names = list(nms) if nms is not None else [f"suggestion {i}" for i in range(len(suggestions))]
        for (val, loss), nm, color in zip(suggestions, names, colors):
            ax.plot(val, loss, "o", label=nm, color=color)
        ax.legend(loc="best")
    figure: Figure = fig
    return figure


# -- lr_find ----------------------------------------------------------------------------------------------
def _func_name(f: Callable[..., Any]) -> str:
    return f.func.__name__ if isinstance(f, functools.partial) else getattr(f, "__name__", type(f).__name__)


def lr_find(
    learn: LearnerState,
    start_lr: float = 1e-7,
    end_lr: float = 10,
    num_it: int = 100,
    stop_div: bool = True,
    show_plot: bool = True,
    suggest_funcs: Sequence[Callable[..., Suggestion]] | Callable[..., Suggestion] | None = (valley,),
    **trainer_options: Any,
) -> Any:
    """fastai's ``Learner.lr_find``: run :class:`LRFinder`, return ``SuggestedLRs``.

    ``SuggestedLRs`` is a namedtuple with one field per suggestion function (``valley`` by
    default; None means ``(valley,)``, an empty tuple means no suggestion and returns None).
    The functions get the curve without its first ``num_it // 10`` and last 5 points,
    cut at the first NaN. The learner is left as it was (weights, optimizer, callbacks); the
    recorder keeps the curve for ``learn.recorder.plot_lr_find()``. ``show_plot`` draws it
    on global rank 0. ``trainer_options`` go to ``fit`` (e.g. ``devices=2, strategy="ddp"``).

    Example:
        >>> res = learn.lr_find(num_it=8, show_plot=False, suggest_funcs=(minimum, steep))
        >>> res._fields, all(1e-7 <= lr <= 10 for lr in res)
        (('minimum', 'steep'), True)
    """
    if suggest_funcs is None:
        suggest_funcs = (valley,)
    funcs: list[Callable[..., Any]] = (
        list(suggest_funcs) if isinstance(suggest_funcs, (list, tuple)) else [suggest_funcs]  # type: ignore[list-item]
    )
    if not all(callable(f) for f in funcs):
        raise TypeError(f"lr_find: `suggest_funcs` must be functions f(lrs, losses, num_it), got {suggest_funcs!r}")
    cb = LRFinder(start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div)
    if getattr(learn, "recorder", None) is None:
        raise RuntimeError("lr_find: needs learn.recorder (create the Learner with default_cbs=True)")
    n_epoch = max(math.ceil(cb.num_it / max(len(learn.dls.train_dl), 1)), 1)
    opts = {"logger": False, "enable_checkpointing": False, **trainer_options}
    # fit() sets the lr first: keep the hyper-parameters the optimizer had before lr_find too.
    hypers = None
    if learn.opt is not None:
        hypers = [{k: v for k, v in g.items() if k != "params"} for g in learn.opt.param_groups]
    with learn.no_logging():
        learn.fit(n_epoch, cbs=cb, **opts)
    if hypers is not None and learn.opt is not None and len(hypers) == len(learn.opt.param_groups):
        for group, h in zip(learn.opt.param_groups, hypers):
            group.update(h)
    rec: Any = learn.recorder  # type: ignore[attr-defined]
    if not rec.losses and cb.losses:  # results shipped back from spawned ranks
        rec.lrs, rec.losses = list(cb.lrs), list(cb.losses)
    if not funcs:
        if show_plot and is_global_zero():
            plot_lr_find(rec)
        return None
    lrs_t = torch.tensor(cb.lrs[num_it // 10 : -5], dtype=torch.float32)
    losses_t = torch.tensor(cb.losses[num_it // 10 : -5], dtype=torch.float32)
    nan = torch.nonzero(torch.isnan(losses_t.view(-1)))
    if len(nan) > 0:
        cut = int(nan.min())
        lrs_t, losses_t = lrs_t[:cut], losses_t[:cut]
    names = [_func_name(f) for f in funcs]
    SuggestedLRs = collections.namedtuple("SuggestedLRs", names, rename=True)  # type: ignore[misc]
    if len(losses_t) < 2:
        warnings.warn(
            f"lr_find: only {len(losses_t)} usable points of the loss curve (it stopped after "
            f"{len(cb.losses)} iterations); no suggestion. Try a lower end_lr or a higher num_it",
            stacklevel=2,
        )
        return SuggestedLRs(*([math.nan] * len(funcs)))
    results = [f(lrs_t, losses_t, num_it) for f in funcs]
    lrs_out = [float(r[0]) for r in results]
    points = [(float(r[1][0]), float(r[1][1])) for r in results]
    if show_plot and is_global_zero():
        plot_lr_find(rec, suggestions=points, nms=names)
    return SuggestedLRs(*lrs_out)

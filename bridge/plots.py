"""fastai's Recorder plots: the learning curve and the hyper-parameter schedule.

Each returns a matplotlib ``Figure`` and works without a display (call
``fig.savefig("loss.png")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_loss", "plot_sched"]


def plot_loss(recorder: Any, skip_start: int = 5, with_valid: bool = True, log: bool = False) -> Figure:
    """The smoothed training loss per step (from ``skip_start``), and the validation loss per epoch.

    Example:
        >>> learn.fit(2)  # doctest: +ELLIPSIS
        epoch ...
        >>> fig = plot_loss(learn.recorder, skip_start=0)
        >>> [len(line.get_xdata()) for line in fig.axes[0].lines]  # 4 training steps, 2 epochs
        [4, 2]
    """
    if skip_start < 0:
        raise ValueError(f"plot_loss: `skip_start` must be >= 0, got {skip_start!r}")
    import matplotlib.pyplot as plt  # falls back to the Agg backend without a display

    fig, ax = plt.subplots(1, 1)
    steps = list(range(skip_start, len(recorder.losses)))
    plot = ax.loglog if log else ax.plot
    plot(steps, recorder.losses[skip_start:], label="train")
    if with_valid and recorder.values:
        col = recorder.metric_names.index("valid_loss") - 1
        points = [(it, row[col]) for it, row in zip(recorder.iters, recorder.values, strict=False) if it >= skip_start]
        if points:
            plot([p[0] for p in points], [p[1] for p in points], label="valid")
        ax.legend()
    ax.set_xlabel("steps")
    ax.set_ylabel("loss")
    ax.set_title("learning curve")
    return fig


def plot_sched(recorder: Any, keys: list[str] | None = None) -> Figure:
    """Each scheduled hyper-parameter per training step (``recorder.hps``; ``lr`` if none).

    Example:
        >>> learn.fit(1)  # doctest: +ELLIPSIS
        epoch ...
        >>> fig = plot_sched(learn.recorder)
        >>> len(fig.axes), list(fig.axes[0].lines[0].get_ydata()) == learn.recorder.lrs
        (1, True)
    """
    hps: dict[str, list[float]] = dict(getattr(recorder, "hps", None) or {"lr": list(recorder.lrs)})
    names = list(hps) if keys is None else list(keys)
    missing = [k for k in names if k not in hps]
    if missing:
        raise KeyError(f"plot_sched: no schedule recorded for {missing}; recorded: {sorted(hps)}")
    import matplotlib.pyplot as plt

    rows, cols = (len(names) + 1) // 2, min(2, len(names))
    fig, axs = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    flat = list(axs.flatten())
    for name, ax in zip(names, flat, strict=False):
        ax.plot([float(v) for v in hps[name]])
        ax.set_ylabel(name)
        ax.set_xlabel("steps")
    for ax in flat[len(names) :]:
        ax.set_visible(False)
    return fig

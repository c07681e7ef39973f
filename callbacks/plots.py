"""The Recorder's plots (re-exported from :mod:`bridge.plots`).

Example:
    >>> from callbacks.plots import plot_loss
    >>> callable(plot_loss)
    True
"""

from bridge.plots import plot_loss, plot_sched

__all__ = ["plot_loss", "plot_sched"]

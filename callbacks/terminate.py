"""``TerminateOnNaNCallback``: stop the fit at the first non-finite loss, on every rank at once."""

from __future__ import annotations

import torch

from bridge.callback import Callback
from bridge.exceptions import CancelFitException

__all__ = ["TerminateOnNaNCallback"]


class TerminateOnNaNCallback(Callback):
    """Raise ``CancelFitException`` when the loss is NaN or infinite (fastai's callback).

    Runs early (``order = -9``, as fastai) so the Recorder never records the bad loss.
    A training batch is checked at ``before_step`` (after backward, before the optimizer
    step), so the non-finite gradients are never applied: the weights, the best model of
    a ``SaveModelCallback`` and any checkpoint written afterwards stay the last good ones.
    A validation batch is checked at ``after_batch``. ``after_cancel_fit`` / ``after_fit``
    run as usual and the epoch / iteration of the bad loss is printed and kept in
    ``stopped_at``.

    Cost: reading the loss back is one device sync per batch (fastai pays it too). Under
    DDP a NaN on one rank stops every rank at the same batch: the bridge agrees every
    cancel across ranks before the optimizer step, so this callback needs no collective.

    Example:
        >>> cb = TerminateOnNaNCallback()
        >>> _ = torch.nn.init.constant_(learn.model.weight, float("nan"))
        >>> with learn.no_logging():
        ...     learn.fit(10, cbs=cb)  # stops at the first batch
        >>> cb.stopped_at  # (epoch, iteration) of the first NaN loss
        (0, 0)
    """

    order = -9

    def __init__(self) -> None:
        self.stopped_at: tuple[int, int] | None = None

    def before_fit(self) -> None:
        self.stopped_at = None

    def _check(self) -> None:
        learn = self.learn
        loss = learn.loss
        if not isinstance(loss, torch.Tensor):
            return
        bad = not bool(torch.isfinite(loss.detach()).all())
        if bad:
            if learn.training and learn.opt is not None:
                learn.opt.zero_grad()  # the step is skipped: drop the non-finite grads too
            self.stopped_at = (int(learn.epoch), int(learn.iter))
            phase = "training" if learn.training else "validation"
            learn.print(f"Epoch/Iteration {learn.epoch}/{learn.iter} ({phase}): non-finite loss, terminating training")
            raise CancelFitException()

    def before_step(self) -> None:
        self._check()

    def after_batch(self) -> None:
        if not self.learn.training:
            self._check()

"""fastai's gradient tools: ``GradientClip`` and ``GradientAccumulation``."""

from __future__ import annotations

from torch import Tensor, nn

from bridge.callback import Callback
from bridge.exceptions import CancelBatchException
from bridge.metrics import find_bs

__all__ = ["GradientAccumulation", "GradientClip"]


class GradientClip(Callback):
    """Clip the norm of the gradients at ``before_step`` (fastai's ``GradientClip``).

    ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type)``. The bridge
    fires ``before_step`` after the GradScaler's ``unscale_``, so mixed precision clips the
    true gradients; under DDP they are already averaged, so every rank clips alike. Under FSDP2
    (sharded DTensor gradients) the norm is the global one, over every rank's shard, as
    ``torch.nn.utils.get_total_norm`` + ``full_tensor()``. ``total_norm`` keeps the last norm
    (before clipping), a tensor.

    Example:
        >>> GradientClip(max_norm=0.5).max_norm
        0.5
    """

    order = 11  # fastai: MixedPrecision.order + 1, after GradientAccumulation (clip only what is stepped)

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(f"GradientClip: `max_norm` must be a number > 0, got {max_norm!r}")
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
            raise ValueError(f"GradientClip: `norm_type` must be a number > 0 (or math.inf), got {norm_type!r}")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.total_norm: Tensor | None = None

    def before_step(self) -> None:
        params = [p for p in self.learn.model.parameters() if p.grad is not None]
        if not params:
            return
        norm = nn.utils.get_total_norm([p.grad for p in params], self.norm_type)
        full = getattr(norm, "full_tensor", None)  # a DTensor norm (sharded grads) holds this rank's part
        if full is not None:
            norm = full()
        self.total_norm = norm
        nn.utils.clip_grads_with_norm_(params, self.max_norm, norm)


class GradientAccumulation(Callback):
    """Step the optimizer once every ``n_acc`` samples (fastai's ``GradientAccumulation``).

    ``n_acc`` counts samples, not batches. Each batch's ``loss_grad`` is divided by
    ``n_acc / bs``, so the accumulated gradient equals the gradient of one batch of
    ``n_acc`` samples (for a mean loss); batches before that raise ``CancelBatchException``
    at ``before_step`` (no step, no zero_grad). Under mixed precision the bridge rescales the
    kept gradients after the cancelled step. Under DDP each rank counts its own samples;
    ``learn.skip_grad_sync`` is True on accumulation-only batches so that the bridge can skip
    the gradient all-reduce there (DDP ``no_sync``).

    Example:
        >>> GradientAccumulation(n_acc=64).n_acc
        64
        >>> with learn.no_logging():  # bs 16, 2 batches an epoch: one step every 2 batches
        ...     learn.fit(1, cbs=GradientAccumulation(n_acc=32))
        >>> int(learn.opt.state[learn.model.weight]["step"])
        1
    """

    order = 6  # fastai: MixedPrecision.order - 4
    run_valid = False

    def __init__(self, n_acc: int = 32) -> None:
        if isinstance(n_acc, bool) or not isinstance(n_acc, int) or n_acc < 1:
            raise ValueError(f"GradientAccumulation: `n_acc` must be an int >= 1 (a number of samples), got {n_acc!r}")
        self.n_acc = n_acc
        self.count = 0

    def before_fit(self) -> None:
        self.count = 0
        learn = self.learn
        if learn.stage == "fit" and learn.opt is not None:
            learn.opt.zero_grad()  # a previous fit may have left an incomplete accumulation

    def after_loss(self) -> None:
        learn = self.learn
        bs = find_bs(learn.yb)
        learn.loss_grad = learn.loss_grad / (self.n_acc / bs)
        learn.skip_grad_sync = self.count + bs < self.n_acc

    def before_step(self) -> None:
        learn = self.learn
        self.count += find_bs(learn.yb)
        if self.count < self.n_acc:
            raise CancelBatchException()  # skip step and zero_grad
        self.count = 0

    def after_batch(self) -> None:
        self.learn.skip_grad_sync = False

    def after_fit(self) -> None:
        self.learn.skip_grad_sync = False

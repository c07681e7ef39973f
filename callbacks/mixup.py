"""``MixUp`` and ``CutMix``: fastai's data-mixing callbacks, reproducible and DDP-aware.

Both shuffle the batch against itself and blend each sample with a partner. For integer
class targets the *loss* is mixed: while training, the learner's ``loss_func`` is
replaced by :meth:`MixHandler.lf`, which computes the original loss per sample against
both targets and blends them with ``lam`` before reducing it as the original would. For
float (one-hot, soft) targets the targets themselves are blended. Validation always sees
clean data and the original loss.

Unlike fastai's (which draw from torch's global RNG), the draws come from a CPU
``torch.Generator`` the callback owns, seeded from ``torch.initial_seed()`` (or ``seed``)
and the global rank, so each DDP rank mixes its shard differently, the global RNG stream
(data shuffling, dropout) is untouched, and the generator's state goes into Lightning
checkpoints: a resumed run mixes exactly as the uninterrupted one would.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bridge.callback import Callback
from bridge.distributed import global_rank

__all__ = ["CutMix", "MixHandler", "MixUp", "reduce_loss"]

_REDUCTIONS = ("mean", "sum", "none", "batchmean")
#: Added per rank to the base seed so ranks draw different streams (rank 0 uses the base seed).
_RANK_STRIDE = 1_000_003


def reduce_loss(loss: Tensor, reduction: str = "mean") -> Tensor:
    """Reduce a per-sample loss as PyTorch's ``reduction`` would (fastai's ``reduce_loss``).

    Example:
        >>> reduce_loss(torch.tensor([1.0, 3.0]), "sum").item()
        4.0
    """
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchmean":
        return loss.sum() / loss.size(0)
    return loss


def _loss_name(loss_func: Any) -> str:
    if isinstance(loss_func, functools.partial):
        return f"partial({_loss_name(loss_func.func)})"
    return getattr(loss_func, "__qualname__", None) or type(loss_func).__name__


def _signature_default(fn: Callable[..., Any], name: str) -> Any:
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return inspect.Parameter.empty
    return inspect.Parameter.empty if param is None else param.default


class _Unreduced:
    """Calls a loss with ``reduction='none'`` and remembers how the original reduces.

    Objects with a ``reduction`` attribute (``nn.CrossEntropyLoss`` and every ``_Loss``,
    fastai's ``BaseLoss``) get it set to ``'none'`` for the call and restored after;
    functions get a ``reduction='none'`` keyword when their signature has one.
    """

    def __init__(self, loss_func: Any) -> None:
        self.loss_func = loss_func
        attr = getattr(loss_func, "reduction", None)
        self.by_attr = isinstance(attr, str)
        if self.by_attr:
            reduction: Any = attr
            self.weight = getattr(loss_func, "weight", None)
            self.ignore_index = getattr(loss_func, "ignore_index", None)
        else:
            reduction = _signature_default(loss_func, "reduction")
            if reduction is inspect.Parameter.empty:
                raise TypeError(
                    f"MixUp/CutMix: cannot compute the loss `{_loss_name(loss_func)}` per sample: it has no "
                    "`reduction` attribute and does not take a `reduction` keyword. Accepted: a loss object with "
                    "a `reduction` attribute (nn.CrossEntropyLoss(...), any torch.nn loss), or a function "
                    "accepting reduction='none' (F.cross_entropy, functools.partial(F.cross_entropy, ...)); "
                    "for float/one-hot targets only, a loss with `y_int = False` (targets are mixed instead)"
                )
            weight = _signature_default(loss_func, "weight")
            ignore = _signature_default(loss_func, "ignore_index")
            self.weight = None if weight is inspect.Parameter.empty else weight
            self.ignore_index = None if ignore is inspect.Parameter.empty else ignore
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"MixUp/CutMix: the loss `{_loss_name(loss_func)}` has reduction={reduction!r}; "
                f"accepted: {', '.join(map(repr, _REDUCTIONS))}"
            )
        self.reduction: str = reduction

    def __call__(self, pred: Any, *yb: Any) -> Tensor:
        lf = self.loss_func
        if not self.by_attr:
            out: Tensor = lf(pred, *yb, reduction="none")
            return out
        old = lf.reduction
        lf.reduction = "none"
        try:
            res: Tensor = lf(pred, *yb)
            return res
        finally:
            lf.reduction = old

    def sample_weights(self, y: Tensor) -> Tensor | None:
        """What a weighted 'mean' divides by, per element: ``weight[y]`` and 0 where ``y`` is ignored."""
        if self.ignore_index is None and self.weight is None:
            return None
        valid = y != self.ignore_index if self.ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
        if self.weight is None:
            return valid.float()
        w = torch.as_tensor(self.weight, device=y.device, dtype=torch.float32)
        return w[torch.where(valid, y, torch.zeros_like(y))] * valid


def _bcast(lam: Tensor, like: Tensor) -> Tensor:
    """``lam`` (shape ``(N,)`` or scalar) viewed to broadcast over ``like`` (shape ``(N, ...)``)."""
    if lam.ndim == 0:
        return lam
    return lam.view(-1, *([1] * (like.ndim - 1)))


def _is_int(t: Any) -> bool:
    return isinstance(t, Tensor) and not (t.is_floating_point() or t.is_complex())


class MixHandler(Callback):
    """Base of :class:`MixUp` and :class:`CutMix`: the generator, the loss swap and the target mixing.

    Subclasses implement ``before_batch``: draw with :meth:`_beta` / :attr:`generator`, set
    ``self.lam`` and ``self.yb1`` (partner targets), rebind ``learn.xb``, then call
    :meth:`_mix_targets`.

    Args:
        alpha: the Beta(alpha, alpha) distribution's parameter (> 0).
        seed: base seed of the callback's generator (default ``torch.initial_seed()``,
            read at the first fit); the global rank is added, so DDP ranks differ.

    Example:
        >>> MixHandler(0.5).alpha
        0.5
    """

    run_valid = False

    def __init__(self, alpha: float = 0.5, seed: int | None = None) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"{type(self).__name__}: `alpha` must be a finite number > 0, got {alpha!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"{type(self).__name__}: `seed` must be an int >= 0 or None, got {seed!r}")
        self.alpha = float(alpha)
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.lam: Tensor | None = None
        self.yb1: tuple[Any, ...] = ()
        self.stack_y = False
        self.old_lf: Any = None
        self._unreduced: _Unreduced | None = None
        self._lf = self.lf  # one bound method, so `learn.loss_func is self._lf` identifies the swap
        self._installed = False

    # -- generator ----------------------------------------------------------------------------
    def _make_generator(self) -> torch.Generator:
        base = torch.initial_seed() if self.seed is None else self.seed
        g = torch.Generator(device="cpu")
        g.manual_seed((base + _RANK_STRIDE * global_rank()) % 2**63)
        return g

    def _beta(self, n: int) -> Tensor:
        """``n`` draws from Beta(alpha, alpha) on the CPU generator (as ``Beta.sample((n,))`` draws)."""
        assert self.generator is not None
        conc = torch.tensor([self.alpha, self.alpha]).expand(n, 2)
        # torch's Beta samples through the Dirichlet kernel; it is the one that takes a generator.
        return torch._sample_dirichlet(conc, generator=self.generator)[:, 0]

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (a uint8 tensor), so a resumed run draws what it would have drawn."""
        if self.generator is None:
            self.generator = self._make_generator()
        return {"rng_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self.generator is None:
            self.generator = torch.Generator(device="cpu")
        self.generator.set_state(torch.as_tensor(state["rng_state"], dtype=torch.uint8).cpu())

    # -- loss swap ---------------------------------------------------------------------------
    def _in_fit(self) -> bool:
        return self.learn.stage == "fit"

    def _check_loss(self) -> None:
        learn = self.learn
        lf = learn.loss_func
        if lf is self._lf:  # already swapped (a fit that failed before restoring)
            lf = self.old_lf
        if getattr(lf, "y_int", True) is False:
            self._unreduced = None  # fastai's flag: targets are never class indices, mix targets
        else:
            self._unreduced = _Unreduced(lf)

    def before_fit(self) -> None:
        if not self._in_fit():
            return
        if self.learn is not None and self.learn.loss_func is None:
            raise TypeError(
                f"{type(self).__name__} mixes the loss, but no loss function was given: pass "
                "loss_func=... to the Learner, or LightningAdapter([...], loss_func=nn.CrossEntropyLoss())"
            )
        self._check_loss()
        if self.generator is None:
            self.generator = self._make_generator()

    def before_train(self) -> None:
        learn = self.learn
        if self.generator is None:  # no before_fit in this loop (e.g. a plain Lightning project)
            self.before_fit()
        if learn.loss_func is not self._lf:
            self._check_loss()
            self.old_lf = learn.loss_func
            learn.loss_func = self._lf
        self._installed = True

    def after_train(self) -> None:
        learn = self.learn
        if self._installed and learn is not None:
            if learn.loss_func is self._lf:
                learn.loss_func = self.old_lf
            self._installed = False

    def after_cancel_train(self) -> None:
        self.after_train()

    def after_cancel_fit(self) -> None:
        self.after_train()

    def after_fit(self) -> None:
        self.after_train()

    def lf(self, pred: Any, *yb: Any) -> Tensor:
        """The mixing loss: ``lerp(loss(pred, *yb1), loss(pred, *yb), lam)`` per sample, then reduced.

        Outside training, or for a batch whose targets were mixed, it is the original loss.
        Half/bf16 predictions are cast to float32 first and the loss runs outside autocast.
        """
        learn = self.learn
        if not learn.training:
            out: Tensor = self.old_lf(pred, *yb)
            return out
        if isinstance(pred, Tensor) and pred.dtype in (torch.float16, torch.bfloat16):
            # As fastai's MixedPrecision: the loss runs in float32, outside autocast.
            with torch.autocast(pred.device.type, enabled=False):
                return self._loss(pred.float(), *yb)
        return self._loss(pred, *yb)

    def _loss(self, pred: Any, *yb: Any) -> Tensor:
        if not self.stack_y:
            out: Tensor = self.old_lf(pred, *yb)
            return out
        un = self._unreduced
        if un is None:
            raise TypeError(
                f"MixUp/CutMix: the loss `{_loss_name(self.old_lf)}` declares y_int=False but the targets are "
                "integers; give float/one-hot targets or a loss accepting reduction='none'"
            )
        assert self.lam is not None
        l1, l0 = un(pred, *self.yb1).float(), un(pred, *yb).float()
        lam = _bcast(self.lam.float(), l0)
        loss = torch.lerp(l1, l0, lam)
        if un.reduction == "mean" and len(yb) == 1:
            w1, w0 = un.sample_weights(self.yb1[0]), un.sample_weights(yb[0])
            if w0 is not None and w1 is not None and w0.shape == l0.shape:
                return loss.sum() / torch.lerp(w1, w0, lam).sum()
        return reduce_loss(loss, un.reduction)

    # -- targets -----------------------------------------------------------------------------
    def _mix_targets(self) -> None:
        """Integer targets: mix the loss (``stack_y``); float targets: ``learn.yb = lerp(yb1, yb, lam)``."""
        learn = self.learn
        assert self.lam is not None
        self.stack_y = any(_is_int(y) for y in learn.yb)
        if self.stack_y:
            return
        learn.yb = tuple(
            torch.lerp(y1, y, _bcast(self.lam, y).to(y.dtype)) if isinstance(y, Tensor) else y
            for y1, y in zip(self.yb1, learn.yb)
        )


class MixUp(MixHandler):
    """fastai's MixUp (https://arxiv.org/abs/1710.09412): blend every sample with a shuffled partner.

    Per sample ``lam ~ Beta(alpha, alpha)``, ``lam = max(lam, 1 - lam)`` (the sample keeps
    the larger share), ``x = lerp(x[perm], x, lam)`` for every float input; the loss (integer
    targets) or the targets (float targets) are mixed with the same ``lam``. ``self.lam``
    (shape ``(N,)``) and ``self.yb1`` (the partner targets) are the current batch's.

    Args:
        alpha: Beta parameter (> 0); 0.4 as in fastai.
        seed: base seed of the callback's generator (default ``torch.initial_seed()``).

    Example:
        >>> MixUp().alpha
        0.4
        >>> with learn.no_logging():
        ...     learn.fit(1, cbs=MixUp(0.4))
        >>> type(learn.loss_func).__name__  # the mixed loss is used during fit only
        'CrossEntropyLoss'
    """

    def __init__(self, alpha: float = 0.4, seed: int | None = None) -> None:
        super().__init__(alpha, seed)

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training or not learn.xb or not isinstance(learn.xb[0], Tensor):
            return
        x = learn.xb[0]
        for i, t in enumerate(learn.xb):
            if isinstance(t, Tensor) and not t.is_floating_point():
                raise TypeError(f"MixUp: input xb[{i}] has dtype {t.dtype}; MixUp blends float inputs only")
        n = x.size(0)
        lam = self._beta(n)
        lam = torch.maximum(lam, 1 - lam)
        assert self.generator is not None
        perm = torch.randperm(n, generator=self.generator).to(x.device, non_blocking=True)
        self.lam = lam.to(x.device, non_blocking=True)
        self.yb1 = tuple(y[perm] if isinstance(y, Tensor) else y for y in learn.yb)
        learn.xb = tuple(
            torch.lerp(t[perm], t, _bcast(self.lam, t).to(t.dtype)) if isinstance(t, Tensor) else t for t in learn.xb
        )
        self._mix_targets()


class CutMix(MixHandler):
    """fastai's CutMix (https://arxiv.org/abs/1905.04899): paste a box from a shuffled partner image.

    One ``lam ~ Beta(alpha, alpha)`` per batch sets the box size (``sqrt(1 - lam)`` of each
    side, centre uniform, clipped to the image as fastai's ``rand_bbox``); ``lam`` is then
    corrected to the share of the image that was *not* pasted, ``1 - box_area / (W * H)``,
    and the loss (or targets) mixed with it. The first input must be an image batch
    ``N x C x H x W``; anything else raises a ``ValueError`` at the first training batch
    (the shape is not known before).

    Args:
        alpha: Beta parameter (> 0); 1.0 as in fastai.
        seed: base seed of the callback's generator (default ``torch.initial_seed()``).

    Example:
        >>> CutMix().alpha
        1.0
    """

    def __init__(self, alpha: float = 1.0, seed: int | None = None) -> None:
        super().__init__(alpha, seed)
        self.bbox: tuple[int, int, int, int] = (0, 0, 0, 0)

    def rand_bbox(self, W: int, H: int, lam: Tensor) -> tuple[int, int, int, int]:
        """fastai's box: ``(x1, y1, x2, y2)``, sides ``round(sqrt(1 - lam) * W|H)``, clipped to the image."""
        assert self.generator is not None
        cut_rat = torch.sqrt(1.0 - lam)
        cut_w = int(torch.round(W * cut_rat).long())
        cut_h = int(torch.round(H * cut_rat).long())
        cx = int(torch.randint(0, W, (1,), generator=self.generator))
        cy = int(torch.randint(0, H, (1,), generator=self.generator))
        x1, x2 = min(max(cx - cut_w // 2, 0), W), min(max(cx + cut_w // 2, 0), W)
        y1, y2 = min(max(cy - cut_h // 2, 0), H), min(max(cy + cut_h // 2, 0), H)
        return x1, y1, x2, y2

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training or not learn.xb:
            return
        x = learn.xb[0]
        if not isinstance(x, Tensor) or x.ndim != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"CutMix: the input xb[0] must be an image batch N x C x H x W (4 dims), got {got}")
        n, _, H, W = x.shape
        lam = self._beta(1)
        assert self.generator is not None
        perm = torch.randperm(n, generator=self.generator).to(x.device, non_blocking=True)
        x1, y1, x2, y2 = self.bbox = self.rand_bbox(W, H, lam)
        mixed = x.clone()
        mixed[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
        learn.xb = (mixed, *learn.xb[1:])
        self.lam = torch.tensor(1.0 - (x2 - x1) * (y2 - y1) / float(W * H), device=x.device)
        self.yb1 = tuple(y[perm] if isinstance(y, Tensor) else y for y in learn.yb)
        self._mix_targets()

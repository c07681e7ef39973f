"""GradientAccumulation equals one big batch (fp32 and fp16 with the CPU GradScaler); GradientClip."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import TensorDataset

from bridge import Callback, DataBunch
from bridge.optim import SGD
from callbacks import GradientAccumulation, GradientClip
from tests.helpers import make_learner


def regression_data(bs: int, n: int = 32, seed: int = 1) -> DataBunch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataBunch.from_datasets(TensorDataset(x, y), TensorDataset(x[:8], y[:8]), bs=bs)


def linear_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Linear(4, 1)


class Steps(Callback):
    order = 90

    def before_fit(self) -> None:
        self.n, self.sync = 0, []

    def before_backward(self) -> None:
        self.sync.append(bool(getattr(self.learn, "skip_grad_sync", False)))

    def after_step(self) -> None:
        self.n += 1


def _train(tmp_path: Path, bs: int, cbs: list[Any], **kw: Any) -> torch.Tensor:
    learn = make_learner(
        tmp_path, data=regression_data(bs), model=linear_model(), loss_func=nn.MSELoss(),
        opt_func=lambda ps, lr: SGD(ps, lr=lr), lr=0.05, **kw,
    )  # fmt: skip
    learn.fit(2, cbs=cbs)
    return torch.cat([p.detach().reshape(-1) for p in learn.model.parameters()])


def test_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    big = _train(tmp_path, 32, [])
    steps = Steps()
    acc = _train(tmp_path, 8, [GradientAccumulation(n_acc=32), steps])
    assert steps.n == 2  # one step per 32 samples: 4 batches of 8
    assert steps.sync == [True, True, True, False] * 2  # the all-reduce is only needed on stepping batches
    torch.testing.assert_close(acc, big, rtol=0, atol=1e-6)
    plain = _train(tmp_path, 8, [])
    assert (plain - big).abs().max() > 1e-2  # without accumulation the result really differs


def test_accumulation_under_fp16_with_grad_scaler(tmp_path: Path) -> None:
    def plugin() -> MixedPrecision:  # a scale that does not overflow fp16 here: every step is taken
        return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))

    big = _train(tmp_path, 32, [], plugins=[plugin()], accelerator="cpu")
    steps = Steps()
    acc = _train(tmp_path, 8, [GradientAccumulation(n_acc=32), steps], plugins=[plugin()], accelerator="cpu")
    assert steps.n == 2
    fp32 = _train(tmp_path, 32, [])
    init = torch.cat([p.detach().reshape(-1) for p in linear_model().parameters()])
    assert (fp32 - init).abs().max() > 0.1 and (big - init).abs().max() > 0.1  # the steps were taken
    # kept grads are rescaled after each cancelled step: accumulated == big batch (fp16 rounding only)
    torch.testing.assert_close(acc, big, rtol=0, atol=2e-3)
    torch.testing.assert_close(acc, fp32, rtol=0, atol=5e-3)


def test_accumulation_counts_samples_not_batches(tmp_path: Path) -> None:
    steps = Steps()
    _train(tmp_path, 8, [GradientAccumulation(n_acc=20), steps])
    # counts 8, 16, 24 -> step, 8 | 16, 24 -> step, 8, 16: 2 steps in 2 epochs of 4 batches
    assert steps.n == 2


class Norms(Callback):
    """Gradient norm before (order -1) or after (order 12) GradientClip (order 11)."""

    def __init__(self, order: int) -> None:
        self.order, self.norms = order, []

    def before_step(self) -> None:
        grads = [p.grad.detach().reshape(-1) for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_gradient_clip_true_grads(tmp_path: Path, precision: str) -> None:
    pre, post = Norms(-1), Norms(12)
    kw: dict[str, Any] = {}
    if precision == "16-mixed":
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        kw = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler)], "accelerator": "cpu"}
    _train(tmp_path, 8, [pre, GradientClip(max_norm=1.0), post], **kw)
    assert len(pre.norms) == 8
    assert max(pre.norms) > 2.0  # clipping really happens
    for a, b in zip(pre.norms, post.norms):
        assert b == pytest.approx(min(a, 1.0), rel=1e-4)  # unscaled grads: clipped to the true norm
    ref = Norms(-1)
    _train(tmp_path, 8, [ref])
    assert pre.norms[0] == pytest.approx(ref.norms[0], rel=1e-2)


def test_gradient_clip_inf_norm(tmp_path: Path) -> None:
    post = Norms(12)
    _train(tmp_path, 8, [GradientClip(max_norm=0.1, norm_type=math.inf), post])
    assert len(post.norms) == 8  # after clipping every |g_i| <= 0.1 with 5 params: 2-norm <= 0.1 * sqrt(5)
    assert max(post.norms) <= 0.1 * math.sqrt(5) + 1e-6


def test_gradient_clip_acts_on_accumulated_grads_only(tmp_path: Path) -> None:
    pre, post = Norms(10), Norms(12)  # between GradientAccumulation (6) and GradientClip (11), and after
    _train(tmp_path, 8, [GradientAccumulation(n_acc=16), GradientClip(max_norm=1.0), pre, post])
    assert len(pre.norms) == len(post.norms) == 4  # stepping batches only
    assert post.norms == pytest.approx([min(a, 1.0) for a in pre.norms], rel=1e-4)


@pytest.mark.parametrize("max_norm", [0, -1.0, "1", True])
def test_gradient_clip_validation(max_norm: Any) -> None:
    with pytest.raises(ValueError, match="max_norm"):
        GradientClip(max_norm=max_norm)
    with pytest.raises(ValueError, match="norm_type"):
        GradientClip(norm_type=0)


@pytest.mark.parametrize("n_acc", [0, -3, 2.5, True])
def test_gradient_accumulation_validation(n_acc: Any) -> None:
    with pytest.raises(ValueError, match="n_acc"):
        GradientAccumulation(n_acc=n_acc)

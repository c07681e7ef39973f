"""DESIGN.md guarantees 2 (rebinding), 3 (true grads at before_step) and 8 (errors), per precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.nn import functional as F

from bridge import SGD, Callback
from tests.helpers import make_data, make_learner, make_model

PRECISIONS = {
    "32": {},
    "bf16": {"precision": "bf16-mixed"},
    "fp16-scaler": {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]},
}


def _fp16_opts() -> dict[str, Any]:
    # A fresh scaler per learner: GradScaler keeps state.
    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]}


def _opts(name: str) -> dict[str, Any]:
    return _fp16_opts() if name == "fp16-scaler" else dict(PRECISIONS[name])


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_rebinding_takes_effect_in_the_same_batch(tmp_path: Path, precision: str) -> None:
    class Rebind(Callback):
        def __init__(self) -> None:
            self.checks: list[str] = []

        def before_batch(self) -> None:
            if self.training:
                self.learn.xb = (torch.zeros_like(self.xb[0]),)
                self.learn.yb = (torch.ones_like(self.yb[0]),)
                self.learn.loss_func = nn.CrossEntropyLoss(reduction="sum")

        def after_pred(self) -> None:
            if self.training:
                expected = self.learn.model(self.xb[0])
                assert torch.allclose(self.pred.float(), expected.float(), atol=1e-2)
                assert float(self.xb[0].abs().sum()) == 0.0
                self.learn.pred = self.pred * 0  # uniform logits
                self.checks.append("pred")

        def after_loss(self) -> None:
            if self.training:
                n = self.yb[0].shape[0]
                # loss_func (sum) on the rebound pred (zeros) and yb (ones): n * log(2)
                assert float(self.loss.detach()) == pytest.approx(n * torch.log(torch.tensor(2.0)).item(), rel=1e-2)
                self.checks.append("loss")
            else:
                self.learn.loss_func = nn.CrossEntropyLoss()

    cb = Rebind()
    learn = make_learner(tmp_path, cbs=[cb], **_opts(precision))
    learn.fit(1)
    assert cb.checks.count("pred") == 6 and cb.checks.count("loss") == 6


@pytest.mark.parametrize("which", ["loss_grad", "loss_only"])
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_backward_uses_loss_grad_only(tmp_path: Path, precision: str, which: str) -> None:
    """As fastai 2.8: zeroing ``loss_grad`` leaves SGD weights untouched; rebinding ``loss`` alone
    changes what is logged, not the gradient (docs/design.md, Guarantee 2)."""

    class ZeroLoss(Callback):
        def after_loss(self) -> None:
            if which == "loss_grad":
                self.learn.loss_grad = self.loss_grad * 0
            else:
                self.learn.loss = self.loss * 0

        def before_step(self) -> None:
            zero = all(float(p.grad.abs().sum()) == 0.0 for p in self.learn.model.parameters())
            assert zero == (which == "loss_grad")

    learn = make_learner(tmp_path, cbs=[ZeroLoss()], opt_func=SGD, lr=0.1, **_opts(precision))
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1)
    same = all(torch.equal(p0, p.detach()) for p0, p in zip(before, learn.model.parameters(), strict=True))
    assert same == (which == "loss_grad")
    if which == "loss_only":
        assert learn.recorder.values[0][0] == 0.0  # the rebound (zero) loss is what the Recorder logged


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_grads_at_before_step_are_unscaled(tmp_path: Path, precision: str) -> None:
    data = make_data(n=32, n_valid=32, bs=32)
    reference = make_model(seed=3)
    x, y = data.train_ds.tensors  # type: ignore[attr-defined]
    F.cross_entropy(reference(x), y).backward()
    expected = [p.grad.clone() for p in reference.parameters()]

    class Grab(Callback):
        def before_step(self) -> None:
            self.grads = [p.grad.detach().float().clone() for p in self.learn.model.parameters()]

    cb = Grab()
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=32, bs=32), model=make_model(seed=3), cbs=[cb],
                         **_opts(precision))  # fmt: skip
    learn.dls.train_dl = torch.utils.data.DataLoader(data.train_ds, batch_size=32, shuffle=False)
    learn.fit(1)
    for got, exp in zip(cb.grads, expected, strict=True):
        # bf16/fp16 autocast changes the numerics a little; a 2**16 loss scale would not be "a little".
        rel = float((got - exp).norm() / exp.norm())
        assert rel < 0.05, rel


def test_callback_error_reaches_caller_with_its_type(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Boom(Callback):
        def __init__(self) -> None:
            self.after_fit_ran = False

        def after_loss(self) -> None:
            if self.epoch == 1 and self.iter == 2:
                raise KeyError("no such column")

        def after_fit(self) -> None:
            self.after_fit_ran = True

    boom = Boom()
    learn = make_learner(tmp_path, cbs=[boom], logger=True, log_every_n_steps=1)
    with pytest.raises(KeyError, match="no such column") as info:
        learn.fit(3)
    assert any("Boom" in n and "after_loss" in n for n in info.value.__notes__)
    assert boom.after_fit_ran and isinstance(learn.exception, KeyError)
    run = next((tmp_path / "lightning_logs").glob("version_*"))
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert len(acc.Scalars("train_loss")) >= 6  # flushed to disk on the way out
    # the learner is usable afterwards
    learn.remove_cb(boom)
    learn.fit(1)
    assert len(learn.recorder.values) == 1


def test_error_in_after_fit_does_not_mask_the_original(tmp_path: Path) -> None:
    class Two(Callback):
        def after_batch(self) -> None:
            raise ValueError("first")

        def after_fit(self) -> None:
            raise RuntimeError("second")

    learn = make_learner(tmp_path, cbs=[Two()])
    with pytest.raises(ValueError, match="first") as info:
        learn.fit(1)
    assert any("after_fit also failed" in n and "second" in n for n in info.value.__notes__)


def test_scaler_skipped_step_fires_after_cancel_step(tmp_path: Path) -> None:
    """fp16: a step the GradScaler skips (inf grads) is reported as cancelled, as fastai does."""

    class InfOnce(Callback):
        def __init__(self) -> None:
            self.events: list[str] = []

        def after_loss(self) -> None:
            if self.train_iter == 2:
                self.learn.loss_grad = self.loss_grad * float("inf")

        def before_step(self) -> None:
            self.before = [p.detach().clone() for p in self.learn.model.parameters()]

        def after_cancel_step(self) -> None:
            self.events.append(f"cancel@{self.train_iter}")
            assert all(torch.equal(a, b) for a, b in zip(self.before, self.learn.model.parameters(), strict=True))

        def after_step(self) -> None:
            self.events.append(f"step@{self.train_iter}")

    cb = InfOnce()
    learn = make_learner(tmp_path, cbs=[cb], **_fp16_opts())
    learn.fit(1)
    assert cb.events == ["step@0", "step@1", "cancel@2", "step@2", "step@3", "step@4", "step@5"]

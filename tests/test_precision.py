"""Precision switches (to_fp16 / to_bf16 / to_fp32), fastai MixedPrecision translation, fp16 scaler path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.plugins.precision import MixedPrecision

from bridge import Callback, CancelStepException
from bridge.optim import SGD
from bridge.precision import set_precision, translate_precision_callback
from tests.helpers import make_learner


def cpu_scaler_plugin() -> MixedPrecision:
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))


def test_switches_set_trainer_precision(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    assert learn.to_fp16() is learn and learn.trainer_options["precision"] == "16-mixed"
    assert learn.to_bf16() is learn and learn.trainer_options["precision"] == "bf16-mixed"
    assert learn.to_fp32() is learn and learn.trainer_options["precision"] == "32-true"
    with pytest.raises(ValueError, match=r"precision.*'fp8'"):
        set_precision(learn, "fp8")


def test_matching_precision_plugin_is_kept_conflicting_one_removed(tmp_path: Path) -> None:
    env = LightningEnvironment()
    plugin = cpu_scaler_plugin()
    learn = make_learner(tmp_path, plugins=[plugin, env], precision="16-mixed")
    learn.to_fp16()  # the CPU scaler plugin already gives fp16: keep it, drop the duplicate setting
    assert learn.trainer_options["plugins"] == [plugin, env] and "precision" not in learn.trainer_options
    learn.to_bf16()  # Lightning refuses a precision plugin and `precision` together: the plugin goes
    assert learn.trainer_options["plugins"] == [env] and learn.trainer_options["precision"] == "bf16-mixed"
    learn.fit(1)  # bf16 autocast runs on CPU
    assert learn.trainer.precision == "bf16-mixed"
    learn2 = make_learner(tmp_path, plugins=plugin)
    learn2.to_fp32()
    assert "plugins" not in learn2.trainer_options and learn2.trainer_options["precision"] == "32-true"


def test_fastai_mixed_precision_callback_is_translated(tmp_path: Path) -> None:
    class MixedPrecision:  # what a fastai port looks like
        order = 10

        def __init__(self, amp_mode: str = "fp16") -> None:
            self.amp_mode = amp_mode

        def before_batch(self) -> None: ...

    class NonNativeMixedPrecision:
        def before_fit(self) -> None: ...

    learn = make_learner(tmp_path)
    with pytest.warns(UserWarning, match=r"precision='16-mixed'"):
        assert translate_precision_callback(learn, MixedPrecision()) is True
    assert learn.trainer_options["precision"] == "16-mixed"
    with pytest.warns(UserWarning, match=r"precision='bf16-mixed'.*to_bf16"):
        assert translate_precision_callback(learn, MixedPrecision("bf16")) is True
    assert learn.trainer_options["precision"] == "bf16-mixed"
    with pytest.warns(UserWarning, match="NonNativeMixedPrecision"):
        assert translate_precision_callback(learn, NonNativeMixedPrecision()) is True
    assert learn.trainer_options["precision"] == "16-mixed"
    assert translate_precision_callback(learn, Callback()) is False
    assert translate_precision_callback(learn, cpu_scaler_plugin()) is False  # a Lightning plugin is not a callback


class CancelStepAt(Callback):
    def __init__(self, at: int) -> None:
        self.at, self.steps, self.grad_norms = at, 0, []

    def before_step(self) -> None:
        self.grad_norms.append(float(torch.cat([p.grad.reshape(-1) for p in self.learn.model.parameters()]).norm()))
        if self.learn.train_iter == self.at:
            raise CancelStepException()

    def after_step(self) -> None:
        self.steps += 1


def _fit_with_cancel(tmp_path: Path, **kw: Any) -> tuple[CancelStepAt, torch.Tensor, Any]:
    cb = CancelStepAt(at=1)
    learn = make_learner(tmp_path, opt_func=lambda ps, lr: SGD(ps, lr=lr), lr=0.1, cbs=[cb], **kw)
    learn.fit(1)
    return cb, torch.cat([p.detach().reshape(-1) for p in learn.model.parameters()]), learn


def test_cancel_step_under_grad_scaler_then_normal_steps(tmp_path: Path) -> None:
    cb16, w16, learn = _fit_with_cancel(tmp_path, plugins=[cpu_scaler_plugin()], accelerator="cpu")
    scaler = learn.trainer.precision_plugin.scaler
    assert scaler is not None and scaler.get_scale() == 2.0**8  # no inf/nan step was skipped
    cb32, w32, _ = _fit_with_cancel(tmp_path)
    assert cb16.steps == cb32.steps == 6  # after_step fires for the cancelled one too
    # grads at before_step are true grads (unscaled), and every later step ran: same weights as fp32
    assert cb16.grad_norms == pytest.approx(cb32.grad_norms, rel=2e-2)
    torch.testing.assert_close(w16, w32, rtol=0, atol=5e-3)
    torch.manual_seed(0)
    init = torch.cat([p.detach().reshape(-1) for p in make_learner(tmp_path).model.parameters()])
    assert (w16 - init).abs().max() > 1e-3

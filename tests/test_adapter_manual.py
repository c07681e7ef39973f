"""LightningAdapter on manual optimization: one optimizer, and a two-optimizer GAN (Lightning's tutorial shape)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from bridge import Callback, CancelBackwardException, CancelBatchException, CancelStepException
from callbacks import GradientClip, MixUp
from tests.adapter_modules import ManualOne, TinyGAN, flat
from tests.test_adapter_shapes import Trace, fit_shape


@pytest.mark.parametrize("make", [ManualOne, TinyGAN])
def test_bit_identical_without_callbacks_and_every_batch_trains(tmp_path: Path, make: type[pl.LightningModule]) -> None:
    plain, adapted = make(), make()
    _, t0 = fit_shape(tmp_path / "p", plain, None)
    trace = Trace()
    _, t1 = fit_shape(tmp_path / "a", adapted, [trace])
    assert torch.equal(flat(plain), flat(adapted))
    assert t0.global_step == t1.global_step
    n_opt = 2 if make is TinyGAN else 1
    assert trace.events.count("before_step") == trace.events.count("after_step") == 2 * 3 * n_opt
    assert trace.events.count("before_backward") == trace.events.count("after_backward") == 2 * 3 * n_opt
    assert trace.events.count("after_train") == trace.events.count("after_epoch") == 2
    assert trace.events[-1] == "after_fit"


def test_the_gan_event_trace_and_the_optimizer_being_stepped(tmp_path: Path) -> None:
    class Opts(Trace):
        def before_fit(self) -> None:
            self.opts: list[int] = []
            super()._on("before_fit")

        def before_step(self) -> None:
            self.opts.append([id(o) for o in self.learn.trainer.optimizers].index(id(self.learn.opt)))
            super()._on("before_step")

    trace = Opts()
    fit_shape(tmp_path, TinyGAN(), [trace], epochs=1, limit_train_batches=1, limit_val_batches=0)
    one = ["after_loss", "before_backward", "after_backward", "before_step", "after_step"]
    assert trace.events == [
        "before_fit", "before_epoch", "before_train",
        "before_batch", "after_pred", *one, *one, "after_batch",
        "after_train", "after_epoch", "after_fit",
    ]  # fmt: skip
    assert trace.opts == [0, 1]  # generator, then discriminator


@pytest.mark.parametrize("make", [ManualOne, TinyGAN])
def test_gradient_clip_acts_on_each_step_as_lightnings_clip_gradients(
    tmp_path: Path, make: type[pl.LightningModule]
) -> None:
    ours, theirs, unclipped = make(), make(clip=0.05), make()  # type: ignore[call-arg]
    fit_shape(tmp_path / "a", ours, [GradientClip(max_norm=0.05)])
    fit_shape(tmp_path / "b", theirs, None)
    fit_shape(tmp_path / "c", unclipped, None)
    assert torch.allclose(flat(ours), flat(theirs), atol=1e-7, rtol=0)
    assert not torch.allclose(flat(ours), flat(unclipped), atol=1e-4)


def test_cancel_step_of_one_optimizer_leaves_its_parameters(tmp_path: Path) -> None:
    class NoDiscriminator(Callback):
        def before_step(self) -> None:
            if self.learn.opt is self.learn.trainer.optimizers[1]:
                raise CancelStepException()

    gan = TinyGAN()
    g0, d0 = flat(gan.generator).clone(), flat(gan.discriminator).clone()
    trace = Trace()
    fit_shape(tmp_path, gan, [NoDiscriminator(), trace])
    assert torch.equal(flat(gan.discriminator), d0)
    assert not torch.equal(flat(gan.generator), g0)
    assert trace.events.count("after_cancel_step") == 6 and trace.events.count("after_step") == 12


def test_cancel_backward_and_cancel_batch_under_manual_optimization(tmp_path: Path) -> None:
    module = ManualOne()
    start = flat(module).clone()
    trace = Trace(CancelBackwardException, "before_backward", lambda e, i, t: True)
    fit_shape(tmp_path / "a", module, [trace])
    assert torch.equal(flat(module), start)  # no backward: zero_grad left no gradient, the steps change nothing
    assert trace.events.count("after_cancel_backward") == 6 and trace.events.count("before_step") == 6

    module, plain = ManualOne(), ManualOne()
    trace = Trace(CancelBatchException, "before_batch", lambda e, i, t: e == 0 and i == 1 and t)
    fit_shape(tmp_path / "b", module, [trace])
    fit_shape(tmp_path / "c", plain, None)
    assert trace.events.count("after_cancel_batch") == 1 and trace.events.count("before_step") == 5
    assert not torch.equal(flat(module), flat(plain))  # one batch fewer was trained on


def test_loss_func_is_refused_at_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`loss_func` cannot be used with manual optimization.*MixUp"):
        fit_shape(tmp_path, ManualOne(), [MixUp()], loss_func=torch.nn.functional.cross_entropy)


def test_nothing_is_left_wrapped_after_the_fit(tmp_path: Path) -> None:
    module = TinyGAN()
    _, trainer = fit_shape(tmp_path, module, [])
    assert "manual_backward" not in module.__dict__ and "training_step" not in module.__dict__
    assert all("step" not in vars(o) for o in trainer.strategy._lightning_optimizers)

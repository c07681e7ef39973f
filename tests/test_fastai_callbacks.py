"""fastai 2.8.12's own callbacks on fastlight's Learner, with fastai's own Learner as the oracle.

Each test runs one fastai callback (imported from the installed fastai package) on both
Learners through :mod:`tests.fastai_oracle` — same model, batches, SGD and per-batch RNG —
and requires the same event trace, final weights (1e-6), ``recorder.values``, files,
results and leftover callbacks; then it checks the callback's documented effect against an
independent number (a plain PyTorch loop, a closed form, the files on disk). These are the
behaviours that already agree; ``scripts/fastai_probe.py`` lists the others. fastai is a test
dependency (`.ci/run` installs it): without it this module fails to import, it is never skipped.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import fastai
import pytest
import torch
from fastai.callback.all import (
    ActivationStats,
    BnFreeze,
    ChannelsLast,
    CutMix,
    MCDropoutCallback,
    MixUp,
    ModelResetter,
    RNNCallback,
    RNNRegularizer,
    SaveModelCallback,
    TrackerCallback,
)
from fastai.callback.core import Callback as FastaiCallback
from fastai.learner import CastToTensor, before_batch_cb
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import TensorBase
from torch import Tensor
from torch.nn import functional as F

from tests.fastai_oracle import (
    ATOL,
    Case,
    Comparison,
    Keep,
    NormHook,
    Resettable,
    Setup,
    ToyRNN,
    compare,
    rebind,
    run_case,
    run_fastlight,
)

LR = 0.1  # Case's default learning rate


def agree(case: Case) -> Comparison:
    """Run ``case`` on both Learners; fail with the first difference unless they agree."""
    comp = run_case(case)
    assert comp.fastai.error is None, f"fastai's own Learner failed: {comp.fastai.error!r}"
    assert comp.diff is None, f"{case.name}: {comp.diff}"
    return comp


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def plain_sgd(
    setup: Setup,
    n_epoch: int,
    x_tf: Callable[[Tensor], Tensor] = lambda x: x,
    pred_tf: Callable[[Tensor], Tensor] = lambda p: p,
    loss_tf: Callable[[Tensor], Tensor] = lambda loss: loss,
) -> tuple[dict[str, Tensor], list[float]]:
    """Plain PyTorch SGD at ``LR`` on ``setup``'s data in order; the ``*_tf`` apply to training batches.

    Returns the final state_dict and the validation loss after each epoch (batch-size weighted).
    """
    model = setup.model()
    xt, yt, xv, yv = setup.tensors()
    bs, valid = setup.bs, []
    for _ in range(n_epoch):
        model.train()
        for i in range(0, len(xt), bs):
            loss = loss_tf(F.cross_entropy(pred_tf(model(x_tf(xt[i : i + bs]))), yt[i : i + bs]))
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-LR)
        model.eval()
        with torch.no_grad():
            losses = [
                F.cross_entropy(model(xv[i : i + bs]), yv[i : i + bs]) * len(xv[i : i + bs])
                for i in range(0, len(xv), bs)
            ]
        valid.append(float(sum(losses)) / len(xv))
    return model.state_dict(), valid


def expected_events(n_epoch: int, n_train: int, n_valid: int) -> list[str]:
    """fastai v2's documented event order for an uncancelled fit."""
    train_batch = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward"]
    train_batch += ["before_step", "after_step", "after_batch"]
    valid_batch = ["before_batch", "after_pred", "after_loss", "after_batch"]
    epoch = ["before_epoch", "before_train", *train_batch * n_train, "after_train", "before_validate"]
    epoch += [*valid_batch * n_valid, "after_validate", "after_epoch"]
    return ["after_create", "before_fit", *epoch * n_epoch, "after_fit"]


# -- the environment -----------------------------------------------------------------------------------
def test_fastai_is_the_pinned_version_and_needs_no_torchvision() -> None:
    assert fastai.__version__ == "2.8.12"
    assert "torchvision" not in sys.modules  # fastai.learner + fastai.callback.all are imported above


# -- the oracle can fail ---------------------------------------------------------------------------------
def test_compare_reports_each_kind_of_difference() -> None:
    comp = agree(Case("plain", n_epoch=1))
    fa, fl = comp.fastai, comp.fastlight
    w = {k: v.clone() for k, v in fl.weights.items()}
    w["0.weight"][0, 0] += 10 * ATOL
    assert "weights[0.weight]" in str(compare(comp.case, fa, dataclasses.replace(fl, weights=w)))
    assert "trace" in str(compare(comp.case, fa, dataclasses.replace(fl, trace=fl.trace[:-1])))
    values = [[v * 1.001 for v in row] for row in fl.values]
    assert "recorder.values[0]" in str(compare(comp.case, fa, dataclasses.replace(fl, values=values)))
    failed = dataclasses.replace(fl, error=RuntimeError("boom"))
    assert "exception" in str(compare(comp.case, fa, failed))
    assert "files" in str(compare(comp.case, fa, dataclasses.replace(fl, files=["x.pth"])))
    assert "callbacks left" in str(compare(comp.case, fa, dataclasses.replace(fl, cbs_after=["Extra"])))


def test_oracle_catches_a_callback_that_acts_only_on_fastlight() -> None:
    class OnlyOnFastlight(FastaiCallback):
        def after_loss(self) -> None:
            if self.training and type(self.learn).__module__.startswith("bridge"):
                self.learn.loss_grad = self.learn.loss_grad * 2

    diff = run_case(Case("asymmetric", cbs=lambda p: [OnlyOnFastlight()])).diff
    assert diff is not None and diff.startswith("weights[")


# -- fastai's Learner defaults (TrainEvalCallback, Recorder) ---------------------------------------
def test_plain_fit_matches_fastai_and_a_plain_sgd_loop() -> None:
    setup = Setup()
    comp = agree(Case("plain fit", n_epoch=3, setup=setup))
    assert [e[0] for e in comp.fastlight.trace] == expected_events(3, 3, 2)
    weights, valid = plain_sgd(setup, n_epoch=3)
    assert max_diff(comp.fastlight.weights, weights) <= ATOL
    assert [row[1] for row in comp.fastlight.values] == pytest.approx(valid, rel=1e-5)


# -- fastai.learner ------------------------------------------------------------------------------------
def test_cast_to_tensor_turns_tensor_subclasses_back_into_tensors() -> None:
    seen: dict[str, list[type]] = {}

    class ToTensorBase(FastaiCallback):
        order = 5  # before CastToTensor (9)

        def before_batch(self) -> None:
            self.learn.xb = tuple(TensorBase(x) for x in self.learn.xb)

    class Look(FastaiCallback):
        order = 20

        def before_batch(self) -> None:
            seen.setdefault(type(self.learn).__module__, []).append(type(self.learn.xb[0]))

    agree(Case("CastToTensor", n_epoch=1, cbs=lambda p: [ToTensorBase(), CastToTensor(), Look()]))
    assert set(seen) == {"fastai.learner", "bridge.learner"}
    assert all(t is Tensor for types in seen.values() for t in types) and len(seen["bridge.learner"]) == 5


def test_before_batch_cb_rewrites_the_batch() -> None:
    setup = Setup()
    double = before_batch_cb(lambda self, xb, yb: ((xb[0] * 2,), yb))
    comp = agree(Case("before_batch_cb", setup=setup, cbs=lambda p: [double]))
    weights, _ = plain_sgd(setup, n_epoch=2, x_tf=lambda x: x * 2)  # the weights see the training batches only
    assert max_diff(comp.fastlight.weights, weights) <= ATOL


def test_rebinding_xb_pred_and_loss_grad_takes_effect_in_the_batch() -> None:
    setup = Setup()
    cbs = lambda p: [  # noqa: E731
        *rebind("before_batch", "xb", lambda learn: (learn.xb[0] * 0.5,))(p),
        *rebind("after_pred", "pred", lambda learn: learn.pred * 2)(p),
        *rebind("after_loss", "loss_grad", lambda learn: learn.loss_grad * 0.5)(p),
    ]
    comp = agree(Case("rebinding", setup=setup, cbs=cbs))
    weights, _ = plain_sgd(setup, 2, x_tf=lambda x: x * 0.5, pred_tf=lambda p: p * 2, loss_tf=lambda loss: loss * 0.5)
    assert max_diff(comp.fastlight.weights, weights) <= ATOL


# -- fastai.callback.hook ---------------------------------------------------------------------------
def test_activation_stats_records_each_training_batch() -> None:
    keep = Keep(ActivationStats)
    comp = agree(Case("ActivationStats", cbs=keep))
    stats = keep.of(comp.fastlight).stats
    assert len(stats) == 2 * 3  # one entry per training batch, one dict per layer with parameters
    setup = Setup()
    with torch.no_grad():
        out = setup.model()[0](setup.tensors()[0][:16])  # first layer, first batch, initial weights
    first = stats[0][0]
    assert first["mean"] == pytest.approx(float(out.mean()), abs=1e-6)
    assert first["std"] == pytest.approx(float(out.std()), abs=1e-6)
    assert first["near_zero"] == pytest.approx(float((out <= 0.05).float().mean()))


def test_a_user_hook_callback_with_every() -> None:
    keep = Keep(lambda: NormHook(every=2))
    comp = agree(Case("HookCallback subclass", cbs=keep))
    norms = keep.of(comp.fastlight).norms
    setup = Setup()
    model, x0 = setup.model(), setup.tensors()[0][:16]
    with torch.no_grad():
        h = model[0](x0)
        expected = [float(h.norm()), float(model[2](model[1](h)).norm())]
    assert len(norms) >= 2
    assert norms[0] == pytest.approx(expected, rel=1e-6)  # first batch, initial weights


# -- fastai.callback.mixup ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cb", "setup"), [(lambda: MixUp(0.4), Setup()), (lambda: CutMix(1.0), Setup(image=True))], ids=["MixUp", "CutMix"]
)
def test_mixup_and_cutmix_mix_the_same_way(cb: Callable[[], Any], setup: Setup) -> None:
    comp = agree(Case("mix", cbs=lambda p: [cb()], setup=setup, loss_func=CrossEntropyLossFlat))
    plain = agree(Case("no mix", setup=setup, loss_func=CrossEntropyLossFlat))
    assert max_diff(comp.fastlight.weights, plain.fastlight.weights) > 1e-4  # the mixing changed training
    assert isinstance(comp.fastlight.learn.loss_func, CrossEntropyLossFlat)  # restored after training


# -- fastai.callback.tracker -------------------------------------------------------------------------
def test_tracker_callback_keeps_the_best_valid_loss() -> None:
    keep = Keep(TrackerCallback)
    comp = agree(Case("TrackerCallback", cbs=keep, n_epoch=3))
    assert keep.of(comp.fastlight).best == pytest.approx(min(row[1] for row in comp.fastlight.values), rel=1e-6)


def test_save_model_every_epoch_writes_one_file_per_epoch() -> None:
    comp = agree(Case("SaveModelCallback(every_epoch)", cbs=lambda p: [SaveModelCallback(every_epoch=True)]))
    assert comp.fastlight.files == ["models/model_0.pth", "models/model_1.pth"]
    for name in comp.fastlight.files:
        mine = torch.load(comp.fastlight.path / name, weights_only=True)
        theirs = torch.load(comp.fastai.path / name, weights_only=True)
        assert max_diff(mine, theirs) <= ATOL
    assert (
        max_diff(torch.load(comp.fastlight.path / "models/model_1.pth", weights_only=True), comp.fastlight.weights) == 0
    )


def test_save_model_at_end_with_opt() -> None:
    comp = agree(Case("SaveModelCallback(at_end)", cbs=lambda p: [SaveModelCallback(at_end=True, with_opt=True)]))
    state = torch.load(comp.fastlight.path / "models/model.pth", weights_only=True)
    assert set(state) == {"model", "opt"}
    assert max_diff(state["model"], comp.fastlight.weights) == 0


# -- fastai.callback.rnn -------------------------------------------------------------------------------
def test_model_resetter_resets_at_each_phase() -> None:
    comp = agree(Case("ModelResetter", model=Resettable, cbs=lambda p: [ModelResetter()]))
    # TrainEvalCallback at before_fit, ModelResetter at each before_train / before_validate and after_fit
    assert comp.fastai.learn.model.resets == comp.fastlight.learn.model.resets == 1 + 2 * 2 + 1


def test_rnn_callback_and_regularizer() -> None:
    comp = agree(Case("RNN", model=ToyRNN, cbs=lambda p: [RNNCallback(), RNNRegularizer(alpha=2.0, beta=1.0)]))
    unregularized = run_fastlight(Case("RNN", cbs=lambda p: [RNNCallback()]), ToyRNN())
    assert unregularized.error is None
    assert max_diff(comp.fastlight.weights, unregularized.weights) > 1e-4  # AR / TAR terms reached backward


# -- fastai.callback.training / preds / channelslast -----------------------------------------------------
def test_bn_freeze_keeps_frozen_batchnorm_statistics() -> None:
    setup = Setup(batchnorm=True, frozen_bn=True)
    comp = agree(Case("BnFreeze", setup=setup, cbs=lambda p: [BnFreeze()]))
    for out in (comp.fastai, comp.fastlight):
        assert torch.equal(out.weights["1.running_mean"], torch.zeros(8))
        assert torch.equal(out.weights["1.running_var"], torch.ones(8))
    unfrozen = run_fastlight(Case("no BnFreeze", setup=setup), setup.model())
    assert float(unfrozen.weights["1.running_mean"].abs().max()) > 1e-3  # without it the statistics move


def test_mc_dropout_keeps_dropout_on_in_validation() -> None:
    setup = Setup(dropout=0.5)
    comp = agree(Case("MCDropoutCallback", setup=setup, cbs=lambda p: [MCDropoutCallback()]))
    plain = agree(Case("dropout, eval-mode validation", setup=setup))
    assert max_diff(comp.fastlight.weights, plain.fastlight.weights) <= ATOL  # training is the same
    assert comp.fastlight.values[0][1] != pytest.approx(plain.fastlight.values[0][1], rel=1e-4)


def test_channels_last() -> None:
    comp = agree(Case("ChannelsLast", setup=Setup(image=True, conv=True), cbs=lambda p: [ChannelsLast()]))
    for out in (comp.fastai, comp.fastlight):
        assert out.learn.model[0].weight.is_contiguous(memory_format=torch.channels_last)

"""The GPU checks, shared by ``tests/gpu/test_gpu.py`` and ``scripts/gpu_check.py``.

Each ``check_*`` function runs real tiny fits, asserts the behaviour (``AssertionError``
with the measured values on failure) and returns a one-line summary. ``accelerator`` is
``"gpu"`` for the real check; ``"cpu"`` runs the same logic on CPU (fp16 through Lightning's
CPU GradScaler plugin) so that the checks themselves can be exercised without a GPU.

Example:
    >>> # from tests.gpu.checks import check_bf16_learns; print(check_bf16_learns(tmp_path))
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn

from bridge import SGD, Adam, Callback, CancelStepException, Learner
from tests.helpers import QUIET, make_data, make_learner, make_model, run_script

__all__ = [
    "FP16_REL_TOL",
    "check_bf16_learns",
    "check_bf16_loss_grad_rebind",
    "check_ddp",
    "check_fp16_cancel_step",
    "check_fp16_grads_unscaled",
    "check_get_preds",
    "compare_throughput",
    "environment",
]

#: Relative norm error allowed between fp16-mixed grads at before_step and fp32 grads.
FP16_REL_TOL = 5e-2
#: Accuracy bf16-mixed training must reach on the separable problem of ``make_data``.
BF16_MIN_ACC = 0.85
#: Max abs difference between get_preds on the accelerator and the CPU model.
PREDS_TOL = 1e-3


def environment() -> str:
    """Versions and devices, as one line.

    Example:
        >>> "torch" in environment()
        True
    """
    import lightning

    parts = [f"torch {torch.__version__}", f"lightning {lightning.__version__}"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        parts.append(f"CUDA {torch.version.cuda}, {n} x {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no CUDA device")
    return ", ".join(parts)


def _device_type(accelerator: str) -> str:
    return "cuda" if accelerator == "gpu" else "cpu"


def _options(accelerator: str, precision: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {"accelerator": accelerator, "devices": 1}
    if precision == "16-mixed" and accelerator == "cpu":
        # On CPU Lightning's "16-mixed" has no GradScaler; this plugin gives one.
        opts["plugins"] = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]
    elif precision is not None:
        opts["precision"] = precision
    return opts


def _flat(params: Any) -> Tensor:
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in params])


def _sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return SGD(params, lr=lr)


def _scaler(learn: Learner) -> torch.amp.GradScaler | None:
    return getattr(learn.trainer.precision_plugin, "scaler", None)


class _FirstStepProbe(Callback):
    """Keeps, at the first ``before_step``, the grads, the weights and the batch."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] | None = None

    def before_step(self) -> None:
        if self.seen is not None:
            return
        learn = self.learn
        scaler = _scaler(learn)
        self.seen = {
            "grads": [p.grad.detach().clone() for p in learn.model.parameters()],
            "weights": copy.deepcopy(learn.model.state_dict()),
            "xb": [x.detach().clone() for x in learn.xb],
            "yb": [y.detach().clone() for y in learn.yb],
            "scale": None if scaler is None else float(scaler.get_scale()),
        }


def check_fp16_grads_unscaled(tmp_path: Path, accelerator: str = "gpu") -> str:
    """fp16-mixed with a real GradScaler: grads at before_step equal fp32 grads on the same batch.

    Example:
        >>> # check_fp16_grads_unscaled(tmp_path)  -> 'rel err 1.2e-03 (scale 65536)'
    """
    probe = _FirstStepProbe()
    learn = make_learner(tmp_path, cbs=[probe], **_options(accelerator, "16-mixed"))
    learn.fit(1)
    seen = probe.seen
    assert seen is not None, "before_step never fired"
    scale = seen["scale"]
    assert scale is not None and scale > 1, f"no active GradScaler at before_step (scale {scale})"
    assert seen["grads"][0].device.type == _device_type(accelerator), f"grads on {seen['grads'][0].device}"
    # The fp32 reference, by hand: same weights, same batch, no autocast.
    ref_model = make_model()
    ref_model.load_state_dict(seen["weights"])
    ref_model.to(seen["xb"][0].device)
    loss = nn.CrossEntropyLoss()(ref_model(*seen["xb"]), *seen["yb"])
    ref = _flat(torch.autograd.grad(loss, list(ref_model.parameters())))
    got = _flat(seen["grads"])
    rel = float((got - ref).norm() / ref.norm())
    assert rel < FP16_REL_TOL, f"grads at before_step differ from fp32 grads: rel err {rel:.3g} (scale {scale:g})"
    return f"rel err {rel:.1e} vs fp32 (scale {scale:g})"


class _CancelStepAt(Callback):
    def __init__(self, at: int) -> None:
        self.at, self.after_steps, self.cancelled = at, 0, 0

    def before_step(self) -> None:
        if self.learn.train_iter == self.at:
            raise CancelStepException()

    def after_cancel_step(self) -> None:
        self.cancelled += 1

    def after_step(self) -> None:
        self.after_steps += 1


def _fit_cancel_step(tmp_path: Path, accelerator: str, precision: str | None) -> tuple[_CancelStepAt, int, Learner]:
    cb = _CancelStepAt(at=1)
    torch.manual_seed(0)
    learn = make_learner(tmp_path, cbs=[cb], opt_func=_sgd, lr=0.1, **_options(accelerator, precision))
    learn.create_opt()
    assert learn.opt is not None
    steps = [0]
    learn.opt.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    torch.manual_seed(0)
    learn.fit(1)
    return cb, steps[0], learn


def check_fp16_cancel_step(tmp_path: Path, accelerator: str = "gpu") -> str:
    """A CancelStepException at before_step under the GradScaler, then normal steps.

    Example:
        >>> # check_fp16_cancel_step(tmp_path)  -> '5 steps of 6, max |w16 - w32| 2e-04'
    """
    cb16, steps16, learn16 = _fit_cancel_step(tmp_path, accelerator, "16-mixed")
    scaler = _scaler(learn16)
    assert scaler is not None, "fp16-mixed ran without a GradScaler"
    n_batches = learn16.n_iter_per_epoch()
    w16 = _flat(learn16.model.parameters())
    _, steps32, learn32 = _fit_cancel_step(tmp_path, accelerator, None)
    w32 = _flat(learn32.model.parameters())
    init = _flat(make_model().parameters())
    assert cb16.cancelled == 1 and cb16.after_steps == n_batches, (cb16.cancelled, cb16.after_steps, n_batches)
    assert steps16 == steps32 == n_batches - 1, f"optimizer steps fp16 {steps16}, fp32 {steps32}, want {n_batches - 1}"
    diff = float((w16 - w32).abs().max())
    moved = float((w16 - init).abs().max())
    assert diff < 1e-2, f"fp16 weights differ from fp32 after the same steps: max {diff:.3g}"
    assert moved > 1e-3, f"weights did not move ({moved:.3g})"
    return f"{steps16} steps of {n_batches}, max |w16 - w32| {diff:.1e}, scale {scaler.get_scale():g}"


def check_bf16_learns(tmp_path: Path, accelerator: str = "gpu") -> str:
    """bf16-mixed training learns a separable problem (accuracy from get_preds).

    Example:
        >>> # check_bf16_learns(tmp_path)  -> 'accuracy 0.98'
    """
    data = make_data(n=512, n_valid=128, bs=32)
    learn = make_learner(tmp_path, data=data, **_options(accelerator, "bf16-mixed"))
    learn.fit(4, lr=1e-2)
    assert learn.trainer.precision == "bf16-mixed", learn.trainer.precision
    preds, targs = learn.get_preds()
    acc = float((preds.float().argmax(1) == targs).float().mean())
    assert len(targs) == 128 and acc > BF16_MIN_ACC, f"bf16 accuracy {acc:.3f} (want > {BF16_MIN_ACC})"
    return f"accuracy {acc:.3f}"


class _ZeroLossGrad(Callback):
    """Rebinds ``loss_grad`` to zero in after_loss and records the grads seen at before_step."""

    def __init__(self) -> None:
        self.grad_max: list[float] = []
        self.losses: list[float] = []

    def after_loss(self) -> None:
        self.learn.loss_grad = self.learn.loss_grad * 0.0

    def before_step(self) -> None:
        self.grad_max.append(float(_flat(p.grad for p in self.learn.model.parameters()).abs().max()))
        self.losses.append(float(self.learn.loss.detach()))


def check_bf16_loss_grad_rebind(tmp_path: Path, accelerator: str = "gpu") -> str:
    """Under bf16-mixed, rebinding learn.loss_grad in after_loss is what backward uses.

    Example:
        >>> # check_bf16_loss_grad_rebind(tmp_path)  -> '6 steps, zero grads, weights unchanged'
    """
    cb = _ZeroLossGrad()
    learn = make_learner(tmp_path, cbs=[cb], opt_func=_sgd, lr=0.1, **_options(accelerator, "bf16-mixed"))
    init = _flat(learn.model.parameters())
    learn.fit(1)
    n = learn.n_iter_per_epoch()
    assert len(cb.grad_max) == n, f"before_step fired {len(cb.grad_max)} times, want {n}"
    assert max(cb.grad_max) == 0.0, f"backward did not use the rebound loss_grad: max |grad| {max(cb.grad_max):.3g}"
    assert min(cb.losses) > 0.0, f"learn.loss (for logging) should keep the real loss: {cb.losses}"
    assert torch.equal(_flat(learn.model.parameters()), init), "weights moved with a zero loss_grad"
    return f"{n} steps, zero grads, weights unchanged"


def check_get_preds(tmp_path: Path, accelerator: str = "gpu") -> str:
    """get_preds on the accelerator equals the CPU model's output on the validation set.

    Example:
        >>> # check_get_preds(tmp_path)  -> 'max |diff| 3e-07 on 64 items'
    """
    data = make_data()
    learn = make_learner(tmp_path, data=data, **_options(accelerator))
    learn.fit(1)
    preds, targs = learn.get_preds()
    assert learn.trainer.strategy.root_device.type == _device_type(accelerator), learn.trainer.strategy.root_device
    x, y = data.valid_ds.tensors  # type: ignore[attr-defined]
    model = learn.model.cpu().eval()
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(targs.cpu(), y), "get_preds targets are not the validation targets in order"
    diff = float((preds.float().cpu() - expected).abs().max())
    assert preds.shape == expected.shape and diff < PREDS_TOL, f"get_preds differs from the CPU model: {diff:.3g}"
    return f"max |diff| {diff:.1e} on {len(y)} items"


# -- throughput -----------------------------------------------------------------------------------
class _EpochTimer(pl.Callback):
    """Per-batch time of each epoch's training batches: first batch start to last batch end."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.per_batch: list[float] = []
        self._t0 = 0.0

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self._t0 = self._now()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = trainer.num_training_batches
        if batch_idx == n - 1:
            self.per_batch.append((self._now() - self._t0) / n)


class _Bare(pl.LightningModule):
    """A plain automatic-optimization LightningModule: the baseline."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr
        self.loss_func = nn.CrossEntropyLoss()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return self.loss_func(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return Adam(self.model.parameters(), lr=self.lr)


def _mlp(n_in: int, hidden: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 2))


#: name -> (data kwargs, model kwargs)
WORKLOADS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "small MLP": ({"n": 4096, "n_valid": 256, "n_in": 8, "bs": 64}, {"n_in": 8, "hidden": 16, "depth": 1}),
    "compute-bound MLP": (
        {"n": 8192, "n_valid": 512, "n_in": 1024, "bs": 512},
        {"n_in": 1024, "hidden": 4096, "depth": 3},
    ),
}


def compare_throughput(
    tmp_path: Path, workload: str = "small MLP", accelerator: str = "gpu", epochs: int = 4
) -> dict[str, float]:
    """Per-batch training time of ``Learner.fit`` and of a bare Lightning module (no assert on speed).

    The same model and batches; the first epoch is the warm-up, the median over the others
    is reported. Returns ``learner_s``, ``bare_s``, ``ratio`` (learner / bare), ``n_batches``.

    Example:
        >>> # compare_throughput(tmp_path)["ratio"]  -> 1.3
    """
    data_kw, model_kw = WORKLOADS[workload]
    data = make_data(**data_kw)
    sync = accelerator == "gpu"
    learn_timer, bare_timer = _EpochTimer(sync), _EpochTimer(sync)
    learn = make_learner(tmp_path, data=data, model=_mlp(**model_kw), **_options(accelerator))
    learn.fit(epochs, cbs=[learn_timer])
    bare = _Bare(_mlp(**model_kw), lr=learn.lr)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[bare_timer],
        **QUIET,
    )
    trainer.fit(bare, train_dataloaders=data.train)
    for name, timer in (("Learner", learn_timer), ("bare", bare_timer)):
        assert len(timer.per_batch) == epochs, f"{name}: timed {len(timer.per_batch)} epochs of {epochs}"
    learner_s = statistics.median(learn_timer.per_batch[1:])
    bare_s = statistics.median(bare_timer.per_batch[1:])
    return {
        "learner_s": learner_s,
        "bare_s": bare_s,
        "ratio": learner_s / bare_s,
        "n_batches": float(learn.n_iter_per_epoch()),
    }


# -- DDP on every visible device ---------------------------------------------------------------------


def check_ddp(tmp_path: Path, n_devices: int, accelerator: str = "gpu", timeout: float = 240) -> str:
    """``ddp`` on ``n_devices``: identical weights, and a CancelBatch on rank 1 only neither hangs nor diverges.

    Example:
        >>> # check_ddp(tmp_path, torch.cuda.device_count())  -> '2 ranks: identical weights, 6 and 5 steps'
    """
    results = run_script("gpu_ddp", tmp_path, accelerator, str(int(n_devices)), timeout=timeout)
    assert [r["rank"] for r in results] == list(range(n_devices)), [r["rank"] for r in results]
    for name, want_steps in (("plain", 6), ("cancel", 5)):
        first = results[0][name]
        for r in results:
            got = r[name]
            assert got["steps"] == want_steps, f"{name}: rank {r['rank']} took {got['steps']} steps, want {want_steps}"
            assert got["weights"] == first["weights"], f"{name}: rank {r['rank']} weights differ from rank 0"
            assert got["device"].startswith(_device_type(accelerator)), got["device"]
    cancel = [r["cancel"] for r in results]
    assert cancel[1]["fired"] and not cancel[0]["fired"], "the cancel was not raised on rank 1 only"
    for r, c in enumerate(cancel):
        assert c["cancel_events"] == ["after_cancel_batch"], f"rank {r}: {c['cancel_events']}"
    return f"{n_devices} ranks: identical weights, 6 steps plain, 5 with a cancel on rank 1"

"""The GPU checks of sharded training, shared by ``tests/gpu/test_gpu.py`` and ``scripts/gpu_check.py``.

- :func:`check_fsdp2_one_device`: FSDP2 (``ModelParallelStrategy``, the Learner's ``fully_shard``
  policy) on one device against the same fit under ``strategy="ddp"`` on one device (unsharded,
  same distributed sampler, so the same batches): weights, GradientClip's norm at every step,
  ``learn.save`` (gathered) loading into an unsharded Learner, ``learn.load`` into the sharded
  model, ``get_preds``. It runs in a process of its own (``tests/scripts/gpu_fsdp.py``): a
  one-device ``ModelParallelStrategy`` or ``ddp`` fit leaves a process group open and
  ``LOCAL_RANK`` / ``MASTER_PORT`` set, which a later 2-process launch would inherit.
- :func:`check_fsdp1_refused`: FSDP1 (``strategy="fsdp"``, which Lightning accepts only on a GPU)
  is refused by the Learner before a Trainer is built (see ``bridge.sharding.check_strategy``).

``accelerator="cpu"`` runs the same code on CPU (gloo), as ``scripts/gpu_check.py --accelerator cpu`` does.

Example:
    >>> # from tests.gpu.sharded_checks import check_fsdp2_one_device; print(check_fsdp2_one_device(tmp_path))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from bridge import SGD, Callback, Learner
from bridge.sharding import is_sharded
from callbacks import GradientClip
from tests.helpers import make_data, make_learner, make_model, run_script

__all__ = ["FSDP2_TOL", "check_fsdp1_refused", "check_fsdp2_one_device", "fsdp2_one_device"]

#: Max abs difference between the FSDP2 and the unsharded run (weights, norms, predictions).
FSDP2_TOL = 1e-5


class _Norms(Callback):
    """GradientClip's measured norm at every step (after it: GradientClip's order is 11)."""

    order = 12

    def __init__(self, clip: GradientClip) -> None:
        self.clip = clip
        self.norms: list[float] = []

    def before_step(self) -> None:
        assert self.clip.total_norm is not None, "GradientClip measured no norm"
        self.norms.append(float(self.clip.total_norm))


def _full_weights(learn: Learner) -> dict[str, torch.Tensor]:
    """The whole state of the model, on CPU (gathered when it is sharded)."""
    if is_sharded(learn.model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = get_model_state_dict(learn.model, options=opts)
        return {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.detach().cpu() for k, v in learn.model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _fit(tmp_path: Path, accelerator: str, strategy: Any) -> tuple[Learner, list[float]]:
    clip = GradientClip(max_norm=0.1)
    norms = _Norms(clip)
    data = make_data(n=256, n_valid=64, bs=32)
    learn = make_learner(tmp_path, data=data, opt_func=SGD, lr=0.2, cbs=[clip, norms], accelerator=accelerator)
    learn.fit(2, strategy=strategy, devices=1)
    learn.trainer_options.update(strategy=strategy, devices=1)  # get_preds on the same strategy
    return learn, norms.norms


def check_fsdp2_one_device(tmp_path: Path, accelerator: str = "gpu", timeout: float = 300) -> str:
    """:func:`fsdp2_one_device` in a fresh process (``tests/scripts/gpu_fsdp.py``); its summary.

    Example:
        >>> # check_fsdp2_one_device(tmp_path)  -> 'weights 0e+00, 16 clip norms 0e+00, preds 0e+00 vs ddp'
    """
    (result,) = run_script("gpu_fsdp", tmp_path, accelerator, timeout=timeout)
    summary: str = result["summary"]
    return summary


def fsdp2_one_device(tmp_path: Path, accelerator: str = "gpu") -> str:
    """FSDP2 on one device equals the unsharded run; save gathers, load shards, get_preds agrees.

    Example:
        >>> # fsdp2_one_device(tmp_path, "cpu")  -> 'weights 0e+00, 16 clip norms 0e+00, preds 0e+00 vs ddp'
    """
    fsdp2 = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    sharded, sharded_norms = _fit(tmp_path / "fsdp2", accelerator, fsdp2)
    plain, plain_norms = _fit(tmp_path / "ddp", accelerator, "ddp")
    assert is_sharded(sharded.model) and not is_sharded(plain.model), "the FSDP2 model is not sharded"
    device = next(sharded.model.parameters()).device.type
    assert device == ("cuda" if accelerator == "gpu" else "cpu"), f"the sharded model is on {device}"
    weights = _full_weights(sharded)
    w_diff = _max_diff(weights, _full_weights(plain))
    assert w_diff < FSDP2_TOL, f"FSDP2 weights differ from the unsharded run's by {w_diff:.3g}"
    assert len(sharded_norms) == len(plain_norms) == 16, (len(sharded_norms), len(plain_norms))  # 2 epochs of 8
    assert min(plain_norms) > 0.1, f"some step was not clipped: {min(plain_norms):.3g}"  # the norm shaped the fit
    n_diff = max(abs(a - b) for a, b in zip(sharded_norms, plain_norms, strict=True))
    assert n_diff < FSDP2_TOL, f"GradientClip's norm under FSDP2 differs by {n_diff:.3g}"
    # learn.save gathers the whole state; it loads into an unsharded Learner, and back into the sharded one.
    sharded.save("fsdp2")
    fresh = make_learner(tmp_path / "fsdp2", model=make_model(seed=1), opt_func=SGD, lr=0.2)
    fresh.load("fsdp2", device="cpu")
    assert _max_diff(_full_weights(fresh), weights) == 0.0, "the saved file is not the sharded model's weights"
    with torch.no_grad():
        for p in sharded.model.parameters():
            p.zero_()
    sharded.load("fsdp2")
    assert _max_diff(_full_weights(sharded), weights) == 0.0, "learn.load into the sharded model"
    preds, targs = sharded.get_preds()
    ref_preds, ref_targs = plain.get_preds()
    assert torch.equal(targs.cpu(), ref_targs.cpu()) and len(targs) == 64, "get_preds targets out of order"
    p_diff = float((preds.float().cpu() - ref_preds.float().cpu()).abs().max())
    assert p_diff < FSDP2_TOL, f"get_preds under FSDP2 differs by {p_diff:.3g}"
    return f"weights {w_diff:.0e}, {len(sharded_norms)} clip norms {n_diff:.0e}, preds {p_diff:.0e} vs ddp"


def check_fsdp1_refused(tmp_path: Path, accelerator: str = "gpu") -> str:
    """``strategy="fsdp"`` (and an ``FSDPStrategy``) is refused before any Trainer, with what to use instead.

    Example:
        >>> # check_fsdp1_refused(tmp_path)  -> "refused: 'fsdp', FSDPStrategy(...); nothing ran"
    """
    given: list[Any] = ["fsdp", FSDPStrategy()]
    for strategy in given:
        learn = make_learner(tmp_path, accelerator=accelerator, devices=1)
        before = _full_weights(learn)
        try:
            learn.fit(1, strategy=strategy)
        except ValueError as exc:
            msg = str(exc)
        else:
            raise AssertionError(f"fit(strategy={strategy!r}) ran: FSDP1 must be refused")
        assert "(Lightning's FSDPStrategy, FSDP1) is not supported" in msg, msg
        assert "ModelParallelStrategy(data_parallel_size=" in msg, msg
        assert learn.trainer is None and _max_diff(_full_weights(learn), before) == 0.0, "FSDP1 ran before the refusal"
    return "refused: 'fsdp', FSDPStrategy(...); nothing ran"

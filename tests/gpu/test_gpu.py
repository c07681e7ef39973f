"""fp16/bf16 on CUDA, ddp on every visible GPU, FSDP2 on one GPU (FSDP1 refused), throughput against bare Lightning.

Run on a GPU machine: ``python -m pytest tests/gpu -p no:cacheprovider -o addopts="" -s``
(``-s`` shows the throughput report). Every test is skipped without CUDA (see conftest).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gpu import checks, sharded_checks


def test_fp16_grads_at_before_step_are_unscaled(tmp_path: Path) -> None:
    checks.check_fp16_grads_unscaled(tmp_path)


def test_fp16_cancelled_step_then_normal_steps(tmp_path: Path) -> None:
    checks.check_fp16_cancel_step(tmp_path)


def test_bf16_learns(tmp_path: Path) -> None:
    checks.check_bf16_learns(tmp_path)


def test_bf16_loss_grad_rebound_in_after_loss_is_used(tmp_path: Path) -> None:
    checks.check_bf16_loss_grad_rebind(tmp_path)


def test_get_preds_on_gpu_equals_cpu_model(tmp_path: Path) -> None:
    checks.check_get_preds(tmp_path)


@pytest.mark.ddp
def test_ddp_on_every_visible_gpu(tmp_path: Path) -> None:
    n = torch.cuda.device_count()
    if n < 2:
        pytest.skip(f"ddp needs >= 2 GPUs, {n} visible")
    checks.check_ddp(tmp_path, n)


def test_fsdp2_on_one_gpu_equals_the_unsharded_run(tmp_path: Path) -> None:
    sharded_checks.check_fsdp2_one_device(tmp_path)


def test_fsdp1_is_refused_on_a_gpu(tmp_path: Path) -> None:
    sharded_checks.check_fsdp1_refused(tmp_path)


def test_throughput_against_bare_lightning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = checks.compare_throughput(tmp_path, "small MLP")
    assert r["n_batches"] == 64 and r["learner_s"] > 0 and r["bare_s"] > 0
    with capsys.disabled():
        print(
            f"\n[throughput, small MLP, {int(r['n_batches'])} batches/epoch]"
            f" Learner {r['learner_s'] * 1e3:.2f} ms/batch, bare Lightning {r['bare_s'] * 1e3:.2f} ms/batch,"
            f" ratio {r['ratio']:.2f} (Learner / bare)"
        )

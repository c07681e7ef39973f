"""2 CPU processes (gloo): the full event sequence on both ranks, identical weights and history."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script


@pytest.mark.ddp
def test_ddp_two_processes(tmp_path: Path) -> None:
    results = run_script("ddp_smoke", tmp_path)
    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == 2 for r in results)
    one_train = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
                 "before_step", "after_step", "after_batch"]  # fmt: skip
    one_valid = ["before_batch", "after_pred", "after_loss", "after_batch"]
    # 192 train items / 2 ranks / bs 32 = 3 batches; 64 valid items / 2 ranks / bs 32 = 1 batch
    epoch = ["before_epoch", "before_train", *one_train * 3, "after_train", "before_validate", *one_valid,
             "after_validate", "after_epoch"]  # fmt: skip
    for r in results:
        assert r["events"] == ["before_fit", *epoch * 2, "after_fit"]
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["values"] == results[1]["values"]
    assert results[0]["losses"] == results[1]["losses"] and len(results[0]["losses"]) == 6
    # The epoch values Lightning's monitoring callbacks read: the same on both ranks, the Recorder's.
    assert results[0]["callback_metrics"] == results[1]["callback_metrics"]
    assert results[0]["callback_metrics"] == {
        "train_loss": pytest.approx(results[0]["values"][-1][0], rel=1e-6),  # float32 tensors
        "valid_loss": pytest.approx(results[0]["values"][-1][1], rel=1e-6),
        "rank_mean": 0.5,  # a user's rank-dependent value: averaged over the ranks
    }
    # The article's callbacks, one rank deciding: 384 items / 2 ranks / bs 32 = 6 batches a rank.
    # Rank 1's refused 2nd batch is skipped on both ranks; rank 0's stop after 3 steps ends both passes
    # (rank 1 learns of it at the next batch's agreement point, having begun that batch: no step).
    assert [r["seed"] for r in results] == [
        {"steps": 3, "batches": 4, "valid": 1},
        {"steps": 3, "batches": 5, "valid": 1},
    ]
    assert results[0]["seed_weights"] == results[1]["seed_weights"]
    # fastai's own callbacks: EarlyStopping (min_delta 10: no epoch improves enough) stops after
    # epoch 1 on both ranks; rank 1's fastai CancelBatchException on its 2nd batch of each epoch is
    # agreed (no step there on either rank); fastai's ParamScheduler sets the same lrs on both ranks.
    fa = [r["fastai"] for r in results]
    assert fa[0]["epochs"] == fa[1]["epochs"] == 2
    assert fa[0]["steps"] == fa[1]["steps"] == 2 * (6 - 1)
    assert fa[0]["lrs"] == fa[1]["lrs"] and len(fa[0]["lrs"]) == 12
    assert fa[0]["lrs"][0] == 1e-2 and fa[0]["lrs"][-1] < fa[0]["lrs"][0]
    assert fa[0]["weights"] == fa[1]["weights"]

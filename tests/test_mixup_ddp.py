"""MixUp under 2-process DDP: each rank draws its own stream, the weights stay identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.distributions import Beta

from callbacks.mixup import _RANK_STRIDE
from tests.helpers import run_script


@pytest.mark.ddp
def test_mixup_ddp_ranks_draw_differently_and_stay_in_sync(tmp_path: Path) -> None:
    r0, r1 = run_script("mixup_ddp", tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["initial_seed"] == r1["initial_seed"] == 0
    # each rank's stream is the seeded Beta/randperm sequence for seed + stride * rank
    for r in (r0, r1):
        torch.manual_seed(r["initial_seed"] + _RANK_STRIDE * r["rank"])
        assert len(r["lams"]) == 4 * 8  # 256 samples per rank, bs 32, 4 epochs
        for lams in r["lams"]:
            lam = Beta(torch.tensor(0.4), torch.tensor(0.4)).sample((len(lams),))
            torch.randperm(len(lams))
            assert lams == torch.where(lam > 1 - lam, lam, 1 - lam).tolist()
    assert r0["lams"][0] != r1["lams"][0]
    # DDP averaged the gradients of the differently mixed shards: weights identical
    assert r0["params"] == r1["params"]
    assert r0["values"] == r1["values"]
    assert r0["values"][-1][2] > 0.85  # separable data, chance is 0.5

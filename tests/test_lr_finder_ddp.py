"""Under strategy="ddp" (2 CPU processes): lr_find agrees on every rank; the gradient tools run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_script

SCRIPT = """
import math, warnings
import torch
from torch import nn
warnings.filterwarnings("ignore")
from bridge import Callback
from bridge.distributed import global_rank
from callbacks import GradientAccumulation, GradientClip, minimum, valley
from tests.helpers import make_data, make_learner

DDP = dict(accelerator="cpu", devices=2, strategy="ddp")

class PostClip(Callback):
    order = 12  # after GradientAccumulation (6) and GradientClip (11): stepping batches only
    def before_fit(self): self.norms = []
    def before_step(self):
        g = torch.cat([p.grad.reshape(-1) for p in self.learn.model.parameters()])
        self.norms.append(float(g.norm()))

learn = make_learner(".", data=make_data(n=256, bs=16), **DDP)
w0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
res = learn.lr_find(num_it=24, end_lr=100.0, show_plot=False, suggest_funcs=(valley, minimum))
restored = all(torch.equal(w0[k], v) for k, v in learn.model.state_dict().items())
out = {"valley": res.valley, "minimum": res.minimum, "lrs": learn.recorder.lrs,
       "losses": learn.recorder.losses, "restored": restored}

post = PostClip()
learn.fit(2, lr=1e-2, cbs=[GradientAccumulation(n_acc=32), GradientClip(max_norm=0.05), post])
out["steps"] = len(post.norms)
out["max_post_norm"] = max(post.norms)
out["weights"] = torch.cat([p.detach().reshape(-1) for p in learn.model.parameters()]).tolist()
dump(out)
"""


@pytest.mark.ddp
def test_lr_find_and_grad_tools_under_ddp(tmp_path: Path) -> None:
    r0, r1 = run_script(SCRIPT, tmp_path, timeout=240)
    # one suggestion on every rank, from the same globally averaged curve
    assert r0["valley"] == r1["valley"] and r0["minimum"] == r1["minimum"]
    assert r0["losses"] == r1["losses"] and r0["lrs"] == r1["lrs"]
    n = len(r0["lrs"])
    # 8 batches per rank and epoch: the schedule spans 24 iterations (3 epochs), unless it diverged first
    assert 6 < n <= 24
    assert r0["lrs"] == pytest.approx([1e-7 * (100.0 / 1e-7) ** (i / 24) for i in range(n)], rel=1e-9)
    assert r0["restored"] and r1["restored"]
    # accumulation: 2 epochs x 8 batches of 16 per rank, one step per 32 samples -> 8 steps
    assert r0["steps"] == r1["steps"] == 8
    assert r0["max_post_norm"] <= 0.05 * 1.0001
    assert r0["weights"] == r1["weights"]

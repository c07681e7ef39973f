"""``test_lr_finder_ddp``: ``lr_find`` then a fit with GradientAccumulation and GradientClip, on 2 ranks."""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch

from bridge import Callback
from callbacks import GradientAccumulation, GradientClip, Recorder, minimum, valley
from tests.ddp_scripts._common import dump, flat_params, named_cb, run
from tests.helpers import make_data, make_learner

DDP: dict[str, Any] = dict(accelerator="cpu", devices=2, strategy="ddp")


class PostClip(Callback):
    """Records the gradient norm each optimizer step sees."""

    order = 12  # after GradientAccumulation (6) and GradientClip (11): stepping batches only

    def before_fit(self) -> None:
        self.norms: list[float] = []

    def before_step(self) -> None:
        g = torch.cat([cast(torch.Tensor, p.grad).reshape(-1) for p in self.model.parameters()])
        self.norms.append(float(g.norm()))


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    learn = make_learner(".", data=make_data(n=256, bs=16), **DDP)
    w0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(num_it=24, end_lr=100.0, show_plot=False, suggest_funcs=(valley, minimum))
    restored = all(torch.equal(w0[k], v) for k, v in learn.model.state_dict().items())
    recorder = named_cb(learn, "recorder", Recorder)
    out: dict[str, Any] = {"valley": res.valley, "minimum": res.minimum, "lrs": recorder.lrs,
                           "losses": recorder.losses, "restored": restored}  # fmt: skip

    post = PostClip()
    learn.fit(2, lr=1e-2, cbs=[GradientAccumulation(n_acc=32), GradientClip(max_norm=0.05), post])
    out["steps"] = len(post.norms)
    out["max_post_norm"] = max(post.norms)
    out["weights"] = flat_params(learn.model)
    dump(out)


if __name__ == "__main__":
    run(main)

"""``test_ddp_guarantees`` (ddp_spawn): fit and lr_find under ``ddp_spawn``; what comes back to the caller."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks import Recorder, SaveModelCallback
from tests.ddp_scripts._common import dump, named_cb, run
from tests.helpers import make_data, make_learner


def main(argv: list[str]) -> None:
    learn = make_learner(".", data=make_data(n=128, n_valid=64, bs=16), cbs=[SaveModelCallback(fname="best")], lr=1e-2)
    steps = ModelCheckpoint(dirpath="steps", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    learn.fit(3, accelerator="cpu", devices=2, strategy="ddp_spawn", cbs=[steps])  # the callbacks pickle
    best = torch.load("models/best.pth", weights_only=True)
    step_files = sorted(os.listdir("steps"))
    values, save_best = (
        named_cb(learn, "recorder", Recorder).values,
        named_cb(learn, "save_model", SaveModelCallback).best,
    )
    suggestion = learn.lr_find(num_it=12, show_plot=False, accelerator="cpu", devices=2, strategy="ddp_spawn")
    dump(
        {
            "values": values,
            "lr_find_losses": len(named_cb(learn, "recorder", Recorder).losses),
            "best_equal": all(torch.equal(best[k], v) for k, v in learn.model.state_dict().items()),
            "best_epoch_value": min(v[1] for v in values),
            "save_best": save_best,
            "valley": suggestion.valley if suggestion is not None else None,
            "step_files": step_files,
        },
        rank=0,
    )


if __name__ == "__main__":
    run(main)

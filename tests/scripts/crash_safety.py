"""``test_crash_safety``: ``fit(ARGV[0], resume=True)`` saving a checkpoint every 3 steps, a model and the CSV every epoch.

The test kills it at random moments; the file ``training`` appears when training starts, ``finished`` when fit returns.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from bridge import Callback
from callbacks import CSVLogger, SaveModelCallback
from tests.ddp_scripts._common import run
from tests.helpers import make_data, make_learner


class Ready(Callback):
    """Touches ``training`` at ``before_train``."""

    def before_train(self) -> None:
        Path("training").touch()  # the parent starts its random delay from here


def main(argv: list[str]) -> None:
    n_epoch = int(argv[0])
    model = nn.Sequential(nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 2))
    learn = make_learner(
        ".",
        data=make_data(n=384, n_valid=64, bs=16),
        model=model,
        cbs=[SaveModelCallback(every_epoch=True), CSVLogger(), Ready()],
    )
    ckpt = ModelCheckpoint(
        dirpath=str(learn.checkpoint_dir), filename="last", every_n_train_steps=3, enable_version_counter=False
    )
    learn.fit(n_epoch, resume=True, cbs=[ckpt])
    Path("finished").touch()


if __name__ == "__main__":
    run(main)

"""``test_interop``: a 3-epoch fit with the default progress-bar setting, writing under ARGV[0]; prints ``done``."""

from __future__ import annotations

from torch import nn

from bridge import Learner
from tests.ddp_scripts._common import run
from tests.helpers import make_data, make_model


def main(argv: list[str]) -> None:
    path = argv[0]
    learn = Learner(make_data(), make_model(), loss_func=nn.CrossEntropyLoss(), logger=False, path=path)
    learn.fit(3)  # the default progress bar setting
    print("done", flush=True)


if __name__ == "__main__":
    run(main)

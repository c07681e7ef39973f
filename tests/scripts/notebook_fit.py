"""``test_ddp_notebook``: fed to ``python -`` on stdin (no script file to re-run, as in a notebook cell).

``strategy="ddp_notebook"`` forks the 2 workers from this process; prints one JSON line at the end.
"""

from __future__ import annotations

import json

import torch

from bridge import SGD
from tests.helpers import make_data, make_learner


def main() -> None:
    learn = make_learner("nb", data=make_data(n=256, n_valid=64, bs=32), opt_func=SGD, lr=0.2)
    before = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
    learn.fit(2, accelerator="cpu", devices=2, strategy="ddp_notebook")
    after = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
    n_values = len(learn.recorder.values)  # shipped back from the forked workers
    preds, targs = learn.get_preds()
    print("RESULT", json.dumps({"changed": float((after - before).abs().max()), "targs": targs.tolist(),
                                "n_preds": len(preds), "values": n_values}))  # fmt: skip


if __name__ == "__main__":  # stdin runs as __main__; pytest's doctest collection only imports it
    main()

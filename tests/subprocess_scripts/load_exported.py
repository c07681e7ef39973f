"""A fresh process loads an export whose model class it cannot import, and saves its predictions.

Run as ``python -m tests.subprocess_scripts.load_exported EXPORT INPUTS OUT MODULE``: ``INPUTS``
is a ``torch.save``-d tensor of items, ``MODULE`` the name of the module that defined the
model's class (which must not be importable here).
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from bridge import load_learner


def main(export: str, inputs: str, out: str, module: str) -> None:
    importable = importlib.util.find_spec(module) is not None or module in sys.modules
    learn = load_learner(export)
    x = torch.load(inputs, weights_only=True)
    preds, targs = learn.get_preds(dl=learn.test_dl(x))
    again, _ = learn.get_preds(dl=learn.test_dl(x, bs=7))
    name, index, probs = learn.predict(x[0])
    torch.save(
        {
            "importable": importable,
            "preds": preds,
            "again": again,
            "n_targs": targs.numel(),
            "name": name,
            "index": index,
            "probs": probs,
        },
        out,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])

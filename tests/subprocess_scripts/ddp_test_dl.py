"""Two gloo processes: ``test_dl`` + ``get_preds`` under DDP, interpretation, export and load on each rank.

Run as ``python -m tests.subprocess_scripts.ddp_test_dl`` in an empty folder; Lightning starts
the second rank by running the same module. Each rank writes ``result_rank{r}.json``.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path

import torch
import torch.distributed as dist

from bridge import ClassificationInterpretation, load_learner
from tests.helpers import make_data, make_learner

N_ITEMS = 37  # odd: the two ranks' shares differ in length


def _close_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    atexit.register(_close_group)
    learn = make_learner(
        ".", data=make_data(n=64, n_valid=21, bs=8), lr=1e-2, accelerator="cpu", devices=2, strategy="ddp"
    )
    learn.fit(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.randn(N_ITEMS, 8, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    preds, targs = learn.get_preds(dl=learn.dls.test_dl(x))
    labelled, labels = learn.get_preds(dl=learn.test_dl((x, y), with_labels=True))
    interp = ClassificationInterpretation.from_learner(learn, dl=learn.test_dl((x, y), with_labels=True))
    learn.export(f"rank{rank}.pt2")  # only rank 0 writes: rank1.pt2 must not appear
    exported = load_learner(learn.path / "rank0.pt2")
    loaded, _ = exported.get_preds(dl=exported.test_dl(x))
    model = learn.model.eval()
    with torch.no_grad():
        expected = model(x)  # a plain forward over all items, with this rank's (identical) weights
    result = {
        "rank": rank,
        "world": world,
        "x": x.tolist(),
        "preds": preds.tolist(),
        "n_targs": targs.numel(),
        "labelled": labelled.tolist(),
        "labels": labels.tolist(),
        "expected": expected.tolist(),
        "cm": interp.confusion_matrix().tolist(),
        "files": sorted(p.name for p in Path(".").glob("rank*.pt2")),
        "loaded": loaded.tolist(),
    }
    Path(f"result_rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    main()

"""Names every doctest in ``bridge/`` and ``callbacks/`` may use: ``learn``, ``torch``, ``nn``.

``learn`` is a tiny quiet Learner, built fresh (in its own temporary directory) for each doctest:
32 items of 2 features and 2 classes, batches of 16, ``nn.Linear(2, 2)``, cross-entropy,
no logger, no progress bar, no checkpoint. One ``learn.fit(1)`` takes a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _pytest.doctest import DoctestItem
from torch import nn
from torch.utils.data import TensorDataset


def tiny_learner(path: Path) -> Any:
    """A Learner on 32 separable 2-feature items (label = sign of the first feature), bs 16."""
    from bridge import DataBunch, Learner

    x = torch.randn(32, 2)
    ds = TensorDataset(x, (x[:, 0] > 0).long())
    data = DataBunch.from_datasets(ds, ds, bs=16)
    return Learner(
        data,
        nn.Linear(2, 2),
        loss_func=nn.CrossEntropyLoss(),
        path=path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    if not isinstance(request.node, DoctestItem):
        return
    torch.manual_seed(0)
    path: Path = request.getfixturevalue("tmp_path")
    doctest_namespace.update(learn=tiny_learner(path), torch=torch, nn=nn)

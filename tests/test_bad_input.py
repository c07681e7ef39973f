"""Bad input gets a clear error (type and a message naming the argument) before training starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from bridge import DataBunch, Learner
from callbacks import Recorder
from tests.helpers import make_data, make_learner, make_model

DS = TensorDataset(torch.randn(8, 8), torch.zeros(8, dtype=torch.long))
EMPTY = TensorDataset(torch.randn(0, 8), torch.zeros(0, dtype=torch.long))


class NoEvents:
    def hello(self) -> None: ...


CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("databunch_list", lambda p: DataBunch([1, 2], DataLoader(DS)), TypeError, "train_dl.*DataLoader.*list"),
    ("databunch_empty", lambda p: DataBunch(DataLoader(EMPTY), DataLoader(DS)), ValueError, "train_dl.*empty"),
    ("from_datasets_type", lambda p: DataBunch.from_datasets(42, DS), TypeError, "train_ds.*Dataset.*int"),
    ("from_datasets_empty", lambda p: DataBunch.from_datasets(DS, EMPTY), ValueError, "valid_ds.*empty"),
    ("from_datasets_bs", lambda p: DataBunch.from_datasets(DS, DS, bs=0), ValueError, "`bs`.*>= 1.*0"),
    ("data_type", lambda p: Learner(DS, make_model(), loss_func=nn.MSELoss()), TypeError, "`data`.*DataBunch"),
    ("model_type", lambda p: Learner(make_data(), "resnet", loss_func=nn.MSELoss()), TypeError, "`model`.*str"),
    ("model_no_params", lambda p: Learner(make_data(), nn.ReLU(), loss_func=nn.MSELoss()), ValueError, "no parameters"),
    ("loss_not_callable", lambda p: Learner(make_data(), make_model(), loss_func="mse"), TypeError, "`loss_func`.*str"),
    ("loss_missing", lambda p: Learner(make_data(), make_model()), TypeError, "`loss_func`.*NoneType"),
    ("cb_no_events", lambda p: make_learner(p, cbs=[NoEvents()]), TypeError, "NoEvents defines no known event"),
    ("metric_kind", lambda p: make_learner(p, metrics=[0.5]), TypeError, r"metrics\[0\].*float"),
    ("metric_class", lambda p: make_learner(p, metrics=[MulticlassAccuracy]), TypeError, r"metrics\[0\].*class"),
    ("metric_other_class", lambda p: make_learner(p, metrics=[Recorder]), TypeError, r"metrics\[0\].*class Recorder"),
    ("lr_negative", lambda p: make_learner(p, lr=-1), ValueError, "`lr`.*-1"),
    ("wd_negative", lambda p: make_learner(p, wd=-0.1), ValueError, "`wd`.*-0.1"),
    ("trainer_unknown", lambda p: make_learner(p, devcies=2), TypeError, "unknown keyword `devcies`"),
    ("trainer_reserved", lambda p: make_learner(p, max_epochs=3), ValueError, "max_epochs.*fit\\(n_epoch\\)"),
    ("clip_reserved", lambda p: make_learner(p, gradient_clip_val=1.0), ValueError, "GradientClip"),
    ("fit_zero", lambda p: make_learner(p).fit(0), ValueError, "`n_epoch`.*>= 1.*0"),
    ("fit_negative", lambda p: make_learner(p).fit(-2), ValueError, "`n_epoch`.*-2"),
    ("fit_float", lambda p: make_learner(p).fit(1.5), ValueError, "`n_epoch`.*1.5"),
    ("fit_lr", lambda p: make_learner(p).fit(1, lr=float("nan")), ValueError, "`lr`"),
    ("fit_unknown", lambda p: make_learner(p).fit(1, precison="bf16"), TypeError, "unknown keyword `precison`"),
    (
        "opt_func_result",
        lambda p: make_learner(p, opt_func=lambda ps, lr: None).fit(1),
        TypeError,
        "opt_func.*NoneType",
    ),
    ("load_missing", lambda p: make_learner(p).load("nope"), FileNotFoundError, "nope.pth"),
]


@pytest.mark.parametrize("name,make,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, name: str, make: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make(tmp_path)


def test_load_other_architecture_lists_keys(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    learn.save("small", with_opt=False)
    other = make_learner(tmp_path, model=nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2)))
    with pytest.raises(RuntimeError, match=r"(?s)small.pth.*Missing key.*3.weight"):
        other.load("small")


def test_load_truncated_file_names_it(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    path = learn.save("ok")
    data = path.read_bytes()
    (path.parent / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pth"):
        learn.load("cut")

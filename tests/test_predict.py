"""Decoded predict (fastai's triple, or the raw output), loss decodings, and test_dl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from bridge import DataBunch, Learner, load_learner
from bridge.decode import Decoding, decoding_for
from tests.digits import NAMES, digits_learner
from tests.helpers import QUIET, make_data, make_learner


def _valid_x(learn: Learner) -> Tensor:
    return torch.cat([b[0] for b in learn.dls.valid_dl])


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Learner, Tensor, Tensor]:
    return digits_learner(tmp_path_factory.mktemp("digits"))


# -- predict ---------------------------------------------------------------------------------------


def test_predict_on_a_digits_image(digits: tuple[Learner, Tensor, Tensor], tmp_path: Path) -> None:
    learn, xv, yv = digits
    preds, targs = learn.get_preds()
    assert torch.equal(targs, yv) and (preds.argmax(1) == yv).float().mean() > 0.9
    right = int((preds.argmax(1) == yv).nonzero()[0])
    wrong = int((preds.argmax(1) != yv).nonzero()[0])
    model = learn.model.eval()
    loaded = load_learner(learn.export(tmp_path / "digits.pt2"))
    for learner in (learn, loaded):
        name, index, probs = learner.predict(xv[right])
        assert name == NAMES[int(yv[right])] and int(index) == int(yv[right])
        assert abs(float(probs.sum()) - 1.0) < 1e-6
        with torch.no_grad():
            by_hand = model(xv[right : right + 1])[0].softmax(-1)
        torch.testing.assert_close(probs, by_hand, rtol=0, atol=1e-6)
        name, index, _ = learner.predict((xv[wrong], yv[wrong]))  # a dataset element: its input is used
        assert name == NAMES[int(preds[wrong].argmax())] != NAMES[int(yv[wrong])]
    with pytest.raises(ValueError, match=r"input 0 holds items of shape \(64,\) and dtype float32.*\(8, 8\)"):
        loaded.predict(xv[0].flatten())


def test_predict_without_a_decoding_is_the_raw_output(tmp_path: Path) -> None:
    data = make_data(n=32, n_valid=16, bs=8)
    learn = make_learner(tmp_path, data=data, loss_func=lambda p, y: F.mse_loss(p[:, 0], y.float()))
    x = _valid_x(learn)
    with torch.no_grad():
        expected = learn.model.eval()(x[:1])[0]
    torch.testing.assert_close(learn.predict(x[0]), expected, rtol=0, atol=1e-6)
    mse = make_learner(tmp_path, data=data, loss_func=nn.MSELoss())
    assert decoding_for(mse.loss_func) is None and isinstance(mse.predict(x[0]), Tensor)


def test_predict_multi_label_with_bce(tmp_path: Path) -> None:
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    y = torch.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 2] > 0], 1).float()
    ds = TensorDataset(x, y)
    ds.vocab = ["a", "b", "c"]  # type: ignore[attr-defined]
    learn = Learner(
        DataBunch.from_datasets(ds, ds, bs=8), nn.Linear(8, 3), nn.BCEWithLogitsLoss(), path=tmp_path, **QUIET
    )
    with torch.no_grad():
        probs_by_hand = torch.sigmoid(learn.model(x[:1]))[0]
    for learner in (learn, load_learner(learn.export())):
        names, mask, probs = learner.predict(x[0])
        torch.testing.assert_close(probs, probs_by_hand, rtol=0, atol=1e-6)
        assert torch.equal(mask, probs_by_hand > 0.5)
        assert names == [n for n, hit in zip("abc", (probs_by_hand > 0.5).tolist(), strict=True) if hit]


class CrossEntropyLossFlat:
    """Stands for fastai's (recognised by name, as fastai need not be installed)."""

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        return F.cross_entropy(pred, targ)


class _OwnDecoding:
    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        return F.cross_entropy(pred, targ)

    def activation(self, x: Tensor) -> Tensor:
        return x.softmax(-1)

    def decodes(self, x: Tensor) -> Tensor:
        return x.argmin(-1)  # deliberately not argmax: shows that the loss's own method is used


def test_fastai_and_custom_decodings(tmp_path: Path) -> None:
    assert decoding_for(CrossEntropyLossFlat()) == Decoding("softmax", "argmax", axis=-1)
    assert decoding_for(F.cross_entropy) == Decoding("softmax", "argmax", axis=1)
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=16, bs=8), loss_func=_OwnDecoding())
    x = _valid_x(learn)
    with torch.no_grad():
        out = learn.model.eval()(x[:1])[0]
    assert learn.predict(x[0])[0] == int(out.argmin())
    with pytest.raises(ValueError, match=r"_OwnDecoding.*cannot be written as plain data.*pickle=True"):
        learn.export()
    loaded = load_learner(learn.export(pickle=True), trusted=True)
    assert loaded.predict(x[0])[0] == int(out.argmin())


# -- test_dl ---------------------------------------------------------------------------------------


def test_test_dl_is_built_like_the_validation_loader(tmp_path: Path) -> None:
    data = make_data(n=32, n_valid=20, bs=8)
    learn = make_learner(tmp_path, data=data)
    x = torch.randn(11, 8)
    dl = data.test_dl(x)
    assert dl.batch_size == data.valid_dl.batch_size == 8 and dl.collate_fn is data.valid_dl.collate_fn
    assert [len(b[0]) for b in dl] == [8, 3]
    preds, targs = learn.get_preds(dl=learn.test_dl(x))
    with torch.no_grad():
        torch.testing.assert_close(preds, learn.model.eval()(x), rtol=0, atol=1e-6)
    assert targs.numel() == 0
    y = torch.arange(11) % 2
    _, targs = learn.get_preds(dl=learn.test_dl((x, y), with_labels=True, bs=4))
    assert torch.equal(targs, y)
    assert len(learn.test_dl(list(x)).dataset) == 11 and data.test_dl(x.numpy()).batch_size == 8


@pytest.mark.parametrize(
    ("items", "kw", "error", "match"),
    [
        ("abc", {}, TypeError, r"`items` must be a torch Dataset.*got str"),
        (torch.zeros(0, 8), {}, ValueError, r"`items` is empty"),
        (torch.zeros(4, 8), {"with_labels": True}, ValueError, r"with_labels=True needs items of the 1 input"),
        ((torch.zeros(4, 8), torch.zeros(4)), {}, ValueError, r"with_labels=False takes items of the 1 input"),
        ((torch.zeros(4, 8), torch.zeros(3)), {}, ValueError, r"same length, got \[4, 3\]"),
        (torch.zeros(4, 8), {"bs": 0}, ValueError, r"`bs` must be an int >= 1 or None, got 0"),
        (torch.zeros(4, 8), {"with_labels": "no"}, TypeError, r"`with_labels` must be a bool"),
    ],
)
def test_test_dl_bad_input(items: Any, kw: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make_data(n=16, n_valid=8).test_dl(items, **kw)


def test_the_given_test_loader_is_dls_test(tmp_path: Path) -> None:
    ds = TensorDataset(torch.randn(12, 8), torch.randint(0, 2, (12,)))
    test = DataLoader(ds, batch_size=4)
    data = DataBunch(DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4), test_dl=test)
    assert data.test is test and data[2] is test and data.test_dataloader() is test
    assert callable(data.test_dl) and DataBunch.from_datasets(ds, ds, test_ds=ds).test is not None
    assert make_data(n=16, n_valid=8).test is None

"""ClassificationInterpretation against numbers computed here from get_preds; figures rendered to PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from torch import Tensor, nn
from torch.nn import functional as F

from bridge import ClassificationInterpretation, Learner, load_learner
from tests.digits import NAMES, digits_learner
from tests.helpers import make_data, make_learner


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Learner, Tensor, Tensor]:
    return digits_learner(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def interp(digits: tuple[Learner, Tensor, Tensor]) -> ClassificationInterpretation:
    return ClassificationInterpretation.from_learner(digits[0])


@pytest.fixture(scope="module")
def by_hand(digits: tuple[Learner, Tensor, Tensor]) -> tuple[Tensor, Tensor, np.ndarray]:
    """Raw predictions, targets and the confusion matrix counted here, item by item."""
    raw, targs = digits[0].get_preds()
    cm = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(targs.tolist(), raw.argmax(1).tolist(), strict=True):
        cm[t, p] += 1
    return raw, targs, cm


def _png(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    buf.seek(0)
    return imread(buf)


def test_confusion_matrix_equals_one_counted_by_hand(interp: ClassificationInterpretation, by_hand: tuple) -> None:
    raw, targs, cm = by_hand
    got = interp.confusion_matrix()
    assert got.shape == (10, 10) and np.array_equal(got, cm)
    assert got.sum() == len(targs) and np.trace(got) < len(targs)  # something is confused: the test can fail
    torch.testing.assert_close(interp.preds, raw.softmax(1), rtol=0, atol=1e-6)
    assert interp.vocab == NAMES and torch.equal(interp.targs, targs)


@pytest.mark.parametrize("min_val", [1, 2])
def test_most_confused_by_hand(interp: ClassificationInterpretation, by_hand: tuple, min_val: int) -> None:
    _, _, cm = by_hand
    cells = [
        (NAMES[i], NAMES[j], int(cm[i, j])) for i in range(10) for j in range(10) if i != j and cm[i, j] >= min_val
    ]
    expected = sorted(cells, key=lambda c: -c[2])  # stable: ties stay in row-major order
    assert expected and interp.most_confused(min_val) == expected


def test_top_losses_by_hand(interp: ClassificationInterpretation, by_hand: tuple) -> None:
    raw, targs, _ = by_hand
    losses = F.cross_entropy(raw, targs, reduction="none")
    values, indices = interp.top_losses(5)
    torch.testing.assert_close(values, losses.sort(descending=True).values[:5], rtol=0, atol=1e-6)
    torch.testing.assert_close(losses[indices], values, rtol=0, atol=1e-6)
    values, indices = interp.top_losses(3, largest=False)
    torch.testing.assert_close(values, losses.sort().values[:3], rtol=0, atol=1e-6)
    assert len(interp.top_losses()[0]) == len(targs)
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1, 397\] or None, got 0"):
        interp.top_losses(0)


def test_a_labelled_test_dl_gives_the_same(digits: tuple[Learner, Tensor, Tensor], by_hand: tuple) -> None:
    learn, xv, yv = digits
    again = ClassificationInterpretation.from_learner(learn, dl=learn.test_dl((xv, yv), with_labels=True))
    assert np.array_equal(again.confusion_matrix(), by_hand[2])
    with pytest.raises(ValueError, match=r"no targets.*with_labels=True"):
        ClassificationInterpretation.from_learner(learn, dl=learn.test_dl(xv))


def test_the_shuffled_training_set_is_read_in_dataset_order(digits: tuple[Learner, Tensor, Tensor]) -> None:
    learn = digits[0]
    interp = ClassificationInterpretation.from_learner(learn, ds_idx=0)
    x, y = learn.dls.train_ds.tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        raw = learn.model.eval()(x)
    assert torch.equal(interp.targs, y)
    torch.testing.assert_close(interp.losses, F.cross_entropy(raw, y, reduction="none"), rtol=0, atol=1e-5)


def test_plot_confusion_matrix(interp: ClassificationInterpretation, by_hand: tuple) -> None:
    cm = by_hand[2]
    fig = interp.plot_confusion_matrix(figsize=(6, 6))
    image = _png(fig)
    assert image.shape == (300, 300, 4)  # 6 x 6 inches at 50 dpi
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Confusion matrix", "Predicted", "Actual")
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES == [t.get_text() for t in ax.get_yticklabels()]
    assert len(ax.images) == 1 and np.array_equal(ax.images[0].get_array(), cm)
    assert len(ax.texts) == 100
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert cells == {(i, j): int(cm[i, j]) for i in range(10) for j in range(10)}  # (row, column) = (actual, predicted)
    normalized = interp.plot_confusion_matrix(normalize=True).axes[0]
    rows = np.zeros(10)
    for t in normalized.texts:
        rows[round(t.get_position()[1])] += float(t.get_text())
    np.testing.assert_allclose(rows, np.ones(10), atol=0.06)  # 10 cells per row, each rounded to 2 decimals


def test_plot_top_losses(interp: ClassificationInterpretation, by_hand: tuple) -> None:
    raw, targs, _ = by_hand
    losses = F.cross_entropy(raw, targs, reduction="none")
    order = losses.argsort(descending=True)[:4].tolist()
    probs = raw.softmax(1)
    titles = [
        f"{NAMES[int(raw[i].argmax())]}/{NAMES[int(targs[i])]} / {float(losses[i]):.2f} / {float(probs[i].max()):.2f}"
        for i in order
    ]
    fig = interp.plot_top_losses(4)
    assert _png(fig).ndim == 3
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes] == titles
    assert fig.get_suptitle() == "Prediction/Actual/Loss/Probability"
    for ax, i in zip(fig.axes, order, strict=True):  # each shows its 8 x 8 image
        assert len(ax.images) == 1 and ax.images[0].get_array().shape == (8, 8)
        np.testing.assert_allclose(ax.images[0].get_array(), digits_image(interp, i))
    assert len(interp.plot_top_losses(3).axes) == 3  # a 2 x 2 grid with one cell left out


def digits_image(interp: ClassificationInterpretation, i: int) -> np.ndarray:
    return interp.dl.dataset[i][0].numpy()


def test_a_loaded_learner_has_a_confusion_matrix_but_no_losses(
    digits: tuple[Learner, Tensor, Tensor], by_hand: tuple, tmp_path: Path
) -> None:
    learn, xv, yv = digits
    loaded = load_learner(learn.export(tmp_path / "digits.pt2"))
    interp = ClassificationInterpretation.from_learner(loaded, dl=loaded.test_dl((xv, yv), with_labels=True))
    assert np.array_equal(interp.confusion_matrix(), by_hand[2]) and interp.vocab == NAMES
    with pytest.raises(ValueError, match=r"no per-item losses.*no loss function"):
        interp.top_losses(3)


def test_other_losses(tmp_path: Path) -> None:
    data = make_data(n=32, n_valid=16, bs=8)
    bce = make_learner(tmp_path, data=data, model=nn.Linear(8, 1), loss_func=nn.BCEWithLogitsLoss())
    with pytest.raises(ValueError, match="multi-label"):
        ClassificationInterpretation.from_learner(bce)
    plain = make_learner(tmp_path, data=data, loss_func=lambda p, y: F.cross_entropy(p, y))  # no reduction attribute
    interp = ClassificationInterpretation.from_learner(plain)
    raw, targs = plain.get_preds()
    torch.testing.assert_close(interp.losses, F.cross_entropy(raw, targs, reduction="none"), rtol=0, atol=1e-6)
    assert interp.vocab == [0, 1]  # no class names: the indices

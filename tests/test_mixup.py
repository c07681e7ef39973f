"""MixUp / CutMix: the mathematics against hand-computed values, validation untouched, resume, errors.

Expected draws are computed independently: torch's public ``Beta(a, a).sample`` and
``torch.randperm`` / ``torch.randint`` on the *global* generator seeded like the
callback's own (a CPU generator and the global one give the same stream for one seed).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.distributions import Beta
from torch.utils.data import TensorDataset

from bridge import Callback, DataBunch
from callbacks import CutMix, MixUp
from tests.helpers import make_data, make_learner, make_model

SEED = 123


def accuracy(pred: Tensor, y: Tensor) -> Tensor:
    return (pred.argmax(-1) == y).float().mean()


class Spy(Callback):
    """Records the clean batch (before MixUp, order 0) and what the loss saw (after it)."""

    order = -5

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def before_batch(self) -> None:
        if self.learn.training:
            self.rows.append({"x": self.learn.xb[0].cpu().clone(), "y": self.learn.yb[0].cpu().clone()})

    def after_loss(self) -> None:
        if self.learn.training:
            mix = self.learn.cbs[[type(c).__name__ for c in self.learn.cbs].index(self.kind)]
            self.rows[-1].update(
                xm=self.learn.xb[0].cpu().clone(),
                ym=self.learn.yb[0].cpu().clone(),
                pred=self.learn.pred.detach().cpu().clone(),
                loss=self.learn.loss_grad.detach().cpu().clone(),
                lam=mix.lam.cpu().clone(),
                yb1=mix.yb1[0].cpu().clone(),
                bbox=getattr(mix, "bbox", None),
            )


def spy_for(kind: str) -> Spy:
    s = Spy()
    s.kind = kind
    return s


def ref_mixup_draws(seed: int, sizes: list[int], alpha: float) -> list[tuple[Tensor, Tensor]]:
    torch.manual_seed(seed)
    out = []
    for n in sizes:
        lam = Beta(torch.tensor(alpha), torch.tensor(alpha)).sample((n,))
        lam = torch.where(lam > 1 - lam, lam, 1 - lam)
        out.append((lam, torch.randperm(n)))
    return out


def ce_by_hand(pred: Tensor, y: Tensor, eps: float = 0.0, weight: Tensor | None = None) -> Tensor:
    """Per-sample cross entropy with label smoothing and class weights, from log_softmax."""
    logp = pred.float().log_softmax(-1)
    w = torch.ones(pred.shape[-1]) if weight is None else weight
    nll = -logp.gather(1, y[:, None])[:, 0] * w[y]
    smooth = -(logp * w).sum(-1) / pred.shape[-1]
    return (1 - eps) * nll + eps * smooth


# -- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), True, "0.4"])
def test_bad_alpha(alpha: Any) -> None:
    for cls in (MixUp, CutMix):
        with pytest.raises(ValueError, match="`alpha` must be a finite number > 0"):
            cls(alpha)


def test_unreducible_loss_fails_at_before_fit(tmp_path: Path) -> None:
    batches: list[int] = []

    class Count(Callback):
        def before_batch(self) -> None:
            batches.append(1)

    learn = make_learner(tmp_path, loss_func=lambda p, y: F.cross_entropy(p, y), cbs=[MixUp(), Count()])
    with pytest.raises(TypeError, match="reduction='none'") as info:
        learn.fit(1)
    assert "<lambda>" in str(info.value)
    assert any("before_fit" in n for n in getattr(info.value, "__notes__", []))
    assert batches == []
    # an unknown reduction is refused too
    learn = make_learner(tmp_path, loss_func=nn.CrossEntropyLoss(reduction="avg"), cbs=MixUp())
    with pytest.raises(ValueError, match="reduction='avg'"):
        learn.fit(1)


def test_cutmix_rejects_non_image_input(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, cbs=CutMix())
    with pytest.raises(ValueError, match=r"N x C x H x W \(4 dims\), got shape \(32, 8\)"):
        learn.fit(1)


def test_mixup_rejects_integer_input(tmp_path: Path) -> None:
    x = torch.randint(0, 5, (64, 8))
    y = (x[:, 0] > 2).long()
    data = DataBunch.from_datasets(TensorDataset(x, y), TensorDataset(x, y), bs=32)
    model = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(32, 2))
    learn = make_learner(tmp_path, data=data, model=model, cbs=MixUp())
    with pytest.raises(TypeError, match=r"xb\[0\] has dtype torch.int64"):
        learn.fit(1)


# -- MixUp mathematics in a real fit -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss_func,eps,reduce",
    [
        (nn.CrossEntropyLoss(), 0.0, "mean"),
        (nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1), 0.1, "sum"),
        (functools.partial(F.cross_entropy, label_smoothing=0.2), 0.2, "mean"),
    ],
    ids=["ce-mean", "ce-sum-smoothing", "F.cross_entropy-smoothing"],
)
def test_mixup_inputs_and_loss_match_hand_computation(tmp_path: Path, loss_func: Any, eps: float, reduce: str) -> None:
    spy = spy_for("MixUp")
    mix = MixUp(0.4, seed=SEED)
    learn = make_learner(tmp_path, data=make_data(n=80, bs=32), loss_func=loss_func, cbs=[mix, spy])
    learn.fit(1)
    assert learn.loss_func is loss_func  # restored after training
    sizes = [r["x"].shape[0] for r in spy.rows]
    assert sizes == [32, 32, 16]
    for row, (lam, perm) in zip(spy.rows, ref_mixup_draws(SEED, sizes, 0.4), strict=True):
        x, y = row["x"], row["y"]
        assert torch.equal(row["lam"], lam) and bool((lam >= 0.5).all())
        assert torch.equal(row["yb1"], y[perm])
        assert torch.equal(row["ym"], y)  # integer targets stay; the loss is mixed
        assert torch.allclose(row["xm"], lam[:, None] * x + (1 - lam[:, None]) * x[perm], atol=1e-6)
        per = lam * ce_by_hand(row["pred"], y, eps) + (1 - lam) * ce_by_hand(row["pred"], y[perm], eps)
        expected = per.mean() if reduce == "mean" else per.sum()
        assert torch.allclose(row["loss"], expected, atol=1e-5)


class _Learn(SimpleNamespace):
    """The learner state MixUp reads, without a fit (for reductions a Learner cannot backprop)."""


def _drive(cb: MixUp, loss_func: Any, x: Tensor, y: Tensor) -> tuple[_Learn, Tensor]:
    learn = _Learn(training=True, stage="fit", loss_func=loss_func, xb=(x,), yb=(y,))
    cb.learn = learn  # type: ignore[assignment]
    cb.before_fit()
    cb.before_train()
    cb.before_batch()
    return learn, learn.loss_func


@pytest.mark.parametrize(
    "make_loss,kind",
    [
        (lambda w: nn.CrossEntropyLoss(reduction="none"), "none"),
        (lambda w: nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1), "none-smooth"),
        (lambda w: nn.CrossEntropyLoss(weight=w), "weighted-mean"),
        (lambda w: nn.CrossEntropyLoss(weight=w, reduction="sum", label_smoothing=0.1), "weighted-sum-smooth"),
        (lambda w: functools.partial(F.cross_entropy, weight=w, label_smoothing=0.1), "F-weighted-mean-smooth"),
    ],
    ids=["none", "none-smooth", "weighted-mean", "weighted-sum-smooth", "F-weighted-mean-smooth"],
)
def test_loss_mix_for_every_reduction(make_loss: Any, kind: str) -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.rand(3, generator=g) + 0.5
    x, pred, y = torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])
    loss_func = make_loss(w)
    cb = MixUp(1.0, seed=7)
    learn, lf = _drive(cb, loss_func, x, y)
    got = lf(pred, *learn.yb)
    ((lam, perm),) = ref_mixup_draws(7, [6], 1.0)
    eps = 0.1 if "smooth" in kind else 0.0
    weight = w if "weighted" in kind else None
    per = lam * ce_by_hand(pred, y, eps, weight) + (1 - lam) * ce_by_hand(pred, y[perm], eps, weight)
    if kind.startswith("none"):
        expected = per
    elif "sum" in kind:
        expected = per.sum()
    else:  # a weighted mean divides by the (mixed) weights, as the original loss does
        expected = per.sum() / (lam * w[y] + (1 - lam) * w[y[perm]]).sum()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    # with lam == 1 the mixing loss is the original loss exactly
    cb.lam = torch.ones(6)
    assert torch.allclose(lf(pred, y), loss_func(pred, y), atol=1e-6)
    # outside training it is the original loss on the targets given
    learn.training = False
    assert torch.equal(lf(pred, y[perm]), loss_func(pred, y[perm]))
    cb.after_train()
    assert learn.loss_func is loss_func


def test_float_targets_are_mixed(tmp_path: Path) -> None:
    base = make_data(n=64, bs=32)
    x, y = base.train_ds.tensors
    onehot = F.one_hot(y, 2).float()
    data = DataBunch.from_datasets(TensorDataset(x, onehot), TensorDataset(x, onehot), bs=32)
    spy = spy_for("MixUp")
    learn = make_learner(tmp_path, data=data, cbs=[MixUp(seed=SEED), spy])
    learn.fit(1)
    for row, (lam, perm) in zip(spy.rows, ref_mixup_draws(SEED, [32, 32], 0.4), strict=True):
        t = row["y"]
        assert torch.allclose(row["ym"], lam[:, None] * t + (1 - lam[:, None]) * t[perm], atol=1e-6)
        assert torch.allclose(row["loss"], F.cross_entropy(row["pred"], row["ym"]), atol=1e-6)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_bf16_mixes_in_input_dtype_and_loss_in_float32(tmp_path: Path, precision: str) -> None:
    base = make_data(n=64, bs=32)
    x, y = base.train_ds.tensors
    data = DataBunch.from_datasets(TensorDataset(x.bfloat16(), y), TensorDataset(x.bfloat16(), y), bs=32)
    spy = spy_for("MixUp")
    learn = make_learner(
        tmp_path,
        data=data,
        model=make_model().bfloat16(),
        cbs=[MixUp(seed=SEED), spy],
        precision=precision,
        accelerator="cpu",
    )
    learn.fit(1)
    for row, (lam, perm) in zip(spy.rows, ref_mixup_draws(SEED, [32, 32], 0.4), strict=True):
        xb = row["x"]
        assert row["xm"].dtype == torch.bfloat16 and row["pred"].dtype == torch.bfloat16
        assert torch.equal(row["xm"], torch.lerp(xb[perm], xb, lam[:, None].bfloat16()))
        assert row["loss"].dtype == torch.float32
        per = lam * ce_by_hand(row["pred"], row["y"]) + (1 - lam) * ce_by_hand(row["pred"], row["y"][perm])
        assert torch.allclose(row["loss"], per.mean(), atol=1e-5)


# -- CutMix ----------------------------------------------------------------------------------------------
def image_data(n: int = 64, bs: int = 32, seed: int = 0) -> DataBunch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 10, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return DataBunch.from_datasets(TensorDataset(x, y), TensorDataset(x, y), bs=bs)


def test_cutmix_box_lambda_and_loss(tmp_path: Path) -> None:
    spy = spy_for("CutMix")
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 10, 2))
    learn = make_learner(tmp_path, data=image_data(), model=model, cbs=[CutMix(1.0, seed=SEED), spy])
    learn.fit(1)
    torch.manual_seed(SEED)
    H, W = 6, 10
    areas = []
    for row in spy.rows:
        x, y = row["x"], row["y"]
        lam0 = Beta(torch.tensor(1.0), torch.tensor(1.0)).sample((1,))
        perm = torch.randperm(x.shape[0])
        cx, cy = int(torch.randint(0, W, (1,))), int(torch.randint(0, H, (1,)))
        cw, ch = int(torch.round(W * torch.sqrt(1 - lam0))), int(torch.round(H * torch.sqrt(1 - lam0)))
        x1, x2 = sorted((max(cx - cw // 2, 0), min(cx + cw // 2, W)))
        y1, y2 = sorted((max(cy - ch // 2, 0), min(cy + ch // 2, H)))
        assert row["bbox"] == (x1, y1, x2, y2)
        expected = x.clone()
        expected[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
        assert torch.equal(row["xm"], expected)
        # the pasted area, counted pixel by pixel, is what lam says
        moved = perm != torch.arange(x.shape[0])
        changed = (row["xm"] != x)[moved].sum((1, 2, 3))
        area = (x2 - x1) * (y2 - y1)
        assert bool((changed == area * 2).all())
        lam = 1 - area / (H * W)
        assert abs(float(row["lam"]) - lam) < 1e-7
        areas.append(area)
        per = lam * ce_by_hand(row["pred"], y) + (1 - lam) * ce_by_hand(row["pred"], y[perm])
        assert torch.allclose(row["loss"], per.mean(), atol=1e-5)
    assert any(a > 0 for a in areas)


# -- validation untouched, still learns ---------------------------------------------------------------------
@pytest.mark.parametrize("cb_cls", [MixUp, CutMix])
def test_validation_is_clean(tmp_path: Path, cb_cls: type) -> None:
    cb = cb_cls(seed=SEED)
    data = image_data(n=96, bs=32) if cb_cls is CutMix else make_data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(120, 2)) if cb_cls is CutMix else make_model()
    loss_func = nn.CrossEntropyLoss()
    learn = make_learner(tmp_path, data=data, model=model, loss_func=loss_func, cbs=cb, metrics=accuracy)
    learn.fit(2)
    in_fit = learn.recorder.values[-1][1:]
    with_cb = learn.validate()
    learn.remove_cb(cb)
    without = learn.validate()
    assert learn.loss_func is loss_func
    assert with_cb == pytest.approx(without, abs=1e-6)
    assert in_fit == pytest.approx(without, abs=1e-6)
    # and they are the clean loss, computed here by hand
    xv, yv = data.valid_ds.tensors
    with torch.no_grad():
        pred = learn.model.cpu()(xv)
    assert without[0] == pytest.approx(float(ce_by_hand(pred, yv).mean()), abs=1e-5)
    assert without[1] == pytest.approx(float(accuracy(pred, yv)), abs=1e-6)


def digits_data(bs: int = 64) -> DataBunch:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)
    tr, va = idx[:1400], idx[1400:]
    return DataBunch.from_datasets(TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va]), bs=bs)


@pytest.mark.parametrize("cb_cls", [MixUp, CutMix])
def test_still_learns_on_digits(tmp_path: Path, cb_cls: type) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)
    )
    learn = make_learner(tmp_path, data=digits_data(), model=model, cbs=cb_cls(), metrics=accuracy, lr=1e-2)
    learn.fit(4)
    assert learn.recorder.values[-1][2] > 0.8  # chance is 0.1


# -- reproducibility -----------------------------------------------------------------------------------------
def test_seed_defaults_to_global_seed_and_state_round_trip(tmp_path: Path) -> None:
    cb = MixUp()
    learn = make_learner(tmp_path, cbs=cb)
    torch.manual_seed(42)  # after make_model's own seeding
    learn.fit(1)
    # the generator was seeded from torch.initial_seed() at before_fit: 6 batches of 32 drawn since
    assert ref_mixup_draws(42, [32] * 6, 0.4)[-1][0].tolist() == cb.lam.tolist()
    state = cb.state_dict()
    assert set(state) == {"rng_state"} and state["rng_state"].dtype == torch.uint8
    other = MixUp(seed=999)
    other.load_state_dict(state)
    assert torch.equal(other._beta(5), cb._beta(5))
    assert torch.equal(torch.randperm(9, generator=other.generator), torch.randperm(9, generator=cb.generator))


class LamLog(Callback):
    order = 5

    def __init__(self) -> None:
        self.lams: dict[int, list[list[float]]] = {}

    def after_loss(self) -> None:
        if self.learn.training:
            self.lams.setdefault(self.learn.epoch, []).append(self.learn.mix_up.lam.tolist())


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_from_checkpoint_mixes_as_uninterrupted(tmp_path: Path) -> None:
    log = LamLog()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    learn = make_learner(tmp_path, cbs=[MixUp(seed=SEED), log])
    learn.fit(2, cbs=[ckpt], enable_checkpointing=True)
    assert len(log.lams) == 2 and log.lams[0] != log.lams[1]

    log2 = LamLog()
    torch.manual_seed(7)  # a different global seed: only the checkpoint can give the right stream
    resumed = make_learner(tmp_path, cbs=[MixUp(), log2])
    resumed.fit(2, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert list(log2.lams) == [1]
    assert log2.lams[1] == log.lams[1]

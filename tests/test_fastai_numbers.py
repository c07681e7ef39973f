"""Against fastai 2.8's own Learner: SGD's stepping, which layers count as norms, per-item losses,
fastai's own metric objects (``AccumMetric`` and friends).

Both Learners get the same model copy, the same unshuffled tensors and the same seed; fastai's
side uses fastai's own optimizer (``fastai.optimizer.SGD`` / ``Adam``), fastlight's ``bridge.SGD``
/ ``bridge.Adam``. Weights must agree to float noise.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import fastai.callback.core as fa_core
import fastai.callback.schedule  # noqa: F401  (fastai patches fit_one_cycle onto its Learner)
import fastai.learner as fa_learner
import fastai.metrics as fa_metrics
import fastai.optimizer as fa_optim
import pytest
import torch
import torch.nn.functional as F
from fastai.callback.progress import ProgressCallback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader as FaDataLoader
from fastai.losses import BCEWithLogitsLossFlat
from torch import nn
from torch.utils.data import TensorDataset

import bridge


def tensors(one_hot: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 4, generator=g), torch.randint(0, 3, (80,), generator=g)
    t = F.one_hot(y, 3).float() if one_hot else y
    return x[:48], t[:48], x[48:], t[48:]


def mlp(norm: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), *([norm] if norm is not None else []), nn.ReLU(), nn.Linear(8, 3))


def both(tmp_path: Path, model: nn.Module, opts: tuple[Any, Any], one_hot: bool = False, **kw: Any) -> tuple[Any, Any]:
    """(fastai's Learner, fastlight's) on the same data and model copy."""
    xt, yt, xv, yv = tensors(one_hot)
    kw.setdefault("loss_func", nn.CrossEntropyLoss())
    dls = DataLoaders(FaDataLoader(TensorDataset(xt, yt), bs=16, shuffle=False),
                      FaDataLoader(TensorDataset(xv, yv), bs=16, shuffle=False), device=torch.device("cpu"))  # fmt: skip
    defaults = [cb for cb in fa_core.defaults.callbacks if cb is not ProgressCallback]
    fa = fa_learner.Learner(dls, copy.deepcopy(model), cbs=defaults, default_cbs=False, path=tmp_path / "fa",
                            opt_func=opts[0], **{**kw, "loss_func": copy.deepcopy(kw["loss_func"])})  # fmt: skip
    data = bridge.DataBunch.from_datasets(TensorDataset(xt, yt), TensorDataset(xv, yv), bs=16, shuffle=False)
    fl = bridge.Learner(data, copy.deepcopy(model), path=tmp_path / "fl", opt_func=opts[1], logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, **kw)  # fmt: skip
    return fa, fl


def quietly(fn: Any, *args: Any, **kw: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.manual_seed(1234)
        return fn(*args, **kw)


def weight_gap(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point())


SGD = (fa_optim.SGD, bridge.SGD)


def test_sgd_without_momentum_ignores_the_one_cycle_momentum_schedule(tmp_path: Path) -> None:
    fa, fl = both(tmp_path, mlp(), SGD)
    quietly(fa.fit_one_cycle, 2, 0.1)
    quietly(fl.fit_one_cycle, 2, 0.1)
    assert weight_gap(fa.model, fl.model) < 1e-6  # fastai's sgd_step: mom is a hyper nothing reads


@pytest.mark.parametrize("decouple_wd", [True, False])
def test_sgd_weight_decay_is_fastais_true_or_l2_decay(tmp_path: Path, decouple_wd: bool) -> None:
    def opts(side: Any) -> Any:
        return lambda params, lr: side(params, lr, mom=0.9, decouple_wd=decouple_wd)

    fa, fl = both(tmp_path, mlp(), (opts(fa_optim.SGD), opts(bridge.SGD)), lr=0.1, wd=0.1)
    quietly(fa.fit, 2)
    quietly(fl.fit, 2)
    assert weight_gap(fa.model, fl.model) < 1e-6


def test_group_norm_is_decayed_and_frozen_as_in_fastai(tmp_path: Path) -> None:
    model = mlp(nn.GroupNorm(2, 8))

    def split(m: nn.Module) -> list[list[nn.Parameter]]:
        return [[*m[0].parameters(), *m[1].parameters()], list(m[3].parameters())]

    fa, fl = both(tmp_path, model, (fa_optim.Adam, bridge.Adam), wd=0.5, splitter=split)
    quietly(fa.fit, 2, 1e-2)
    quietly(fl.fit, 2, 1e-2)
    assert weight_gap(fa.model, fl.model) < 1e-6  # GroupNorm's weight is decayed: not one of fastai's norm_types
    fa, fl = both(tmp_path / "frozen", model, (fa_optim.Adam, bridge.Adam), splitter=split)
    fa.freeze()
    fl.freeze()
    assert [p.requires_grad for p in fl.model.parameters()] == [p.requires_grad for p in fa.model.parameters()]


def test_get_preds_gives_one_loss_an_item_for_a_flattening_loss(tmp_path: Path) -> None:
    fa, fl = both(tmp_path, mlp(), SGD, one_hot=True, loss_func=BCEWithLogitsLossFlat())
    quietly(fa.fit, 1, 0.1)
    quietly(fl.fit, 1, 0.1)
    expected = fa.get_preds(with_loss=True)[2]
    losses = quietly(fl.get_preds, with_loss=True)[2]
    assert losses.shape == expected.shape == (32,)
    assert torch.allclose(losses, expected, atol=1e-6)


def _values(learn: Any) -> list[float]:
    return [float(v) for row in learn.recorder.values for v in row]


@pytest.mark.parametrize(
    "make",
    [
        lambda: fa_metrics.F1Score(average="macro"),  # argmax inside accumulate, computed over all batches
        lambda: fa_metrics.RocAuc(),  # softmax inside accumulate
        lambda: fa_metrics.AccumMetric(lambda p, t: (p.argmax(-1) == t).float().mean(), flatten=False),
        lambda: fa_learner.AvgMetric(lambda p, t: (p.argmax(-1) == t).float().mean()),
    ],
    ids=["F1Score", "RocAuc", "AccumMetric", "AvgMetric"],
)
def test_fastais_metric_objects_give_fastais_values(tmp_path: Path, make: Any) -> None:
    fa, fl = both(tmp_path, mlp(), SGD, lr=0.5, metrics=[make()])
    fl.metrics = [bridge.metrics.as_metric(make())]  # its own instance (both() copies kw)
    quietly(fa.fit, 2)
    quietly(fl.fit, 2)
    assert fl.recorder.metric_names == fa.recorder.metric_names
    assert _values(fl) == pytest.approx(_values(fa), rel=1e-5)


def test_a_fastai_metric_reading_what_it_cannot_see_names_it(tmp_path: Path) -> None:
    _, fl = both(tmp_path, mlp(), SGD, metrics=[fa_learner.AvgLoss()])  # reads learn.loss
    with pytest.raises(AttributeError, match=r"metric AvgLoss reads learn.loss; .* sees learn.pred, learn.yb"):
        quietly(fl.fit, 1)


@pytest.mark.parametrize("train_metrics", [True, False])
@pytest.mark.parametrize("valid_metrics", [True, False])
def test_recorders_train_and_valid_metrics_give_fastais_columns_and_values(
    tmp_path: Path, train_metrics: bool, valid_metrics: bool
) -> None:
    fa, fl = both(tmp_path, mlp(), SGD, lr=0.5, metrics=[fa_metrics.accuracy])
    for learn in (fa, fl):  # fastai's idiom: flags set on the learner's own Recorder
        learn.recorder.train_metrics, learn.recorder.valid_metrics = train_metrics, valid_metrics
    quietly(fa.fit, 2)
    quietly(fl.fit, 2)
    assert fl.recorder.metric_names == fa.recorder.metric_names
    assert [len(row) for row in fl.recorder.values] == [len(row) for row in fa.recorder.values]
    assert _values(fl) == pytest.approx(_values(fa), rel=1e-5)
    assert fl.recorder.iters == fa.recorder.iters
    assert quietly(fl.validate) == pytest.approx(list(quietly(fa.validate)), rel=1e-5)
    assert fl.recorder.iters == fa.recorder.iters  # an evaluation's history: fastai's [0]

"""The article's program ("Customize your training loop with callbacks", course-v3 ``04_callbacks``) on fastlight.

The user code below is the notebook's, typed as a user would, with only the imports changed:
its ``DataBunch`` / ``Learner`` / ``fit`` / ``CallbackHandler`` come from ``bridge`` (MNIST is
replaced by scikit-learn's digits, which ships its data). The notebook's own ``Callback`` base
and ``CallbackHandler`` class are typed too: both must run unchanged. Reference numbers come
from the notebook's plain loop over the same batches.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn, optim
from torch.utils.data import DataLoader

import bridge
from bridge import CallbackHandler, DataBunch, Learner, LightningAdapter, Runner, fit


# -- the notebook's code (its cells, in order; get_data reads digits) --------------------------
def get_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)
    x = (x - x[:1500].mean()) / x[:1500].std()  # normalized on the training set, as the course's get_data
    return x[:1500], y[:1500], x[1500:], y[1500:]


class Dataset:
    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        return self.x[i], self.y[i]


def get_dls(train_ds: Dataset, valid_ds: Dataset, bs: int, **kwargs: Any) -> tuple[DataLoader[Any], DataLoader[Any]]:
    return (
        DataLoader(train_ds, batch_size=bs, shuffle=True, **kwargs),  # type: ignore[arg-type]
        DataLoader(valid_ds, batch_size=bs * 2, **kwargs),  # type: ignore[arg-type]
    )


def accuracy(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return (torch.argmax(out, dim=1) == yb).float().mean()


def get_model(data: Any, lr: float = 0.5, nh: int = 50) -> tuple[nn.Module, optim.Optimizer]:
    m = data.train_ds.x.shape[1]
    model = nn.Sequential(nn.Linear(m, nh), nn.ReLU(), nn.Linear(nh, data.c))
    return model, optim.SGD(model.parameters(), lr=lr)


class Callback:
    def begin_fit(self, learn: Any) -> bool:
        self.learn = learn
        return True

    def after_fit(self) -> bool:
        return True

    def begin_epoch(self, epoch: int) -> bool:
        self.epoch = epoch
        return True

    def begin_validate(self) -> bool:
        return True

    def after_epoch(self) -> bool:
        return True

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        self.xb, self.yb = xb, yb
        return True

    def after_loss(self, loss: Any) -> bool:
        self.loss = loss
        return True

    def after_backward(self) -> bool:
        return True

    def after_step(self) -> bool:
        return True


class UserCallbackHandler:
    """The notebook's ``CallbackHandler``, typed by the user (not bridge's)."""

    def __init__(self, cbs: Any = None) -> None:
        self.cbs = cbs if cbs else []

    def begin_fit(self, learn: Any) -> bool:
        self.learn, self.in_train = learn, True
        learn.stop = False
        res = True
        for cb in self.cbs:
            res = res and cb.begin_fit(learn)
        return res

    def after_fit(self) -> bool:
        res = not self.in_train
        for cb in self.cbs:
            res = res and cb.after_fit()
        return res

    def begin_epoch(self, epoch: int) -> bool:
        self.learn.model.train()
        self.in_train = True
        res = True
        for cb in self.cbs:
            res = res and cb.begin_epoch(epoch)
        return res

    def begin_validate(self) -> bool:
        self.learn.model.eval()
        self.in_train = False
        res = True
        for cb in self.cbs:
            res = res and cb.begin_validate()
        return res

    def after_epoch(self) -> bool:
        res = True
        for cb in self.cbs:
            res = res and cb.after_epoch()
        return res

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        res = True
        for cb in self.cbs:
            res = res and cb.begin_batch(xb, yb)
        return res

    def after_loss(self, loss: Any) -> bool:
        res = self.in_train
        for cb in self.cbs:
            res = res and cb.after_loss(loss)
        return res

    def after_backward(self) -> bool:
        res = True
        for cb in self.cbs:
            res = res and cb.after_backward()
        return res

    def after_step(self) -> bool:
        res = True
        for cb in self.cbs:
            res = res and cb.after_step()
        return res

    def do_stop(self) -> bool:
        try:
            return bool(self.learn.stop)
        finally:
            self.learn.stop = False


class TestCallback(Callback):
    __test__ = False  # the notebook's name; not a pytest class

    def begin_fit(self, learn: Any) -> bool:
        super().begin_fit(learn)
        self.n_iters = 0
        return True

    def after_step(self) -> bool:
        self.n_iters += 1
        print(self.n_iters)
        if self.n_iters >= 10:
            self.learn.stop = True
        return True


# -- helpers of this test (not the notebook's) ----------------------------------------------------
class Count(Callback):
    """Counts training and validation batches (begin_validate marks the switch)."""

    def begin_fit(self, learn: Any) -> bool:
        super().begin_fit(learn)
        self.train, self.valid, self.epochs, self.fits, self.in_valid = 0, 0, [], 0, False
        return True

    def begin_epoch(self, epoch: int) -> bool:
        self.in_valid = False
        self.epochs.append(epoch)
        return True

    def begin_validate(self) -> bool:
        self.in_valid = True
        return True

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        if self.in_valid:
            self.valid += 1
        else:
            self.train += 1
        return True

    def after_fit(self) -> bool:
        self.fits += 1
        return True


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> tuple[Any, Any, nn.Module]:
    """The notebook's set-up: data, learner; returns a copy of the initial model for the reference loop."""
    monkeypatch.chdir(tmp_path)  # the article's Learner writes its logs under the working directory
    x_train, y_train, x_valid, y_valid = get_data()
    train_ds, valid_ds = Dataset(x_train, y_train), Dataset(x_valid, y_valid)
    nh, bs = 50, 64  # noqa: F841  (the notebook's line)
    c = y_train.max().item() + 1
    loss_func = F.cross_entropy
    data = DataBunch(*get_dls(train_ds, valid_ds, bs), c)
    torch.manual_seed(seed)
    learn = Learner(*get_model(data), loss_func, data)
    return data, learn, copy.deepcopy(learn.model)


def plain_loop(model: nn.Module, data: Any, n_batches: int, lr: float = 0.5, skip: int = -1, zero: bool = True) -> None:
    """The notebook's plain loop over the first ``n_batches`` of one shuffled pass (its own seed)."""
    opt = optim.SGD(model.parameters(), lr=lr)
    model.train()
    for i, (xb, yb) in enumerate(data.train_dl):
        if i >= n_batches:
            break
        if i == skip:
            continue
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if zero:
            opt.zero_grad()


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# -- the article's lines ----------------------------------------------------------------------------
def test_the_article_program_runs_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    assert isinstance(learn.opt, optim.SGD) and learn.data is data and data.c == 10
    opt = learn.opt
    count = Count()
    torch.manual_seed(1)
    fit(1, learn, cb=CallbackHandler([TestCallback(), count]))
    out = capsys.readouterr().out.split()
    assert out[:10] == [str(i) for i in range(1, 11)]  # TestCallback prints 1..10, then stop
    assert (count.train, count.valid) == (10, len(data.valid_dl))  # validation in full
    assert learn.opt is opt and learn.opt.param_groups[0]["lr"] == 0.5  # the user's optimizer, as set
    torch.manual_seed(1)
    plain_loop(start, data, 10)
    assert_same(weights(learn.model), weights(start))  # bit-identical to the plain loop


def test_the_users_own_handler_class_as_cb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    count = Count()
    torch.manual_seed(1)
    fit(1, learn, cb=UserCallbackHandler([TestCallback(), count]))
    assert (count.train, count.valid, count.fits) == (10, len(data.valid_dl), 1)
    torch.manual_seed(1)
    plain_loop(start, data, 10)
    assert_same(weights(learn.model), weights(start))


def test_a_list_of_callbacks_and_more_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)
    count = Count()
    fit(2, learn, cb=[count])
    assert (count.train, count.valid, count.epochs) == (2 * len(data.train_dl), 2 * len(data.valid_dl), [0, 1])
    assert learn.cbs == [learn.train_eval, learn.recorder]  # cbs given to fit end with it


# -- every falsy return ----------------------------------------------------------------------------
class Refuse(Count):
    """Returns False from ``method`` when ``when(self)`` holds; counts the calls of every method."""

    def __init__(self, method: str, when: Any = lambda self: True) -> None:
        self.method, self.when, self.calls = method, when, {}

    def _answer(self, name: str, default: bool) -> bool:
        self.calls[name] = self.calls.get(name, 0) + 1
        return False if name == self.method and self.when(self) else default

    def begin_fit(self, learn: Any) -> bool:
        super().begin_fit(learn)
        return self._answer("begin_fit", True)

    def begin_epoch(self, epoch: int) -> bool:
        return super().begin_epoch(epoch) and self._answer("begin_epoch", True)

    def begin_validate(self) -> bool:
        return super().begin_validate() and self._answer("begin_validate", True)

    def begin_batch(self, xb: Any, yb: Any) -> bool:
        return super().begin_batch(xb, yb) and self._answer("begin_batch", True)

    def after_loss(self, loss: Any) -> bool:
        return self._answer("after_loss", True)

    def after_backward(self) -> bool:
        return self._answer("after_backward", True)

    def after_step(self) -> bool:
        return self._answer("after_step", True)

    def after_epoch(self) -> bool:
        return self._answer("after_epoch", True)

    def after_fit(self) -> bool:
        super().after_fit()
        return self._answer("after_fit", True)


def test_begin_fit_false_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, learn, start = setup(tmp_path, monkeypatch)
    cb = Refuse("begin_fit")
    fit(2, learn, cb=[cb])
    assert cb.calls == {"begin_fit": 1}  # no epoch, no batch, no after_fit (the loop returned)
    assert_same(weights(learn.model), weights(start))


def test_begin_epoch_false_skips_that_epochs_training_and_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)
    cb = Refuse("begin_epoch", lambda self: self.epochs[-1] == 0)
    fit(2, learn, cb=[cb])
    assert cb.epochs == [0, 1] and (cb.train, cb.valid) == (len(data.train_dl), len(data.valid_dl))
    assert cb.calls["after_epoch"] == 1 and cb.calls["after_fit"] == 1  # `continue`: no after_epoch for epoch 0


def test_begin_batch_false_skips_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    cb = Refuse("begin_batch", lambda self: not self.in_valid and self.train == 3)
    stop = TestCallback()
    torch.manual_seed(1)
    fit(1, learn, cb=[cb, stop])
    assert stop.n_iters == 10  # 11 batches served, the 3rd skipped
    torch.manual_seed(1)
    plain_loop(start, data, 11, skip=2)
    assert_same(weights(learn.model), weights(start))


def test_after_loss_false_means_no_backward_and_no_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    cb = Refuse("after_loss")
    fit(1, learn, cb=[cb])
    assert_same(weights(learn.model), weights(start))
    assert all(p.grad is None for p in learn.model.parameters())  # no backward at all
    assert cb.calls["after_loss"] == len(data.train_dl)  # asked in training only, as the article's handler
    assert "after_backward" not in cb.calls and "after_step" not in cb.calls


def test_after_backward_false_skips_the_step_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    cb = Refuse("after_backward")
    fit(1, learn, cb=[cb])
    assert_same(weights(learn.model), weights(start))
    assert cb.calls["after_step"] == len(data.train_dl)  # after_step still runs, then zero_grad
    assert all(p.grad is None or not p.grad.any() for p in learn.model.parameters())


def test_after_step_false_skips_zero_grad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    cb = Refuse("after_step")
    stop = TestCallback()
    torch.manual_seed(1)
    fit(1, learn, cb=[stop, cb])  # `res = res and cb.after_step()`: a falsy answer stops the calls
    torch.manual_seed(1)
    plain_loop(start, data, 10, zero=False)  # gradients accumulate from batch to batch
    assert_same(weights(learn.model), weights(start))


def test_begin_validate_false_skips_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)
    cb = Refuse("begin_validate")
    fit(2, learn, cb=[cb])
    assert (cb.train, cb.valid) == (2 * len(data.train_dl), 0)
    assert cb.calls["after_epoch"] == 2


def test_after_epoch_false_ends_the_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)
    cb = Refuse("after_epoch")
    fit(3, learn, cb=[cb])
    assert cb.epochs == [0] and cb.calls["after_fit"] == 1


def test_stop_in_validation_ends_the_validation_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)

    class StopValid(Count):
        def begin_validate(self) -> bool:
            self.in_pass = 0
            return super().begin_validate()

        def begin_batch(self, xb: Any, yb: Any) -> bool:
            super().begin_batch(xb, yb)
            if self.in_valid:
                self.in_pass += 1
                if self.in_pass == 2:
                    self.learn.stop = True
            return True

    cb = StopValid()
    fit(2, learn, cb=[cb])
    assert len(data.valid_dl) == 3
    assert (cb.train, cb.valid, cb.epochs) == (2 * len(data.train_dl), 4, [0, 1])  # each pass stopped, reset


# -- the handler as the article describes it ----------------------------------------------------------
def test_slow_calculation_with_a_handler() -> None:
    """The article's closing example: any method call on the handler reaches every callback that has it."""

    def slow_calculation(cb: Any = None) -> int:
        res = 0
        for i in range(5):
            if cb:
                cb.before_calc(i)
            res += i * i
            if cb and hasattr(cb, "after_calc"):
                if cb.after_calc(i, val=res):
                    print("stopping early")
                    break
        return res

    class PrintStep:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def before_calc(self, i: int) -> None:
            self.seen.append(i)

    class EarlyStop:
        def after_calc(self, i: int, val: int) -> bool:
            return val > 10

    printer = PrintStep()
    assert slow_calculation(CallbackHandler([printer, EarlyStop()])) == 0 + 1 + 4 + 9  # stops once res > 10
    assert printer.seen == [0, 1, 2, 3]
    assert slow_calculation(CallbackHandler([printer])) == 30  # nobody answers after_calc: never stops
    handler = CallbackHandler([printer])
    assert handler.on_epoch_end() is False  # no callback has it: called on none


def test_handler_seed_events_follow_the_articles_return_rule() -> None:
    class Yes(Callback):
        pass

    class No(Callback):
        def after_epoch(self) -> bool:
            return False

    class Learn:
        stop = True
        model = nn.Linear(1, 1)

    learn = Learn()
    handler = CallbackHandler([Yes(), No()])
    assert handler.begin_fit(learn) is True and learn.stop is False  # begin_fit resets stop
    assert handler.after_epoch() is False  # continue only if every callback returned truthy
    assert handler.begin_validate() is True and handler.after_loss(0.5) is False  # no backward in validation
    learn.stop = True
    assert handler.do_stop() is True and learn.stop is False


# -- course-v3's Runner (the notebook's second half) ---------------------------------------------------
class CourseCallback:
    _order = 0

    def set_runner(self, run: Any) -> None:
        self.run = run

    def __getattr__(self, k: str) -> Any:
        return getattr(self.run, k)


class AvgStats:
    def __init__(self, metrics: Any, in_train: bool) -> None:
        self.metrics, self.in_train = list(metrics) if isinstance(metrics, list) else [metrics], in_train

    def reset(self) -> None:
        self.tot_loss, self.count = 0.0, 0
        self.tot_mets = [0.0] * len(self.metrics)

    @property
    def all_stats(self) -> list[Any]:
        return [self.tot_loss.item()] + self.tot_mets  # type: ignore[attr-defined]  # noqa: RUF005

    @property
    def avg_stats(self) -> list[Any]:
        return [o / self.count for o in self.all_stats]

    def accumulate(self, run: Any) -> None:
        bn = run.xb.shape[0]
        self.tot_loss += run.loss * bn
        self.count += bn
        for i, m in enumerate(self.metrics):
            self.tot_mets[i] += m(run.pred, run.yb) * bn


class AvgStatsCallback(CourseCallback):
    def __init__(self, metrics: Any) -> None:
        self.train_stats, self.valid_stats = AvgStats(metrics, True), AvgStats(metrics, False)

    def begin_epoch(self) -> None:
        self.train_stats.reset()
        self.valid_stats.reset()

    def after_loss(self) -> None:
        stats = self.train_stats if self.in_train else self.valid_stats
        with torch.no_grad():
            stats.accumulate(self.run)

    def after_epoch(self) -> None:
        print(self.train_stats.avg_stats)
        print(self.valid_stats.avg_stats)


def test_runner_with_cb_funcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from functools import partial

    data, learn, _ = setup(tmp_path, monkeypatch)
    acc_cbf = partial(AvgStatsCallback, accuracy)
    run = Runner(cb_funcs=acc_cbf)
    run.fit(3, learn)
    loss, acc = run.avg_stats.valid_stats.avg_stats
    assert acc > 0.8
    # Independent: the final model on the validation set (the stats were taken with these weights).
    x, y = data.valid_ds.x, data.valid_ds.y
    with torch.no_grad():
        pred = learn.model.eval()(x)
    assert loss == pytest.approx(float(F.cross_entropy(pred, y)), rel=1e-5)
    assert float(acc) == pytest.approx(float(accuracy(pred, y)), rel=1e-5)
    assert run.learn is None and learn.cbs == [learn.train_eval, learn.recorder]


def test_runner_stop_ends_the_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)

    class StopAt3(CourseCallback):
        def begin_fit(self) -> None:
            self.n_train = self.n_valid = 0

        def after_batch(self) -> None:
            if self.in_train:
                self.n_train += 1
                if self.n_train == 3:
                    self.run.stop = True
            else:
                self.n_valid += 1

    cb = StopAt3()
    Runner(cbs=[cb]).fit(1, learn)
    assert (cb.n_train, cb.n_valid) == (3, len(data.valid_dl))


# -- the forms and what fastai accepts ------------------------------------------------------------------
def test_learner_forms_are_told_apart_and_others_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, _ = setup(tmp_path, monkeypatch)
    model, opt = get_model(data)
    v2 = Learner(data, model, loss_func=F.cross_entropy, opt_func=bridge.SGD, path=tmp_path)
    assert v2.opt is None and v2.dls is data
    with pytest.raises(TypeError, match=r"`data` must be a bridge.DataBunch.*Learner\(model, opt, loss_func, data\)"):
        Learner(model, F.cross_entropy, opt, data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Learner\(model, opt, loss_func, data\): `data` must be a bridge.DataBunch"):
        Learner(model, opt, F.cross_entropy, [data])  # type: ignore[arg-type]
    other, _ = get_model(data)
    with pytest.raises(ValueError, match=r"`opt` \(SGD\) holds 4 parameter\(s\) that are not the model's"):
        Learner(other, opt, F.cross_entropy, data)
    with pytest.raises(TypeError, match=r"DataBunch.*positional"):
        DataBunch(data.train_dl, data.valid_dl, 10, data.valid_dl)  # type: ignore[misc]


def test_lr_zero_trains_nothing_and_fit_takes_a_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, learn, start = setup(tmp_path, monkeypatch)
    learn.fit(1, lr=0)
    assert_same(weights(learn.model), weights(start))
    splits = lambda m: [list(m[0].parameters()), list(m[2].parameters())]  # noqa: E731
    model, _ = get_model(data)
    v2 = Learner(data, model, loss_func=F.cross_entropy, splitter=splits, opt_func=bridge.SGD, path=tmp_path)
    v2.fit(1, lr=slice(1e-3, 1e-1))
    assert [g["lr"] for g in v2.opt.param_groups] == pytest.approx([1e-3, 1e-3, 1e-1, 1e-1])  # type: ignore[union-attr]
    v2.fit(1, lr=slice(1e-1))  # slice(None, hi): hi/10 for all but the last group
    assert [g["lr"] for g in v2.opt.param_groups] == pytest.approx([1e-2, 1e-2, 1e-1, 1e-1])  # type: ignore[union-attr]


def test_a_callback_subclass_without_events_holds_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, learn, _ = setup(tmp_path, monkeypatch)

    class Settings(bridge.Callback):
        def __init__(self) -> None:
            self.alpha = 0.4

    learn.add_cb(Settings())
    assert learn.settings.alpha == 0.4
    learn.fit(1)


# -- the same callbacks through LightningAdapter -------------------------------------------------------
def test_seed_callbacks_through_the_adapter(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    x_train, y_train, x_valid, y_valid = get_data()
    train_dl, valid_dl = get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), 64)

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 10))
            self.steps = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.steps += 1
            xb, yb = batch
            return F.cross_entropy(self(xb), yb)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            xb, yb = batch
            self.log("val_loss", F.cross_entropy(self(xb), yb))

        def configure_optimizers(self) -> Any:
            return optim.SGD(self.parameters(), lr=0.5)

    module, stop, count = Plain(), TestCallback(), Count()
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        callbacks=[LightningAdapter([stop, count])],
    )
    trainer.fit(module, train_dl, valid_dl)
    assert stop.n_iters == 10 and (count.train, count.valid) == (10, len(valid_dl))

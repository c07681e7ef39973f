"""Lightning's empty module hooks are skipped for a fit (bridge.idle_hooks; docs/performance.md)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from bridge import Callback, LightningAdapter
from bridge.idle_hooks import IDLE_CANDIDATES, _does_nothing, idle_hooks, restore_idle_hooks, skip_idle_hooks
from tests.helpers import make_data, make_learner


class OwnAfterBackward(pl.LightningModule):
    """Overrides one per-batch hook (it must still run); the other five are Lightning's empty ones."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)
        self.after_backward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def on_after_backward(self) -> None:
        self.after_backward_calls += 1

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Spy(pl.Callback):
    """A user's own Lightning callback: what the module holds mid-fit, and its own hook counts."""

    def __init__(self) -> None:
        self.during: dict[str, Any] = {}
        self.after_backward = self.before_zero_grad = self.batch_end = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.during = {name: vars(pl_module).get(name, "absent") for name in IDLE_CANDIDATES}

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after_backward += 1

    def on_before_zero_grad(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.before_zero_grad += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.batch_end += 1


class CountBatches(Callback):
    def __init__(self) -> None:
        self.backwards = 0

    def after_backward(self) -> None:
        self.backwards += 1


def _trainer(*callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )


def test_the_empty_defaults_are_found_by_their_code() -> None:
    def docstring_only() -> None:
        """Nothing."""

    def does_something() -> None:
        print("x")

    def returns_a_value() -> int:
        return 1

    assert _does_nothing(docstring_only) and _does_nothing(lambda: None)
    assert not _does_nothing(does_something) and not _does_nothing(returns_a_value)
    # Lightning 2.6's defaults of all six are empty (if a release gives one a body, it is called again).
    assert idle_hooks(pl.LightningModule()) == list(IDLE_CANDIDATES)


def test_adapter_skips_only_the_empty_hooks_and_restores_them() -> None:
    module, spy, counter = OwnAfterBackward(), Spy(), CountBatches()
    data = make_data(n=96, bs=32)  # 3 batches an epoch, 2 epochs
    for fit in range(2):  # a second fit of the same module skips and restores alike
        _trainer(LightningAdapter([counter], recorder=False), spy).fit(module, data.train_dataloader())
        assert spy.during == {
            "on_train_batch_start": None,
            "on_train_batch_end": None,
            "on_before_backward": None,
            "on_after_backward": "absent",  # the module's own: called
            "on_before_optimizer_step": None,
            "on_before_zero_grad": None,
        }
        n = 6 * (fit + 1)
        assert module.after_backward_calls == n and counter.backwards == n
        # The user's own Lightning callback hooks of the same names are untouched.
        assert (spy.after_backward, spy.before_zero_grad, spy.batch_end) == (n, n, n)
        assert not [name for name in IDLE_CANDIDATES if name in vars(module)]
        assert all(callable(getattr(module, name)) for name in IDLE_CANDIDATES)


def test_bare_lightning_counts_match() -> None:
    # The same fit without the adapter: the counts above are Lightning's own.
    module, spy = OwnAfterBackward(), Spy()
    _trainer(spy).fit(module, make_data(n=96, bs=32).train_dataloader())
    assert module.after_backward_calls == 6 and (spy.after_backward, spy.before_zero_grad, spy.batch_end) == (6, 6, 6)
    assert set(spy.during.values()) == {"absent"}


def test_adapter_wraps_a_skipped_batch_start_and_teardown_removes_both(tmp_path: Any) -> None:
    # A fit cancelled at epoch level makes the adapter wrap on_train_batch_start (which was None).
    from bridge import CancelEpochException

    class CancelFirstEpoch(Callback):
        def after_batch(self) -> None:
            if self.learn.epoch == 0 and self.learn.iter == 0:
                raise CancelEpochException()

    module, counter = OwnAfterBackward(), CountBatches()
    _trainer(LightningAdapter([CancelFirstEpoch(), counter], recorder=False)).fit(
        module, make_data(n=96, bs=32).train_dataloader()
    )
    assert counter.backwards == 1 + 3  # epoch 0 stops after its first batch
    assert "on_train_batch_start" not in vars(module) and callable(module.on_train_batch_start)


def test_restore_leaves_a_hook_set_since_alone() -> None:
    module = pl.LightningModule()
    names = skip_idle_hooks(module)
    mine = lambda *a: None  # noqa: E731
    module.__dict__["on_after_backward"] = mine
    restore_idle_hooks(module, names)
    assert vars(module).get("on_after_backward") is mine and "on_before_backward" not in vars(module)


def test_learner_module_skips_the_empty_hooks_it_does_not_use(tmp_path: Any) -> None:
    learn = make_learner(tmp_path, cbs=[counter := CountBatches()], logger=False)
    module = learn.module
    # The Learner's module defines on_train_batch_start and on_before_optimizer_step itself.
    assert [name for name in IDLE_CANDIDATES if vars(module).get(name, "absent") is None] == [
        "on_train_batch_end",
        "on_before_backward",
        "on_after_backward",
        "on_before_zero_grad",
    ]
    learn.fit(1)
    assert counter.backwards == 6  # 192 items in batches of 32

"""bridge.fast_setattr: Lightning's per-hook ``_current_fx_name`` writes skip nn.Module's checks, nothing else does.

The LearnerModule has it as its ``__setattr__``; ``LightningAdapter`` gives a user's module a
subclass with it for the length of a fit, invisible to ``type(m).__name__``, ``isinstance``,
``pickle`` and ``copy``, and gone after the fit (or an error in it).
"""

from __future__ import annotations

import copy
import io
import pickle
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridge import LightningAdapter
from bridge.fast_setattr import restore, speed_up
from bridge.module import LearnerModule
from tests.helpers import make_data, make_learner


class Plain(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class OwnSetattr(Plain):
    """A class with its own ``__setattr__``: it must see every write, Lightning's included."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            self.__dict__["fx_writes"] = self.__dict__.get("fx_writes", 0) + 1
        super().__setattr__(name, value)


class Looks(pl.Callback):
    """What a user's own Lightning callback sees of the module mid-fit."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.seen = fail, {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        buf = io.BytesIO()
        torch.save(pl_module, buf)
        buf.seek(0)
        self.seen = {
            "type": type(pl_module),
            "name": type(pl_module).__name__,
            "repr": repr(pl_module).split("(")[0],
            "pickled": type(pickle.loads(pickle.dumps(pl_module))),
            "same weights": torch.equal(pickle.loads(pickle.dumps(pl_module)).net.weight, pl_module.net.weight),
            "deepcopy": type(copy.deepcopy(pl_module)),
            "torch.save": type(torch.load(buf, weights_only=False)),
        }
        if self.fail:
            raise RuntimeError("boom")


def _fit(module: pl.LightningModule, *callbacks: pl.Callback) -> None:
    pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[LightningAdapter(recorder=False), *callbacks],
    ).fit(module, make_data(n=64, bs=32).train_dataloader())


def test_hook_names_land_where_nn_module_would_put_them_and_modules_still_register(tmp_path: Path) -> None:
    sped_up = Plain()
    assert speed_up(sped_up) is Plain
    for module in (make_learner(tmp_path).module, sped_up):
        for value in ("training_step", None):
            module._current_fx_name = value
            assert vars(module)["_current_fx_name"] is value
        module._current_fx_name = nn.Parameter(torch.zeros(1))  # not a hook name: nn.Module's rules
        assert "_current_fx_name" in module._parameters and "_current_fx_name" not in vars(module)
        module.extra = nn.Linear(2, 2)
        assert module._modules["extra"] is module.extra
    assert isinstance(make_learner(tmp_path).module, LearnerModule)


def test_adapter_module_is_its_own_class_to_users_and_after_the_fit() -> None:
    module, looks = Plain(), Looks()
    _fit(module, looks)
    assert looks.seen["type"] is not Plain and issubclass(looks.seen["type"], Plain)  # sped up mid-fit
    assert looks.seen["name"] == looks.seen["repr"] == "Plain"
    assert looks.seen["pickled"] is looks.seen["deepcopy"] is looks.seen["torch.save"] is Plain
    assert looks.seen["same weights"]
    assert type(module) is Plain


def test_adapter_module_gets_its_class_back_after_an_error() -> None:
    module = Plain()
    with pytest.raises(RuntimeError, match="boom"):
        _fit(module, Looks(fail=True))
    assert type(module) is Plain


def test_a_class_with_its_own_setattr_is_left_alone() -> None:
    module, looks = OwnSetattr(), Looks()
    _fit(module, looks)
    assert looks.seen["type"] is OwnSetattr and module.fx_writes > 0


def test_a_second_speed_up_is_a_no_op_and_restore_leaves_a_class_changed_since_alone() -> None:
    module = Plain()
    original = speed_up(module)
    fast = type(module)
    assert speed_up(module) is Plain and type(module) is fast  # a second set-up: same class, same original

    class Sharded(type(module)):  # as fully_shard swaps in its own subclass
        pass

    module.__class__ = Sharded
    assert type(copy.copy(module)) is Sharded  # copied as if the fit's subclass were not there
    restore(module, original)
    assert type(module) is Sharded


REGISTRY: dict[str, type] = {}


class Registered(Plain):
    """Registers its subclasses: defining one more (the fit's) would change the registry."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in REGISTRY:
            raise ValueError(f"{cls.__name__} registered twice")
        REGISTRY[cls.__name__] = cls


class Model(Registered):
    pass


def test_a_class_that_watches_its_subclasses_is_left_alone() -> None:
    module = Model()
    assert speed_up(module) is None and type(module) is Model and REGISTRY == {"Model": Model}
    _fit(module)
    assert REGISTRY == {"Model": Model}

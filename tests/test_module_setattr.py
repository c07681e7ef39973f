"""``LearnerModule.__setattr__``: Lightning's per-hook ``_current_fx_name`` writes skip nn.Module's checks, nothing else does."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bridge.module import LearnerModule
from tests.helpers import make_learner


def test_hook_names_land_where_nn_module_would_put_them_and_modules_still_register(tmp_path: Path) -> None:
    module = make_learner(tmp_path).module
    assert isinstance(module, LearnerModule)
    for value in ("training_step", None):
        module._current_fx_name = value
        assert vars(module)["_current_fx_name"] is value
    module._current_fx_name = nn.Parameter(torch.zeros(1))  # not a hook name: nn.Module's rules
    assert "_current_fx_name" in module._parameters and "_current_fx_name" not in vars(module)
    module.extra = nn.Linear(2, 2)
    assert module._modules["extra"] is module.extra

"""Every case of ``scripts/fastai_probe.py`` on both Learners: fastlight's trace, weights (1e-6),
``recorder.values``, files and results equal those of fastai 2.8.12's own Learner running the same
fastai callback (issue 16). The one case fastlight refuses by design is checked for its message:
fastai's own optimizers return fastai's ``Optimizer``, which Lightning cannot step.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location("fastai_probe", REPO / "scripts" / "fastai_probe.py")
assert _spec is not None and _spec.loader is not None
probe = importlib.util.module_from_spec(_spec)
sys.modules["fastai_probe"] = probe
_spec.loader.exec_module(probe)

from tests.fastai_oracle import run_case  # noqa: E402

REFUSED = {"fastai's SGD as opt_func"}
CASES = {case.name: case for case in probe.cases()}


def test_the_probe_covers_fastais_callbacks() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("name", sorted(set(CASES) - REFUSED))
def test_fastai_callback_runs_as_on_fastais_learner(name: str) -> None:
    result = run_case(CASES[name])
    assert result.fastai.error is None, f"the case fails on fastai's own Learner: {result.fastai.error!r}"
    assert result.diff is None, result.diff


def test_fastais_own_optimizer_is_refused_naming_the_torch_one() -> None:
    result = run_case(CASES["fastai's SGD as opt_func"])
    assert result.fastai.error is None
    assert isinstance(result.fastlight.error, TypeError)
    assert "use bridge.SGD" in str(result.fastlight.error)

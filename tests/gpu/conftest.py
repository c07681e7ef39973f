"""Skip every test in ``tests/gpu`` when no CUDA device is present (the default run ignores the folder)."""

from __future__ import annotations

import pytest
import torch

# Asked once per session: Lightning makes this an NVML query, not a CUDA initialisation.
CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    if not CUDA:
        pytest.skip("no CUDA device: the GPU suite runs only where torch.cuda.is_available()")

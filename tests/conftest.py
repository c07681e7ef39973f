import os
import warnings

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*number of training batches.*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

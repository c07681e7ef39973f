"""2 gloo processes: test_dl + get_preds return every item once, in order; interpretation and export per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO


@pytest.mark.ddp
def test_test_dl_and_get_preds_under_ddp(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.subprocess_scripts.ddp_test_dl"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((tmp_path / f"result_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == 2 for r in results)
    for r in results:
        expected = torch.tensor(r["expected"])
        assert expected.shape == (37, 2) and len(set(map(tuple, r["expected"]))) == 37  # distinct rows
        torch.testing.assert_close(torch.tensor(r["preds"]), expected, rtol=0, atol=1e-6)  # every item once, in order
        torch.testing.assert_close(torch.tensor(r["labelled"]), expected, rtol=0, atol=1e-6)
        assert r["n_targs"] == 0 and r["labels"] == (torch.tensor(r["x"])[:, 0] > 0).long().tolist()
        cm = np.zeros((2, 2), dtype=np.int64)
        for t, p in zip(r["labels"], expected.argmax(1).tolist(), strict=True):
            cm[t, p] += 1
        assert r["cm"] == cm.tolist()
        assert r["files"] == ["rank0.pt2"]  # rank 1's export wrote nothing
        torch.testing.assert_close(torch.tensor(r["loaded"]), expected, rtol=0, atol=1e-6)
    assert results[0]["preds"] == results[1]["preds"]

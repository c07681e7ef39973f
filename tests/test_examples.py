"""The examples in examples/ run end to end (real digits data) and learn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# example -> (a line its output must match, with a number that must exceed the threshold; files it writes)
EXAMPLES = {
    "quickstart": (r"valid_loss [\d.]+, accuracy ([\d.]+)", 0.85, ["runs/quickstart/models/digits.pth"]),
    "lr_find_one_cycle": (r"final accuracy: ([\d.]+)", 0.85, ["lr_find_example/lr_find.png"]),
    "mixup_digits": (r"validation accuracy ([\d.]+)", 0.85, []),
    "port_lightning_project": (r"val_acc ([\d.]+)", 0.85, []),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_and_learns(tmp_path: Path, name: str) -> None:
    pattern, threshold, files = EXAMPLES[name]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / f"{name}.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(pattern, proc.stdout)
    assert match is not None, proc.stdout[-2000:]
    assert float(match.group(1)) > threshold  # it learned: 10 digit classes, chance is 0.1
    assert "\r" not in proc.stdout  # stdout is a pipe: a clean table, no progress-bar residue
    for f in files:
        assert (tmp_path / f).stat().st_size > 0, f

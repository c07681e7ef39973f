"""Killed at 20 random moments while saving: every file under its final name loads, resume finds the latest.

One training script (``tests/scripts/crash_safety.py``) is started 20 times with ``fit(N, resume=True)`` and killed with
SIGKILL after a random (seeded) delay once it is training; it writes a Lightning
checkpoint every 3 steps (mid-epoch, ``checkpoints/last.ckpt``), a model file every
epoch (``SaveModelCallback(every_epoch=True)``) and the CSV history every epoch. After
each kill every file under its final name must load, and each resume must start from
the newest complete checkpoint; a last uninterrupted start finishes the run.
"""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import script_command, script_env

KILLS = 20


def _check_files(run: Path) -> tuple[int, int]:
    """Every file under its final name loads; returns (epoch, global_step) of last.ckpt."""
    for model in (run / "models").glob("*.pth"):
        state = torch.load(model, weights_only=True)
        assert "model" in state or all(isinstance(v, torch.Tensor) for v in state.values()), model
    history = run / "history.csv"
    if history.exists():
        rows = list(csv.reader(history.read_text().splitlines()))
        assert rows[0][:3] == ["epoch", "train_loss", "valid_loss"]
        assert all(len(r) == len(rows[0]) for r in rows), rows
        assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    last = run / "checkpoints" / "last.ckpt"
    if not last.exists():
        return (-1, 0)
    ckpt = torch.load(last, weights_only=True)
    return int(ckpt["epoch"]), int(ckpt["global_step"])


@pytest.mark.slow
def test_twenty_kills_never_leave_a_broken_file(tmp_path: Path) -> None:
    env = script_env()
    rng = random.Random(1234)
    progress = [(-1, 0)]
    mid_write_kills = 0
    for _ in range(KILLS):
        (tmp_path / "training").unlink(missing_ok=True)
        proc = subprocess.Popen(script_command("crash_safety", "1000"), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while not (tmp_path / "training").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        mid_write_kills += any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
        progress.append(_check_files(tmp_path))
        # resume=True finds the newest complete checkpoint: the position never goes back
        assert progress[-1][1] >= progress[-2][1], progress
    assert progress[-1][1] > 0  # the kills let it make progress
    n_epoch = progress[-1][0] + 3  # finish two or three more epochs without a kill
    proc = subprocess.run(
        script_command("crash_safety", str(n_epoch)), cwd=tmp_path, env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert (tmp_path / "finished").exists()
    epoch, _ = _check_files(tmp_path)
    assert epoch == n_epoch - 1  # the last checkpoint is the end of the run
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + n_epoch  # one row per epoch, none lost or repeated
    assert sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "models").glob("model_*.pth")) == list(range(n_epoch))
    assert not list(tmp_path.rglob("*.tmp"))  # debris of killed writes is cleaned by the next write
    print(f"kills that left a temp file (killed mid-write): {mid_write_kills}/{KILLS}; progress {progress}")

"""A run killed with SIGKILL after epoch 2 of 4 and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers import script_command, script_env


def _run(tmp: Path, mode: str, script: str = "resume") -> int:
    """Exit status of ``tests/scripts/<script>.py MODE`` run in ``tmp``."""
    cmd = script_command(script, mode)
    return subprocess.run(cmd, cwd=tmp, env=script_env(), capture_output=True, timeout=180).returncode


def test_killed_run_resumes_bit_identical(tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for d in (straight, broken):
        d.mkdir()
    assert _run(straight, "full") == 0
    assert _run(broken, "crash") == -9  # SIGKILL: nothing ran on the way out
    assert (broken / "checkpoints" / "last.ckpt").exists()
    assert not list((broken / "checkpoints").glob("*.tmp"))
    assert _run(broken, "resume") == 0
    a = json.loads((straight / "result_full.json").read_text())
    b = json.loads((broken / "result_resume.json").read_text())
    assert a["weights"] == b["weights"]  # bit-identical
    assert a["values"] == b["values"] and len(b["values"]) == 4  # same history (restored + continued)
    assert a["lrs"] == b["lrs"]  # the same one-cycle learning rates at every step
    assert a["best"] == b["best"]  # the same SaveModel decision


def test_killed_mid_epoch_resumes_with_the_next_unseen_batch(tmp_path: Path) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for d in (straight, broken):
        d.mkdir()
    assert _run(straight, "full", "resume_mid_epoch") == 0
    assert _run(broken, "crash", "resume_mid_epoch") == -9  # killed before epoch 1's batch 3; batch 2 was checkpointed
    assert _run(broken, "resume", "resume_mid_epoch") == 0
    a = json.loads((straight / "result_full.json").read_text())
    b = json.loads((broken / "result_resume.json").read_text())
    resumed_at = a["seen"].index(b["seen"][0])
    assert a["seen"][resumed_at][:2] == [1, 3]  # the resumed run starts with epoch 1's batch 3 ...
    assert b["seen"] == a["seen"][resumed_at:]  # ... then the very batches the straight run trained
    assert a["weights"] == b["weights"]  # bit-identical
    assert a["lrs"] == b["lrs"] and len(a["lrs"]) == 36  # the one-cycle schedule continued mid-epoch
    assert a["losses"] == b["losses"] and a["values"] == b["values"]  # the Recorder's history too


def test_lightning_async_checkpoint_io_around_the_atomic_one_resumes(tmp_path: Path) -> None:
    """docs/performance.md's opt-in: Lightning's AsyncCheckpointIO around AtomicCheckpointIO.

    The fit's end waits for the last write, and a later ``resume=True`` continues from it exactly
    as from a checkpoint written in place: the same weights and history as one straight fit.
    """
    import torch
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    from bridge import Learner
    from bridge.checkpoint_io import AtomicCheckpointIO
    from tests.helpers import make_data, make_learner

    def learner(folder: Path) -> Learner:
        torch.manual_seed(0)
        return make_learner(folder, data=make_data(n=64, n_valid=32, bs=16))

    straight = learner(tmp_path / "straight")
    straight.fit(4)
    broken = learner(tmp_path / "broken")
    broken.fit(2, plugins=[AsyncCheckpointIO(AtomicCheckpointIO())])
    last = tmp_path / "broken" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # in place when fit returned
    assert not list(last.parent.glob("*.tmp"))
    broken.fit(4, resume=True, plugins=[AsyncCheckpointIO(AtomicCheckpointIO())])
    assert torch.load(last, weights_only=True)["epoch"] == 3
    for a, b in zip(straight.model.state_dict().values(), broken.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert broken.recorder.values == straight.recorder.values and len(broken.recorder.values) == 4

"""Shared test helpers: tiny data, a learner factory, and the launcher of the test scripts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from bridge import DataBunch, Learner

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "ddp_scripts"
ONE_PROCESS_SCRIPTS = REPO / "tests" / "scripts"
QUIET = dict(enable_progress_bar=False, logger=False)


def make_data(n: int = 192, n_valid: int = 64, n_in: int = 8, bs: int = 32, seed: int = 0, **kw: Any) -> DataBunch:
    """Linearly separable 2-class data: the class is the sign of the first feature."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_valid, n_in, generator=g)
    y = (x[:, 0] > 0).long()
    return DataBunch.from_datasets(TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:]), bs=bs, **kw)


def make_model(n_in: int = 8, n_out: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_out))


def make_learner(tmp_path: Path | str, data: DataBunch | None = None, **kw: Any) -> Learner:
    """A small learner writing under ``tmp_path``, quiet (no bar, no logger) unless overridden."""
    opts: dict[str, Any] = {**QUIET, "loss_func": nn.CrossEntropyLoss(), "path": tmp_path}
    opts.update(kw)
    return Learner(data or make_data(), opts.pop("model", None) or make_model(), **opts)


def script_command(script: str, *args: str) -> list[str]:
    """The command line that runs ``tests/ddp_scripts/<script>.py`` or ``tests/scripts/<script>.py`` with ``args``."""
    paths = [folder / f"{script}.py" for folder in (SCRIPTS, ONE_PROCESS_SCRIPTS)]
    found = [path for path in paths if path.is_file()]
    if len(found) != 1:
        where = "no" if not found else "more than one"
        raise ValueError(
            f"script_command: {where} script {script!r} in {SCRIPTS} or {ONE_PROCESS_SCRIPTS}"
            " (give a module name without .py)"
        )
    return [sys.executable, str(found[0]), *args]


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a test script: this checkout first on ``PYTHONPATH``, one OpenMP thread, ``extra``."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run_script(script: str, tmp_path: Path, *args: str, timeout: float = 180) -> list[dict[str, Any]]:
    """Run ``tests/ddp_scripts/<script>.py ARGS`` (or ``tests/scripts/``) in ``tmp_path``.

    DDP scripts launch their own ranks. The script writes ``result_rank{r}.json`` files (with
    :func:`tests.ddp_scripts._common.dump`); they are returned sorted by rank. A non-zero exit
    fails with the script's output.
    """
    cmd = script_command(script, *args)
    proc = subprocess.run(cmd, cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"script failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    results = []
    for result in sorted(tmp_path.glob("result_rank*.json")):
        results.append(json.loads(result.read_text()))
    return results


def still_running(pgid: int, cwd: Path, script_file: str) -> dict[int, int]:
    """``{pid: process group}`` of the processes (zombies excluded) in group ``pgid`` or running ``script_file`` in ``cwd``.

    Read from ``/proc``; the second kind catches a rank that left the group (a launcher may start
    ranks in sessions of their own).
    """
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            state, _, group = stat[stat.rindex(")") + 2 :].split()[:3]  # after "pid (comm) ": state, ppid, pgrp
            if state == "Z":
                continue
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if int(group) == pgid or (script_file in argv and (proc / "cwd").resolve() == cwd.resolve()):
                found[int(proc.name)] = int(group)
        except (OSError, ValueError):  # ended meanwhile, or not ours to read
            continue
    return found


def kill_at_marker(script: str, tmp_path: Path, marker: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``script ARGS`` in ``tmp_path`` in a new process group; SIGKILL the whole group once ``marker`` exists.

    On every way out (the marker, a timeout, an early exit, an error here) the group is killed, then
    any process still running the script in ``tmp_path`` outside it, each by its id, and all are
    waited for. Returns the launcher's ``returncode`` (``-9`` when the kill ended it), the pids that
    had ``escaped`` the group, the pids ``left`` running afterwards and the script's ``log``. Raises
    ``AssertionError`` if the script ends, or ``timeout`` passes, before ``marker`` appears.
    """
    cmd = script_command(script, *args)
    log_path = tmp_path / f"{script}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=script_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the ranks it launches are in it
        )  # fmt: skip
        escaped: list[int] = []
        try:
            deadline = time.monotonic() + timeout
            while not (tmp_path / marker).exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    what = f"ended (exit {proc.returncode})" if proc.poll() is not None else f"ran {timeout:.0f} s"
                    raise AssertionError(f"{script} {what} before writing {marker}:\n{log_path.read_text()[-6000:]}")
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            escaped = [pid for pid, group in still_running(proc.pid, tmp_path, cmd[1]).items() if group != proc.pid]
            for pid in escaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while still_running(proc.pid, tmp_path, cmd[1]) and time.monotonic() < deadline:
                time.sleep(0.05)
    left = sorted(still_running(proc.pid, tmp_path, cmd[1]))
    return {"returncode": proc.returncode, "escaped": escaped, "left": left, "log": log_path.read_text()}

"""The real TensorBoard server over a fit's default log directory serves the Recorder's numbers.

A tiny fit with the Learner's default logger (``TensorBoardLogger`` under
``learn.path/lightning_logs``), then ``python -m tensorboard.main`` on 127.0.0.1 (a free
port), read back through the HTTP data API the dashboard itself uses
(``/data/plugin/scalars/tags`` and ``/data/plugin/scalars/scalars?run=&tag=``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import make_learner

START_TIMEOUT = 60.0  # seconds for the server to come up and load the run; a bound, not a timing assert


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(-1) == y).float().mean()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TensorBoardServer:
    """``tensorboard --logdir DIR`` on 127.0.0.1, queried through its JSON data API."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--load_fast=false",  # the Python loader: no data-server binary needed
            "--reload_interval=1",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def get(self, route: str, **query: str) -> Any:
        url = f"{self.url}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def wait_for(self, ready: Any, what: str) -> Any:
        """Poll until ``ready()`` returns something truthy, within START_TIMEOUT."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tensorboard exited with {self.proc.returncode}:\n{self.output()}")
            try:
                result = ready()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                result = None
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"tensorboard did not serve {what} within {START_TIMEOUT:.0f} s:\n{self.output()}")

    def output(self) -> str:
        self.stop()
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def fitted(tmp_path: Path) -> Any:
    # Default logger (logger=True): a TensorBoardLogger under learn.path/lightning_logs, as the quickstart.
    learn = make_learner(tmp_path, logger=True, log_every_n_steps=1, metrics=[accuracy])
    learn.fit(3)
    return learn


@pytest.fixture
def server(fitted: Any) -> Iterator[TensorBoardServer]:
    srv = TensorBoardServer(Path(fitted.path) / "lightning_logs")
    try:
        yield srv
    finally:
        srv.stop()


def test_tensorboard_server_serves_the_recorder_values(fitted: Any, server: TensorBoardServer) -> None:
    rec = fitted.recorder
    n_steps, n_epochs, n_iter = len(rec.losses), len(rec.values), fitted.n_iter_per_epoch()
    assert (n_steps, n_epochs, n_iter) == (18, 3, 6)

    def series(tag: str) -> list[list[float]]:
        return server.get("/data/plugin/scalars/scalars", run="version_0", tag=tag)  # [[wall_time, step, value]]

    def loaded() -> bool:
        tags = server.get("/data/plugin/scalars/tags")
        wanted = {"train_loss", "lr", "valid_loss", "accuracy", "epoch"}
        if not wanted <= set(tags.get("version_0", {})):
            return False
        # The loader reads the event file in the background: wait for every point.
        return len(series("train_loss")) == n_steps and len(series("accuracy")) == n_epochs

    server.wait_for(loaded, "the run's scalars")
    assert server.get("/data/runs") == ["version_0"]  # one run: the fit's default logger

    # Per step: the Recorder's smoothed train loss (debiased EMA), logged every step (log_every_n_steps=1).
    train = series("train_loss")
    assert [int(s) for _, s, _ in train] == list(range(1, n_steps + 1))
    assert [v for _, _, v in train] == pytest.approx(rec.losses, rel=1e-6)  # float32 in the event file
    lrs = series("lr")
    assert [int(s) for _, s, _ in lrs] == list(range(1, n_steps + 1))
    assert [v for _, _, v in lrs] == pytest.approx([float(x) for x in rec.lrs], rel=1e-6)

    # Per epoch: valid_loss and the metric at Lightning's epoch-end step (global_step - 1).
    epoch_steps = [(e + 1) * n_iter - 1 for e in range(n_epochs)]
    for col, tag in ((1, "valid_loss"), (2, "accuracy")):
        logged = series(tag)
        assert [int(s) for _, s, _ in logged] == epoch_steps
        assert [v for _, _, v in logged] == pytest.approx([row[col] for row in rec.values], rel=1e-6)
    epochs = series("epoch")
    assert [(int(s), v) for _, s, v in epochs] == [(s, float(e)) for e, s in enumerate(epoch_steps)]

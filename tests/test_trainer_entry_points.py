"""bridge.trainer.cached_entry_points: Lightning's callback-factory entry points still reach every Trainer.

A fake installed distribution (a ``.dist-info`` folder with ``entry_points.txt``) on ``sys.path``
registers a ``lightning.pytorch.callbacks_factory``; each Trainer the Learner's policy builds must
get fresh callbacks from it, and a distribution added mid-session must be seen.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from bridge.trainer import make_trainer

FACTORY = """
import lightning.pytorch as pl

class Marked(pl.Callback):
    pass

def factory():
    return [Marked()]
"""


def _install(site: Path, name: str) -> None:
    (site / f"{name}.py").write_text(FACTORY)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lightning.pytorch.callbacks_factory]\n{name} = {name}:factory\n")


def _marked(trainer: pl.Trainer) -> list[pl.Callback]:
    return [cb for cb in trainer.callbacks if type(cb).__name__ == "Marked"]


def test_factories_run_for_every_trainer_and_new_installs_are_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    opts = {"logger": False, "enable_progress_bar": False}
    assert _marked(make_trainer(tmp_path, opts, {})) == []  # nothing installed yet: cached as empty

    time.sleep(0.01)  # a distinct folder mtime
    _install(site, "fl_marked_a")
    first, second = (make_trainer(tmp_path, opts, {}) for _ in range(2))
    assert len(_marked(first)) == 1 and len(_marked(second)) == 1
    assert _marked(first)[0] is not _marked(second)[0]  # the factory ran again: fresh callbacks
    assert _marked(pl.Trainer(**opts))  # Lightning's own Trainer sees the same
    sys.modules.pop("fl_marked_a", None)

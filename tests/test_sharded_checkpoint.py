"""Sharded checkpoints replace the previous one atomically (``bridge/sharded_checkpoint.py``), in one process.

The 2-process FSDP2 runs of ``tests/test_fsdp.py`` save, resume and are killed through the same code;
here a failed write (what a kill during it leaves) and the removal of a checkpoint are checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.sharded_checkpoint import AtomicModelParallelStrategy, save_folder


def _writer(text: str, fail: bool = False) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "__0_0.distcp").write_text(text)
        if fail:
            raise OSError("disk full")  # half written: one shard, no .metadata
        (folder / ".metadata").write_text(text)

    return write


def _listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_a_failed_write_leaves_the_last_checkpoint_whole_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    save_folder(last, _writer("epoch 0"), token="0")
    assert (last / ".metadata").read_text() == "epoch 0" and last.is_dir()
    with pytest.raises(OSError, match="disk full"):
        save_folder(last, _writer("epoch 1", fail=True), token="1")
    # Still the whole epoch-0 checkpoint under the final name; the partial folder is left aside.
    assert (last / ".metadata").read_text() == (last / "__0_0.distcp").read_text() == "epoch 0"
    assert _listing(tmp_path) == [".last.ckpt.0.ckptdir", ".last.ckpt.1.ckptdir", "last.ckpt"]
    save_folder(last, _writer("epoch 2"), token="2")
    assert (last / ".metadata").read_text() == "epoch 2"
    assert _listing(tmp_path) == [".last.ckpt.2.ckptdir", "last.ckpt"]  # the earlier and the partial one removed
    assert os.readlink(last) == ".last.ckpt.2.ckptdir"  # relative: the folder can be moved


def test_an_in_place_checkpoint_of_before_and_a_file_are_replaced(tmp_path: Path) -> None:
    old = tmp_path / "last.ckpt"
    old.mkdir()
    (old / ".metadata").write_text("old layout")
    save_folder(old, _writer("new"), token="5")
    assert (old / ".metadata").read_text() == "new" and _listing(tmp_path) == [".last.ckpt.5.ckptdir", "last.ckpt"]
    single = tmp_path / "single.ckpt"
    single.write_text("a one-file checkpoint")
    save_folder(single, _writer("sharded"), token="6")
    assert (single / ".metadata").read_text() == "sharded"
    # Another checkpoint whose name starts with this one's keeps its folder.
    other = tmp_path / "last.ckpt.v2"
    save_folder(other, _writer("other"), token="9")
    save_folder(old, _writer("newer"), token="10")
    assert (other / ".metadata").read_text() == "other" and (old / ".metadata").read_text() == "newer"


def test_remove_checkpoint_removes_the_link_and_its_folder(tmp_path: Path) -> None:
    # Lightning's top-k rotation removes older checkpoints; shutil.rmtree would refuse the link.
    best = tmp_path / "epoch=0.ckpt"
    save_folder(best, _writer("best"), token="7")
    keep = tmp_path / "epoch=1.ckpt"
    save_folder(keep, _writer("kept"), token="8")
    AtomicModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1).remove_checkpoint(best)
    assert _listing(tmp_path) == [".epoch=1.ckpt.8.ckptdir", "epoch=1.ckpt"]
    assert (keep / ".metadata").read_text() == "kept"


def test_without_symbolic_links_the_folder_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise OSError("symbolic links are not supported here")

    last = tmp_path / "last.ckpt"
    save_folder(last, _writer("epoch 0"), token="0")  # a link, from a filesystem that had them
    monkeypatch.setattr(os, "symlink", no_links)
    save_folder(last, _writer("epoch 1"), token="1")
    assert not last.is_symlink() and (last / ".metadata").read_text() == "epoch 1"
    save_folder(last, _writer("epoch 2"), token="2")
    assert (last / ".metadata").read_text() == "epoch 2" and _listing(tmp_path) == ["last.ckpt"]

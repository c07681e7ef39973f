"""Sharded checkpoints (FSDP2) that replace the previous one atomically.

Lightning's ``ModelParallelStrategy`` writes a sharded checkpoint as a folder (one shard per
rank, ``.metadata``, ``meta.pt``) *into the folder of the previous one*: a run killed during
that write leaves a folder mixing two epochs under the final name. Here every save writes a
new folder next to it, ``.<name>.<token>.ckptdir``; once every rank has written its shard,
global rank 0 points ``<name>`` (a symbolic link) at it with one atomic ``os.replace`` and
removes the folders of earlier saves. ``<name>`` is therefore always a complete checkpoint
(the previous one until the new one is whole), and it reads as a folder: Lightning, torch's
distributed checkpoint reader and ``resume=True`` open it as before.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> def write(folder: Path) -> None:
    ...     folder.mkdir(); (folder / "meta.pt").write_text("epoch 1")
    >>> save_folder(root / "last.ckpt", write, token="1")
    >>> (root / "last.ckpt" / "meta.pt").read_text(), sorted(p.name for p in root.iterdir())
    ('epoch 1', ['.last.ckpt.1.ckptdir', 'last.ckpt'])
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import ModelParallelStrategy

__all__ = ["AtomicModelParallelStrategy", "publish_folder", "save_folder"]

FOLDER_SUFFIX = ".ckptdir"


def _folder_for(path: Path, token: str) -> Path:
    return path.with_name(f".{path.name}.{token}{FOLDER_SUFFIX}")


def publish_folder(folder: Path, path: Path) -> None:
    """Make ``path`` name the complete checkpoint ``folder`` (atomically), then remove earlier ones.

    ``path`` becomes a symbolic link to ``folder`` (relative: the checkpoint folder can move).
    A real folder or file already at ``path`` (a checkpoint of an earlier version, a
    non-sharded save) is moved aside first and removed with the other earlier saves. Where the
    filesystem has no symbolic links, ``folder`` is renamed to ``path`` instead.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); (root / "last.ckpt").mkdir()  # an old in-place checkpoint
        >>> new = root / ".last.ckpt.2.ckptdir"; new.mkdir()
        >>> publish_folder(new, root / "last.ckpt")
        >>> os.readlink(root / "last.ckpt"), sorted(p.name for p in root.iterdir())
        ('.last.ckpt.2.ckptdir', ['.last.ckpt.2.ckptdir', 'last.ckpt'])
    """
    link = path.with_name(f".{path.name}.link{FOLDER_SUFFIX}")
    if link.is_symlink() or link.exists():
        link.unlink()
    try:
        os.symlink(folder.name, link)
    except OSError:  # a filesystem without symbolic links: two renames (a kill between them leaves none)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            os.replace(path, _folder_for(path, f"old{time.time_ns()}"))
        os.replace(folder, path)
        folder = path
    else:
        if path.is_dir() and not path.is_symlink():  # os.replace cannot put a link over a folder
            os.replace(path, _folder_for(path, f"old{time.time_ns()}"))
        os.replace(link, path)
    # This checkpoint's own folders only (".last.ckpt.v2.<n>.ckptdir" is another checkpoint's).
    own = re.compile(rf"\.{re.escape(path.name)}\.(old)?\d+{re.escape(FOLDER_SUFFIX)}")
    for stale in path.parent.iterdir():
        if stale != folder and own.fullmatch(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def save_folder(
    path: Path,
    write: Callable[[Path], None],
    token: str,
    barrier: Callable[[], None] = lambda: None,
    is_writer: bool = True,
) -> None:
    """``write(folder)`` on every rank into a new folder, then (after ``barrier``) publish it at ``path``.

    ``token`` (digits) names the new folder and must be the same on every rank; ``is_writer`` is true
    on the one rank that publishes (global rank 0). A ``write`` that fails leaves ``path`` as
    it was; its partial folder goes with the next save that completes.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> save_folder(root / "last.ckpt", lambda folder: folder.mkdir(), token="3")
        >>> os.readlink(root / "last.ckpt")
        '.last.ckpt.3.ckptdir'
    """
    folder = _folder_for(path, token)
    write(folder)
    barrier()  # every rank's shard is on disk
    if is_writer:
        publish_folder(folder, path)
    barrier()  # nobody reads or writes the checkpoint before it is published


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` whose sharded checkpoints replace the previous one atomically (see the module).

    The Learner builds its Trainers with it when given a ``ModelParallelStrategy``
    (:func:`bridge.sharding.fresh_strategy`); it is used like the class it extends.

    Example:
        >>> s = AtomicModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        >>> isinstance(s, ModelParallelStrategy)
        True
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not self._save_distributed_checkpoint:
            super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)
            return
        path = Path(self.broadcast(filepath))
        token = self.broadcast(f"{time.time_ns()}")  # one folder name on every rank
        save_folder(
            path,
            lambda folder: super(AtomicModelParallelStrategy, self).save_checkpoint(checkpoint, folder),
            token,
            barrier=self.barrier,
            is_writer=self.global_rank == 0,
        )

    def remove_checkpoint(self, filepath: _PATH) -> None:
        # A checkpoint saved here is a link and its folder: remove both (rmtree refuses a link).
        path = Path(filepath)
        if path.is_symlink():
            if self.is_global_zero:
                target = path.parent / os.readlink(path)
                path.unlink()
                if target.name.endswith(FOLDER_SUFFIX):
                    shutil.rmtree(target, ignore_errors=True)
            return
        super().remove_checkpoint(filepath)

"""``AtomicCheckpointIO``: Lightning's checkpoint I/O, crash-safe on local disks and safe to load.

Lightning's ``TorchCheckpointIO`` writes a checkpoint to a temporary file in the system's
temp folder and then ``shutil.move``-s it into place: when that folder is on another
filesystem (a tmpfs ``/tmp``, a mounted volume) the move is a copy, and a process killed
during it leaves a half-written file under the final name. Here local checkpoints go
through :func:`bridge.distributed._atomic` (temp file in the target's folder, fsync,
``os.replace``); remote ``fsspec`` paths keep Lightning's path. Loading defaults to
``weights_only=True`` and names the file when it is not a readable checkpoint.
"""

from __future__ import annotations

import pickle
import zipfile
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .distributed import _atomic

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint I/O whose local files are complete or absent, never half-written.

    Every ``Learner`` fit uses it unless a ``CheckpointIO`` plugin is given.

    Example:
        >>> import tempfile, torch
        >>> io = AtomicCheckpointIO()
        >>> path = tempfile.mkdtemp() + "/last.ckpt"
        >>> io.save_checkpoint({"step": torch.tensor(3)}, path)
        >>> io.load_checkpoint(path)["step"].item()
        3
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local files) or as Lightning does (remote)."""
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        _atomic(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` with ``weights_only=True`` unless told otherwise; unreadable files name themselves."""
        try:
            return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        except pickle.UnpicklingError as exc:
            if "weights only" in str(exc).lower() and _is_zip(path):
                raise pickle.UnpicklingError(
                    f"{str(path)!r} holds objects other than tensors and plain containers; fastlight loads "
                    f"checkpoints with weights_only=True, so no code in a file runs. Details: {exc}"
                ) from exc
            raise _unreadable(path, exc) from exc
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except Exception as exc:
            # Garbage makes torch's reader fail in many ways (KeyError, IndexError, OSError, ...):
            # a file that is not a whole zip archive is not a checkpoint, whatever the error.
            if not _is_zip(path):
                raise _unreadable(path, exc) from exc
            raise


def _is_zip(path: _PATH) -> bool:
    fs = get_filesystem(path)
    if not isinstance(fs, LocalFileSystem):
        return True  # remote: keep the original error
    return zipfile.is_zipfile(str(path))


def _unreadable(path: _PATH, exc: BaseException) -> RuntimeError:
    return RuntimeError(f"{str(path)!r} is not a readable checkpoint (truncated or another format): {exc}")

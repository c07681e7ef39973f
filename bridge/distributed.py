"""The one place where fastlight touches ranks and files: rank checks, collectives, atomic writes.

Everything that writes a file goes through :func:`atomic_save` or
:func:`atomic_write_text`: only global rank 0 writes, into a temporary file in the
target's folder that is then renamed over the final name, so a crash never leaves a
half-written file where a good one stood.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only

__all__ = [
    "TMP_SUFFIX",
    "all_ranks_agree",
    "atomic_save",
    "atomic_write_text",
    "barrier",
    "broadcast_object",
    "collectives_enabled",
    "global_rank",
    "is_global_zero",
    "rank_local",
    "reduce_mean",
    "reduce_mean_ragged",
    "to_detach",
    "world_size",
]

#: Suffix of in-progress files; never a finished checkpoint.
TMP_SUFFIX = ".tmp"


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


_local_depth = 0


@contextlib.contextmanager
def rank_local() -> Iterator[None]:
    """Run code that only some ranks execute: the collectives here act on this rank alone.

    Lightning calls a few hooks on rank 0 only (``ddp_spawn`` collects rank 0's results);
    a collective there would wait forever for the other ranks.

    Example:
        >>> import torch
        >>> with rank_local():
        ...     reduce_mean(torch.tensor([2.0])).tolist()
        [2.0]
    """
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def collectives_enabled() -> bool:
    """True when a collective would reach other ranks: several processes, outside :func:`rank_local`.

    Example:
        >>> collectives_enabled()
        False
    """
    return _local_depth == 0 and _dist_ready() and dist.get_world_size() > 1


def global_rank() -> int:
    """This process's global rank (0 without distributed training).

    Example:
        >>> global_rank()
        0
    """
    if _dist_ready():
        return int(dist.get_rank())
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def world_size() -> int:
    """The number of processes in the job (1 without distributed training).

    Example:
        >>> world_size()
        1
    """
    return int(dist.get_world_size()) if _dist_ready() else 1


def is_global_zero() -> bool:
    """True in the process that writes files and prints (global rank 0).

    Example:
        >>> is_global_zero()
        True
    """
    return global_rank() == 0


def _atomic(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_owner()}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # Temp files of earlier writes of this file that a killed process left behind (not those
    # of a live writer of the same file, e.g. another job on this host or another machine).
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        match = _TEMP_NAME.fullmatch(stale.name[len(target.name) + 2 :])
        if match is None:
            continue  # another file's temp (".a.b.*.tmp" also matches ".a.*.tmp")
        host, pid = match["host"], match["pid"]
        if host is not None and (host != _host() or (int(pid) != os.getpid() and _alive(int(pid)))):
            continue
        stale.unlink(missing_ok=True)
    return target


#: ``host@pid.random.tmp`` (this version) or ``random.tmp`` (temp files of earlier versions).
_TEMP_NAME = re.compile(rf"(?:(?P<host>[^.@]+)@(?P<pid>\d+)\.)?[^.]+{re.escape(TMP_SUFFIX)}")


def _host() -> str:
    return re.sub(r"[.@]", "_", socket.gethostname()) or "host"


def _owner() -> str:
    return f"{_host()}@{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)`` on global rank 0 only, atomically (temp file + rename).

    Returns the final path on every rank.

    Example:
        >>> import tempfile, torch
        >>> p = atomic_save({"w": torch.ones(2)}, tempfile.mkdtemp() + "/w.pth")
        >>> torch.load(p, weights_only=True)["w"].tolist()
        [1.0, 1.0]
    """
    if not is_global_zero():
        return Path(path)
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` on global rank 0 only, atomically.

    Example:
        >>> import tempfile
        >>> atomic_write_text("a,b\\n", tempfile.mkdtemp() + "/h.csv").read_text()
        'a,b\\n'
    """
    if not is_global_zero():
        return Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return _atomic(path, write)


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks (``t`` itself without distributed training).

    Example:
        >>> import torch
        >>> reduce_mean(torch.tensor([1.0, 3.0])).tolist()
        [1.0, 3.0]
    """
    if not collectives_enabled():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def reduce_mean_ragged(t: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks of 1-d tensors that may differ in length by rank.

    Positions some ranks lack are averaged over the ranks that have them; the result has
    the longest length. Two tiny all-reduces; ``t`` itself without distributed training.

    Example:
        >>> import torch
        >>> reduce_mean_ragged(torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """
    if not collectives_enabled():
        return t
    n = torch.tensor([float(t.numel())], device=t.device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    buf = torch.zeros(2, int(n.item()), device=t.device, dtype=torch.float64)
    buf[0, : t.numel()] = t.detach().flatten().double()
    buf[1, : t.numel()] = 1.0
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf[0] / buf[1].clamp(min=1.0)).to(t.dtype)


def barrier() -> None:
    """Wait for every rank (no-op without distributed training); e.g. before reading rank 0's file.

    Example:
        >>> barrier()
    """
    if collectives_enabled():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; ``obj`` itself without DDP).

    Example:
        >>> broadcast_object({"lr": 1e-3})
        {'lr': 0.001}
    """
    if not collectives_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_ranks_agree(flag: bool, device: torch.device | None = None) -> bool:
    """True if ``flag`` is True on any rank: one tiny all-reduce, so every rank decides alike.

    Example:
        >>> all_ranks_agree(True)
        True
    """
    if not collectives_enabled():
        return flag
    backend = dist.get_backend()
    dev = (
        device
        if device is not None
        else torch.device("cuda", torch.cuda.current_device())
        if backend == "nccl"
        else torch.device("cpu")
    )
    t = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def to_detach(b: Any, cpu: bool = True, gather: bool = True) -> Any:
    """fastai's ``to_detach``: tensors in ``b`` (nested lists, tuples, dicts) detached, moved to the CPU.

    With ``gather`` under DDP each tensor is all-gathered along its first dimension (a collective:
    every rank must call it at the same point), as fastai's ``maybe_gather``.

    Example:
        >>> to_detach({"x": torch.ones(2, requires_grad=True)})["x"].requires_grad
        False
    """
    if isinstance(b, torch.Tensor):
        x = b.detach()
        if gather and collectives_enabled():
            x = x[None] if x.ndim == 0 else x
            parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, x.contiguous())
            x = torch.cat(parts, dim=0)
        return x.cpu() if cpu else x
    if isinstance(b, (list, tuple)):
        return type(b)(to_detach(o, cpu, gather) for o in b)
    if isinstance(b, dict):
        return {k: to_detach(v, cpu, gather) for k, v in b.items()}
    return b

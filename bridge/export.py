"""``learn.export()`` and ``load_learner()``: a trained model for serving, safe to load by default.

The default file is a ``torch.export`` program of the model in eval mode (batch dimension
dynamic) plus plain JSON metadata (inputs, class names, the output activation and decoding).
Loading it needs neither the model's Python class nor any code from the file: ``load_learner``
checks every entry first (:mod:`bridge.safe_pt2`) and refuses, naming the file, what could run
code. ``export(pickle=True)`` writes fastai's kind of file instead (the model and the loss
function pickled, no data), for models ``torch.export`` cannot capture; reading it runs code
from the file, so ``load_learner`` does it only with ``trusted=True``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .decode import Decoding, LossMethods, decoding_for, vocab_of
from .distributed import _atomic, barrier, global_rank
from .inference import ExportedModel, InferenceLearner

if TYPE_CHECKING:
    from .protocol import LearnerState as Learner

__all__ = ["export_learner", "load_learner"]

FORMAT = "fastlight.export"
PICKLE_FORMAT = "fastlight.export.pickle"
VERSION = 1
_PICKLE_HINT = (
    "learn.export(fname, pickle=True) writes fastai's kind of export instead (the model pickled; "
    "load_learner(fname, trusted=True) reads it where the model's class can be imported)"
)


def _check_fname(fname: object, where: str) -> str:
    if not isinstance(fname, (str, os.PathLike)) or not isinstance(os.fspath(fname), str):
        raise TypeError(f"{where}: `fname` must be a path (str or os.PathLike), got {type(fname).__name__}")
    return os.fspath(fname)


def _write(data: bytes, path: Path) -> None:
    """Global rank 0 writes ``data`` to ``path`` atomically; every rank waits for the file."""
    if global_rank() == 0:

        def write(tmp: str) -> None:
            Path(tmp).write_bytes(data)

        _atomic(path, write)
    barrier()  # the file is there before any rank goes on to read it


def _sample(learn: Learner) -> tuple[Tensor, ...]:
    """Two items of the first validation batch (at least 2, so that the batch dimension stays dynamic)."""
    batch = next(iter(learn.dls.valid_dl))
    parts = list(batch)[: learn.n_inp] if isinstance(batch, (list, tuple)) else [batch]
    for i, x in enumerate(parts):
        if not isinstance(x, Tensor) or x.ndim == 0:
            raise TypeError(f"export: input {i} of a validation batch must be a batched Tensor, got {type(x).__name__}")
    return tuple((x if len(x) >= 2 else x.repeat(2, *([1] * (x.ndim - 1))))[:2].detach().cpu() for x in parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _capture(model: nn.Module, sample: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    name = type(model).__name__
    batch = torch.export.Dim("batch")
    try:
        program = torch.export.export(model, sample, dynamic_shapes=tuple({0: batch} for _ in sample))
    except Exception as exc:
        raise RuntimeError(
            f"export: torch.export cannot capture {name} with a dynamic batch dimension ({_first_line(exc)}). "
            f"Make its forward traceable (no Python branching on tensor values, no untraceable calls), or: "
            f"{_PICKLE_HINT}"
        ) from exc
    captured = program.module()
    with torch.no_grad():
        for xb in (sample, tuple(x[:1] for x in sample)):  # also a batch of 1: the dimension is dynamic
            want, got = model(*xb), captured(*xb)
            if not isinstance(want, Tensor) or not isinstance(got, Tensor) or want.shape != got.shape:
                raise RuntimeError(f"export: {name} must return one Tensor to be exported; {_PICKLE_HINT}")
            if not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
                diff = float((want - got).abs().max())
                raise RuntimeError(
                    f"export: the captured program of {name} differs from the model (max |diff| {diff:.3g}); "
                    f"{_PICKLE_HINT}"
                )
    program.example_inputs = (tuple(torch.zeros_like(x) for x in sample), {})  # the file keeps no data items
    return program


def _metadata(learn: Learner, sample: tuple[Tensor, ...], decoding: Decoding | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "n_inp": learn.n_inp,
        "vocab": vocab_of(learn.dls),
        "decoding": decoding.to_dict() if decoding is not None else None,
        "bs": learn.dls.valid_dl.batch_size or 64,
        "inputs": [{"shape": list(x.shape[1:]), "dtype": str(x.dtype).removeprefix("torch.")} for x in sample],
        "model": type(learn.model).__name__,
        "torch": torch.__version__,
    }


def _cpu_model(model: nn.Module) -> nn.Module:
    on_cpu = all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    return model if on_cpu else copy.deepcopy(model).cpu()


def export_learner(learn: Learner, fname: str | os.PathLike[str] | None = None, pickle: bool = False) -> Path:
    """Write ``learn`` for serving to ``learn.path / fname`` (``export.pt2``; ``export.pkl`` with pickle); return it.

    Written by global rank 0 only, atomically; every rank returns once the file is there. The
    model is captured in eval mode on the CPU and its mode restored. See the module docstring.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from bridge import DataBunch, Learner, load_learner
        >>> ds = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> learn = Learner(DataBunch.from_datasets(ds, ds, bs=4), nn.Linear(3, 2), nn.CrossEntropyLoss(),
        ...                 path=tempfile.mkdtemp(), logger=False)
        >>> path = export_learner(learn)
        >>> path.name, load_learner(path).predict(torch.zeros(3))[1] in (0, 1)
        ('export.pt2', True)
    """
    if not isinstance(pickle, bool):
        raise TypeError(f"export: `pickle` must be a bool, got {pickle!r}")
    name = _check_fname(fname, "export") if fname is not None else ("export.pkl" if pickle else "export.pt2")
    path = Path(name) if Path(name).is_absolute() else learn.path / name
    decoding = decoding_for(learn.loss_func)
    model = learn.model
    was_training = model.training
    model.eval()
    try:
        sample = _sample(learn)
        if pickle:
            data = _pickled(learn, sample, decoding)
        else:
            if isinstance(decoding, LossMethods):
                raise ValueError(
                    f"export: the loss function's own activation/decodes ({type(learn.loss_func).__name__}) "
                    f"cannot be written as plain data; {_PICKLE_HINT}"
                )
            # Imported here: torch.export's archive modules cost ~20 ms at `import bridge`.
            from .safe_pt2 import META_ENTRY, UntrustedFileError, checked_pt2

            cpu_model = _cpu_model(model)
            program = _capture(cpu_model.eval(), sample)
            buf = io.BytesIO()
            meta = json.dumps(_metadata(learn, sample, decoding))
            torch.export.save(program, buf, extra_files={META_ENTRY.split("/", 1)[1]: meta})
            data = buf.getvalue()
            try:
                checked_pt2(data, str(path))  # what load_learner will check: never write a file it refuses
            except UntrustedFileError as exc:
                raise RuntimeError(
                    f"export: load_learner would refuse the captured program ({exc}); {_PICKLE_HINT}"
                ) from exc
    finally:
        model.train(was_training)
    _write(data, path)
    return path


def _pickled(learn: Learner, sample: tuple[Tensor, ...], decoding: Decoding | LossMethods | None) -> bytes:
    meta = _metadata(learn, sample, decoding if isinstance(decoding, Decoding) else None)
    payload = {
        "format": PICKLE_FORMAT,
        "version": VERSION,
        "meta": meta,
        "model": copy.deepcopy(learn.model).cpu().eval(),
        "loss_func": learn.loss_func,
        "decoding": decoding,
    }
    buf = io.BytesIO()
    try:
        torch.save(payload, buf)
    except Exception as exc:
        raise TypeError(
            f"export(pickle=True): the model or loss function cannot be pickled ({_first_line(exc)})"
        ) from exc
    return buf.getvalue()


def _read_meta(meta: object, file: str, fmt: str) -> dict[str, Any]:
    ok = (
        isinstance(meta, dict)
        and meta.get("format") == fmt
        and meta.get("version") == VERSION
        and isinstance(meta.get("n_inp"), int)
        and isinstance(meta.get("bs"), int)
        and (meta.get("vocab") is None or isinstance(meta.get("vocab"), list))
        and isinstance(meta.get("inputs"), list)
        and all(isinstance(s, dict) and isinstance(s.get("shape"), list) for s in meta["inputs"])
    )
    if not ok:
        raise ValueError(f"load_learner: {file!r} has no valid fastlight metadata (format {fmt!r}, version {VERSION})")
    assert isinstance(meta, dict)
    return meta


def _is_pt2(data: bytes) -> bool:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.count("/") == 1 and n.endswith("/archive_format") for n in names)


def load_learner(fname: str | os.PathLike[str], cpu: bool = True, trusted: bool = False) -> InferenceLearner:
    """Read what ``learn.export()`` wrote; return an :class:`~bridge.inference.InferenceLearner`.

    A ``.pt2`` export is checked entry by entry before torch reads it and refused
    (:class:`~bridge.safe_pt2.UntrustedFileError`, naming the file) if anything in it could run code; a pickled
    export (``export(pickle=True)``) is always refused unless ``trusted=True``, which reads
    either kind without checks. ``cpu=False`` puts the model on the GPU when there is one.

    Example:
        >>> load_learner("no/such/export.pt2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: load_learner: no file 'no/such/export.pt2'
    """
    file = _check_fname(fname, "load_learner")
    for arg, flag in (("cpu", cpu), ("trusted", trusted)):
        if not isinstance(flag, bool):
            raise TypeError(f"load_learner: `{arg}` must be a bool, got {flag!r}")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"load_learner: no file {file!r}")
    device = torch.device("cuda" if not cpu and torch.cuda.is_available() else "cpu")
    data = Path(file).read_bytes()
    if trusted and not _is_pt2(data):
        return _load_pickled(data, file, device)
    if trusted:
        archive, meta = data, _trusted_meta(data, file)
    else:
        from .safe_pt2 import checked_pt2  # lazily, as in export_learner

        archive, meta = checked_pt2(data, file)
    meta = _read_meta(meta, file, FORMAT)
    try:
        program = torch.export.load(io.BytesIO(archive))
    except Exception as exc:
        raise ValueError(f"load_learner: torch.export cannot load {file!r} ({_first_line(exc)})") from exc
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    decoding = Decoding.from_dict(meta["decoding"]) if meta.get("decoding") is not None else None
    return InferenceLearner(
        ExportedModel(program.module()),
        n_inp=meta["n_inp"],
        vocab=meta["vocab"],
        decoding=decoding,
        bs=meta["bs"],
        inputs=meta["inputs"],
        path=Path(file).parent,
    )


def _trusted_meta(data: bytes, file: str) -> Any:
    from .safe_pt2 import META_ENTRY

    archive = zipfile.ZipFile(io.BytesIO(data))
    root = archive.namelist()[0].split("/", 1)[0]
    try:
        return json.loads(archive.read(f"{root}/{META_ENTRY}"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"load_learner: {file!r} is a .pt2 archive without fastlight's metadata ({exc})") from exc


def _load_pickled(data: bytes, file: str, device: torch.device) -> InferenceLearner:
    try:
        payload = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    except Exception as exc:
        raise ValueError(f"load_learner: {file!r} is not a readable export ({_first_line(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != PICKLE_FORMAT:
        raise ValueError(f"load_learner: {file!r} is a pickle file but not one written by learn.export(pickle=True)")
    meta = _read_meta(payload.get("meta"), file, FORMAT)
    model = payload.get("model")
    if not isinstance(model, nn.Module):
        raise ValueError(f"load_learner: {file!r} holds no model")
    return InferenceLearner(
        model.to(device),
        n_inp=meta["n_inp"],
        vocab=meta["vocab"],
        decoding=payload.get("decoding"),
        bs=meta["bs"],
        loss_func=payload.get("loss_func"),
        path=Path(file).parent,
    )

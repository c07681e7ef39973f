"""Check a ``.pt2`` file before torch reads it: nothing in the file may run code.

``torch.export.load`` runs code from a crafted archive in several places (measured on torch
2.13): it unpickles weights and constants marked ``use_pickle`` with ``weights_only=False`` and
opaque constants with ``pickle.loads``; it retries the sample inputs with ``weights_only=False``
when the safe load fails; it ``sympify``-s (``eval``-s) the program's symbolic shape
expressions; and ``ExportedProgram.module()`` ``exec``-s the program's ``guards_code``.
:func:`checked_pt2` reads the archive with Python's ``zipfile`` (no torch) and refuses it,
naming the file and the entry, unless:

* its entries are exactly those ``learn.export()`` writes (one program, stored uncompressed),
  with fastlight's metadata;
* every pickled entry (weights or constants marked ``use_pickle``, the sample inputs) loads
  with torch's weights-only unpickler, and no constant is a custom or opaque object;
* the program has no guard code, its symbolic expressions are arithmetic on shape symbols, and
  its operators are ATen/prims operators or the few Python builtins torch allows.

It then returns a new archive written by torch's own writer from exactly the checked bytes, so
that torch reads what was checked (no second read of the file, no zip parser differences).
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from typing import Any

import torch
from torch.export.pt2_archive import PT2ArchiveWriter
from torch.export.pt2_archive import constants as pt2

__all__ = ["META_ENTRY", "UntrustedFileError", "checked_pt2"]

#: fastlight's metadata inside the archive (written through ``torch.export.save(extra_files=...)``).
META_ENTRY = f"{pt2.EXTRA_DIR}fastlight.json"
_MODEL = "model"
_WEIGHTS_CONFIG = pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(_MODEL)
_CONSTANTS_CONFIG = pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(_MODEL)
_PROGRAM = pt2.MODELS_FILENAME_FORMAT.format(_MODEL)
_SAMPLE_INPUTS = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(_MODEL)
_FIXED = frozenset(
    {
        pt2.ARCHIVE_FORMAT_PATH,
        pt2.ARCHIVE_VERSION_PATH,
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        _PROGRAM,
        _WEIGHTS_CONFIG,
        _CONSTANTS_CONFIG,
        _SAMPLE_INPUTS,
        META_ENTRY,
    }
)
_PAYLOAD = re.compile(
    rf"({re.escape(pt2.WEIGHTS_DIR)}{pt2.WEIGHT_FILENAME_PREFIX}|{re.escape(pt2.CONSTANTS_DIR)}"
    rf"{pt2.TENSOR_CONSTANT_FILENAME_PREFIX})\d+"
)
_PATH_NAME = re.compile(r"[A-Za-z0-9_]+")
_OPERATOR = re.compile(r"torch\.ops\.(aten|prims)\._?[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")
_BUILTINS = frozenset(
    {f"_operator.{n}" for n in "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge".split()}
    | {f"_operator.{n}" for n in ("and_", "or_", "not_", "invert")}
    | {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
    | {f"torch.{n}" for n in "sym_int sym_float sym_max sym_min sym_not sym_ite sym_sqrt sym_sum".split()}
)
# Names a symbolic expression may call: sympy's constructors and torch's sympy functions.
_SYM_CALLS = frozenset(
    "Symbol Integer Float Rational Min Max Abs Eq Ne Lt Le Gt Ge And Or Not Mul Add Pow floor ceiling "
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
    "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat "
    "TruncToInt RoundToInt RoundDecimal ToFloat Identity".split()
)
_SYM_ASSUMPTIONS = frozenset("positive negative nonnegative nonpositive integer real finite nonzero even odd".split())
_SYM_NAME = re.compile(r"[a-z]{1,4}[0-9]+")
_SYM_CHARS = re.compile(r"[A-Za-z0-9_ ()+\-*/%,.=<>!'&|~]*")
_SYM_CONSTANTS = frozenset({"oo", "zoo", "nan", "pi", "E", "true", "false"})
_SYM_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Constant,
    ast.keyword, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub,
    ast.UAdd, ast.Not, ast.Invert, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
    ast.BitAnd, ast.BitOr,
)  # fmt: skip


class UntrustedFileError(ValueError):
    """A file ``load_learner`` refuses to read without ``trusted=True``; nothing from it was run.

    Example:
        >>> issubclass(UntrustedFileError, ValueError)
        True
    """


def _refuse(file: str, why: str) -> UntrustedFileError:
    return UntrustedFileError(
        f"load_learner: refused {file!r}: {why}. Nothing from the file was run. Only for a file you trust "
        "(it may run any code): load_learner(..., trusted=True)"
    )


def _records(data: bytes, file: str) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(file, f"it is not a .pt2 archive written by learn.export() ({exc})") from exc
    names = [i.filename for i in infos]
    roots = {n.split("/", 1)[0] for n in names}
    if not names or len(roots) != 1 or any("/" not in n for n in names) or len(set(names)) != len(names):
        raise _refuse(file, "its zip entries are not one archive folder with unique names")
    records: dict[str, bytes] = {}
    for info in infos:
        name = info.filename.split("/", 1)[1]
        if name.endswith("data.pkl"):
            raise _refuse(file, "it is a pickle (torch.save) file, e.g. written by learn.export(pickle=True)")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _refuse(file, f"entry {name!r} is compressed; torch's archives store entries as they are")
        try:
            records[name] = archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise _refuse(file, f"entry {name!r} cannot be read ({exc})") from exc
    return records


def _weights_only(blob: bytes, file: str, entry: str) -> Any:
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # any refusal or damage: torch would retry or use a code-running unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(
            file, f"entry {entry!r} holds pickled data that a weights-only unpickler refuses ({first})"
        ) from exc


def _json(records: dict[str, bytes], name: str, file: str) -> Any:
    try:
        return json.loads(records[name].decode("utf-8"))
    except KeyError:
        raise _refuse(file, f"entry {name!r} is missing; it is not a file written by learn.export()") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(file, f"entry {name!r} is not valid JSON ({exc})") from exc


def _check_payloads(records: dict[str, bytes], config_name: str, folder: str, file: str) -> None:
    config = _json(records, config_name, file)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(file, f"entry {config_name!r} is not a payload config")
    for fqn, meta in entries.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or not _PATH_NAME.fullmatch(path_name):
            raise _refuse(file, f"entry {config_name!r} gives {fqn!r} no valid path_name")
        entry = folder + path_name
        if folder == pt2.CONSTANTS_DIR and not path_name.startswith(pt2.TENSOR_CONSTANT_FILENAME_PREFIX):
            raise _refuse(file, f"constant {fqn!r} ({entry!r}) is an object, not a tensor; torch unpickles it")
        if entry not in records:
            raise _refuse(file, f"entry {config_name!r} names {entry!r}, which is missing")
        use_pickle = meta.get("use_pickle")
        if not isinstance(use_pickle, bool):
            raise _refuse(file, f"entry {config_name!r} gives {fqn!r} no boolean use_pickle")
        if use_pickle:
            _weights_only(records[entry], file, entry)


def check_sym_expr(expr: str) -> bool:
    """True for a symbolic shape expression that is arithmetic on shape symbols (safe to ``sympify``).

    Example:
        >>> check_sym_expr("Symbol('s77', positive=True, integer=True)"), check_sym_expr("2*s0 + 1")
        (True, True)
        >>> check_sym_expr("__import__('os').getcwd()")
        False
    """
    if len(expr) > 10_000 or not _SYM_CHARS.fullmatch(expr):
        return False
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _SYM_NODES):
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYM_CALLS:
                return False
            for kw in node.keywords:
                if kw.arg not in _SYM_ASSUMPTIONS or not isinstance(kw.value, ast.Constant):
                    return False
            strings = [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if strings and (node.func.id != "Symbol" or strings != node.args[:1]):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _SYM_CALLS and node.id not in _SYM_CONSTANTS and not _SYM_NAME.fullmatch(node.id):
                return False
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str) and not _SYM_NAME.fullmatch(value):
                return False
            if not isinstance(value, (str, int, float, bool)):
                return False
    return True


def _check_target(target: object) -> bool:
    return isinstance(target, str) and (bool(_OPERATOR.fullmatch(target)) or target in _BUILTINS)


def _check_program(program: object, file: str) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _refuse(file, f"entry {_PROGRAM!r} is not a serialized ExportedProgram")
    if program.get("guards_code") not in (None, []):
        raise _refuse(file, f"entry {_PROGRAM!r} carries guard code (Python source that torch exec-s)")
    stack: list[Any] = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and not (isinstance(value, str) and check_sym_expr(value)):
                    raise _refuse(file, f"entry {_PROGRAM!r} has a symbolic expression that is not shape arithmetic")
                if key in ("target", "as_operator") and isinstance(value, str) and not _check_target(value):
                    raise _refuse(file, f"entry {_PROGRAM!r} calls {value[:80]!r}, not an ATen operator")
                stack.append(value)


def checked_pt2(data: bytes, file: str) -> tuple[bytes, Any]:
    """Check the bytes of a ``.pt2`` export; return ``(archive to give torch, fastlight metadata)``.

    Raises :class:`UntrustedFileError` naming ``file`` and the offending entry; nothing in
    the file is unpickled (but by the weights-only unpickler), evaluated or executed.

    Example:
        >>> checked_pt2(b"not a zip", "x.pt2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        bridge.safe_pt2.UntrustedFileError: load_learner: refused 'x.pt2': it is not a .pt2 archive ...
    """
    records = _records(data, file)
    for name in records:
        if name not in _FIXED and not _PAYLOAD.fullmatch(name):
            raise _refuse(file, f"entry {name!r} is not part of a file written by learn.export()")
    if records.get(pt2.ARCHIVE_FORMAT_PATH) != b"pt2":
        raise _refuse(file, "it is not a torch.export archive (no 'archive_format' pt2)")
    if records.get(pt2.ARCHIVE_VERSION_PATH) != pt2.ARCHIVE_VERSION_VALUE.encode():
        raise _refuse(file, f"its archive version is not {pt2.ARCHIVE_VERSION_VALUE} (this torch's)")
    meta = _json(records, META_ENTRY, file)
    _check_payloads(records, _WEIGHTS_CONFIG, pt2.WEIGHTS_DIR, file)
    _check_payloads(records, _CONSTANTS_CONFIG, pt2.CONSTANTS_DIR, file)
    if _SAMPLE_INPUTS not in records:
        raise _refuse(file, f"entry {_SAMPLE_INPUTS!r} is missing")
    _weights_only(records[_SAMPLE_INPUTS], file, _SAMPLE_INPUTS)
    _check_program(_json(records, _PROGRAM, file), file)
    out = io.BytesIO()
    with PT2ArchiveWriter(out) as writer:
        for name, blob in records.items():
            if not name.startswith(".data/") and name != "byteorder":  # the writer adds its own
                writer.write_bytes(name, blob)
    return out.getvalue(), meta

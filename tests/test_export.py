"""export / load_learner: the checked .pt2 (loaded in a fresh process), crafted files refused, the trusted pickle."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bridge import Learner, load_learner
from bridge.decode import decoding_for
from bridge.inference import InferenceLearner
from bridge.safe_pt2 import UntrustedFileError, checked_pt2
from tests.helpers import REPO, make_data, make_learner

BN_DROP_NET = """
from torch import nn

class BNDropNet(nn.Module):  # eval and train mode differ: batch statistics and dropout
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))

    def forward(self, x):
        return self.body(x)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _valid_x(learn: Learner) -> Tensor:
    return torch.cat([b[0] for b in learn.dls.valid_dl])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export of a small trained learner, to craft bad files from."""
    learn = make_learner(tmp_path_factory.mktemp("exported"), data=make_data(n=64, n_valid=32, bs=16))
    learn.fit(1)
    return learn.export()


# -- the safe file, in a process without the model's class --------------------------------------


def test_export_loads_in_a_fresh_process_without_the_model_class(tmp_path: Path) -> None:
    src = tmp_path / "src" / "bn_drop_net.py"
    src.parent.mkdir()
    src.write_text(textwrap.dedent(BN_DROP_NET))
    spec = importlib.util.spec_from_file_location("bn_drop_net", src)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bn_drop_net"] = module
    try:
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        learn = make_learner(tmp_path / "train", model=module.BNDropNet(), data=make_data(n=128, n_valid=40), lr=1e-2)
        learn.fit(2)
        learn.model.train()  # left in train mode: the export must still be the eval-mode model
        path = learn.export()
        assert learn.model.training  # its mode is given back
        preds, _ = learn.get_preds()
        x = _valid_x(learn)
        with torch.no_grad():
            in_train_mode = learn.model.train()(x)
    finally:
        del sys.modules["bn_drop_net"]
    assert path == tmp_path / "train" / "export.pt2" and path.is_file()
    assert not list(path.parent.glob("*.tmp"))
    assert (in_train_mode - preds).abs().max() > 1e-2  # a train-mode export would show in the comparison
    torch.save(x, tmp_path / "x.pt")
    serve = tmp_path / "serve"
    serve.mkdir()
    out = tmp_path / "out.pt"
    cmd = [sys.executable, "-m", "tests.subprocess_scripts.load_exported", str(path), str(tmp_path / "x.pt")]
    proc = subprocess.run(
        [*cmd, str(out), "bn_drop_net"], cwd=serve, env=_env(), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = torch.load(out, weights_only=True)
    assert res["importable"] is False
    torch.testing.assert_close(res["preds"], preds, rtol=0, atol=1e-6)
    torch.testing.assert_close(res["again"], preds, rtol=0, atol=1e-6)  # other batch sizes, same answers
    assert res["n_targs"] == 0
    assert res["index"] == preds[0].argmax() and res["name"] == int(preds[0].argmax())  # no class names: the index
    torch.testing.assert_close(res["probs"], preds[0].softmax(-1), rtol=0, atol=1e-6)


def test_import_bridge_leaves_torch_export_archive_unloaded() -> None:
    # ~20 ms of `import bridge` (docs/performance.md): the archive code loads with the first export/load.
    code = "import sys, bridge; print('torch.export.pt2_archive' in sys.modules, 'bridge.safe_pt2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


def test_export_restores_the_mode_and_writes_under_learn_path(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, data=make_data(n=32, n_valid=16, bs=8))
    learn.model.eval()
    assert learn.export("sub/model.pt2") == tmp_path / "sub" / "model.pt2"
    assert not learn.model.training and (tmp_path / "sub" / "model.pt2").is_file()
    absolute = tmp_path / "abs.pt2"
    assert learn.export(absolute) == absolute and absolute.is_file()


def test_a_model_torch_export_cannot_capture_names_the_reason_and_pickle(tmp_path: Path) -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.lin(x) if x.sum() > 0 else -self.lin(x)  # Python branching on a tensor value

    learn = make_learner(tmp_path, model=Branchy(), data=make_data(n=32, n_valid=16, bs=8))
    with pytest.raises(RuntimeError, match=r"cannot capture Branchy.*data-dependent.*pickle=True.*trusted=True"):
        learn.export()
    assert not list(tmp_path.glob("export*"))


# -- the pickle path: trusted only --------------------------------------------------------------


class _Evil:
    """Unpickling it creates a folder: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_pickle_export_needs_trusted(tmp_path: Path) -> None:
    learn = make_learner(tmp_path, data=make_data(n=64, n_valid=24, bs=8))
    learn.fit(1)
    path = learn.export(pickle=True)
    assert path == tmp_path / "export.pkl"
    with pytest.raises(UntrustedFileError, match=r"export\.pkl.*pickle.*trusted=True"):
        load_learner(path)
    loaded = load_learner(path, trusted=True)
    x = _valid_x(learn)
    preds, _ = learn.get_preds()
    torch.testing.assert_close(loaded.get_preds(dl=loaded.test_dl(x))[0], preds, rtol=0, atol=1e-6)
    assert isinstance(loaded.loss_func, nn.CrossEntropyLoss) and loaded.decoding == decoding_for(nn.CrossEntropyLoss())


def test_trusted_reads_a_pt2_without_the_checks(exported: Path) -> None:
    x = torch.randn(5, 8)
    checked, unchecked = load_learner(exported), load_learner(exported, trusted=True)
    torch.testing.assert_close(
        unchecked.get_preds(dl=unchecked.test_dl(x))[0], checked.get_preds(dl=checked.test_dl(x))[0], rtol=0, atol=0
    )


def test_a_model_that_cannot_be_pickled_is_named(tmp_path: Path) -> None:
    class Local(nn.Linear):  # defined in a function: pickle cannot find it by name
        pass

    learn = make_learner(tmp_path, model=Local(8, 2), data=make_data(n=32, n_valid=16, bs=8))
    with pytest.raises(TypeError, match=r"export\(pickle=True\): the model or loss function cannot be pickled.*Local"):
        learn.export(pickle=True)
    assert not list(tmp_path.glob("export*"))


def test_crafted_pickle_export_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "export.pkl"
    torch.save({"format": "fastlight.export.pickle", "model": _Evil(marker)}, path)
    with pytest.raises(UntrustedFileError, match=r"export\.pkl.*Nothing from the file was run.*trusted=True"):
        load_learner(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"export\.pkl.*no valid fastlight metadata"):
        load_learner(path, trusted=True)  # trusting it runs its code: the file is a live one
    assert marker.exists()


# -- crafted .pt2 files: every way torch.export.load runs code ------------------------------------


def _entries(path: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/", 1)[0]
        return root, {n.split("/", 1)[1]: z.read(n) for n in names}


def _write_zip(path: Path, root: str, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:  # stored, as torch writes them
        for name, blob in entries.items():
            z.writestr(f"{root}/{name}", blob)
    return path


def _pickled(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _expr_strs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["expr_str"]] if "expr_str" in node else [s for v in node.values() for s in _expr_strs(v)]
    return [s for v in node for s in _expr_strs(v)] if isinstance(node, list) else []


def _craft(src: Path, dst: Path, how: str, marker: Path) -> tuple[Path, str]:
    """A copy of a real export with one code-running part; returns it and the entry to be named."""
    root, entries = _entries(src)
    program = json.loads(entries["models/model.json"])
    evil = f"__import__('os').mkdir({str(marker)!r})"
    if how == "weight":
        config = json.loads(entries["data/weights/model_weights_config.json"])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        entries["data/weights/model_weights_config.json"] = json.dumps(config).encode()
        entries["data/weights/" + first["path_name"]] = _pickled(_Evil(marker))
        entry = "data/weights/" + first["path_name"]
    elif how == "sample_inputs":
        entries["data/sample_inputs/model.pt"] = _pickled(_Evil(marker))
        entry = "data/sample_inputs/model.pt"
    elif how == "opaque_constant":
        config = {
            "config": {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}
        }
        entries["data/constants/model_constants_config.json"] = json.dumps(config).encode()
        entries["data/constants/opaque_obj_0"] = pickle.dumps(_Evil(marker))  # torch: pickle.loads
        entry = "data/constants/opaque_obj_0"
    elif how == "guards_code":
        program["guards_code"] = [f"{evil} or True"]
        entry = "guard code"
    elif how == "shape_expr":  # the batch dimension's symbol, as sympify reads it
        text = json.dumps(program)
        old = json.dumps(next(iter(_expr_strs(program))))
        program = json.loads(text.replace(old, json.dumps(f"{evil} or {json.loads(old)}")))
        entry = "symbolic expression"
    else:
        raise AssertionError(how)
    entries["models/model.json"] = json.dumps(program).encode()
    return _write_zip(dst, root, entries), entry


@pytest.mark.parametrize("how", ["weight", "sample_inputs", "opaque_constant", "guards_code", "shape_expr"])
def test_crafted_pt2_is_refused_and_runs_nothing(exported: Path, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "PWNED"
    crafted, entry = _craft(exported, tmp_path / f"{how}.pt2", how, marker)
    with pytest.raises(UntrustedFileError) as info:
        load_learner(crafted)
    message = str(info.value)
    assert f"{how}.pt2" in message and entry in message and "Nothing from the file was run" in message
    assert not marker.exists()
    # The crafted file is a live one: torch.export.load (and the loaded module) by itself runs its code.
    with contextlib.suppress(Exception):
        torch.export.load(crafted).module()(torch.zeros(2, 8))
    assert marker.exists()


def test_the_checked_archive_is_what_torch_loads(exported: Path) -> None:
    archive, meta = checked_pt2(exported.read_bytes(), str(exported))
    _, original = _entries(exported)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        rebuilt = {n.split("/", 1)[1]: z.read(n) for n in names}
    assert len(names) == len(set(names))
    same = {n for n in original if not n.startswith(".data/") and n != "byteorder"}
    assert {n: rebuilt[n] for n in same} == {n: original[n] for n in same}
    assert (
        meta["format"] == "fastlight.export"
        and meta["n_inp"] == 1
        and meta["inputs"] == [{"shape": [8], "dtype": "float32"}]
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"epoch,loss\n0,1.0\n", "not a .pt2 archive"),
        (None, "is not part of a file written by learn.export"),
    ],
)
def test_other_files_are_refused(exported: Path, tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "other.pt2"
    if content is None:
        root, entries = _entries(exported)
        entries["data/weights/model.pt"] = _pickled({"w": torch.ones(1)})  # torch's legacy weights file
        _write_zip(path, root, entries)
    else:
        path.write_bytes(content)
    with pytest.raises(UntrustedFileError, match=match):
        load_learner(path)


def test_load_learner_bad_arguments(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no file .*missing\.pt2"):
        load_learner(tmp_path / "missing.pt2")
    with pytest.raises(TypeError, match=r"`trusted` must be a bool, got 'yes'"):
        load_learner(exported, trusted="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`fname` must be a path.*int"):
        load_learner(3)  # type: ignore[arg-type]


def test_a_loaded_learner_has_no_data(exported: Path) -> None:
    loaded = load_learner(exported)
    assert isinstance(loaded, InferenceLearner)
    with pytest.raises(ValueError, match=r"no data.*dl=learn.test_dl"):
        loaded.get_preds()
    with pytest.raises(IndexError, match=r"no data \(dls\[1\]\)"):
        loaded.dls[1]
    assert loaded.dls.test_dl(torch.zeros(3, 8)).batch_size == 16

"""Every public name of ``bridge`` and ``callbacks`` has a docstring with a short example."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import bridge
import callbacks


def _public() -> list[tuple[str, object]]:
    names: list[tuple[str, object]] = []
    for package in (bridge, callbacks):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
                    names.append((f"{module.__name__}.{name}", obj))
    return names


PUBLIC = _public()


def test_the_public_api_is_found() -> None:
    found = {name for name, _ in PUBLIC}
    assert {"bridge.learner.Learner", "bridge.loaders.ResumableDataLoader", "bridge.recorder.Recorder"} <= found
    assert len(found) > 60


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[n for n, _ in PUBLIC])
def test_docstring_with_an_example(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example" in doc or ">>>" in doc, f"{name}'s docstring has no example"


# Files still allowed to hold ``>>> # ...`` pseudo-examples: none.
PSEUDO_EXAMPLES_ALLOWED_IN: frozenset[str] = frozenset()
ROOT = Path(bridge.__file__).resolve().parent.parent


def pseudo_example_lines(root: Path, allowed: frozenset[str] = PSEUDO_EXAMPLES_ALLOWED_IN) -> list[str]:
    """``file:line: text`` of each example line that is only a comment, in ``root``'s bridge/ and callbacks/."""
    found = []
    for package in ("bridge", "callbacks"):
        for file in sorted((root / package).rglob("*.py")):
            rel = file.relative_to(root).as_posix()
            if rel in allowed:
                continue
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if line.lstrip().startswith(">>> #"):
                    found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_no_pseudo_examples() -> None:
    """An example line that is only a comment never runs: write a doctest that checks an output."""
    assert all((ROOT / rel).is_file() for rel in PSEUDO_EXAMPLES_ALLOWED_IN), "drop stale exclusions"
    assert pseudo_example_lines(ROOT) == []


def test_the_pseudo_example_check_finds_them(tmp_path: Path) -> None:
    (tmp_path / "bridge").mkdir()
    (tmp_path / "callbacks").mkdir()
    (tmp_path / "bridge" / "a.py").write_text('def f():\n    """Example:\n        >>> # f()\n    """\n')
    (tmp_path / "callbacks" / "b.py").write_text('def g():\n    """Example:\n        >>> g()  # runs\n    """\n')
    (tmp_path / "bridge" / "dialects.py").write_text('"""\n>>> # skipped\n"""\n')
    assert pseudo_example_lines(tmp_path, frozenset({"bridge/dialects.py"})) == ["bridge/a.py:3: >>> # f()"]
    assert pseudo_example_lines(tmp_path, frozenset()) == [
        "bridge/a.py:3: >>> # f()",
        "bridge/dialects.py:2: >>> # skipped",
    ]

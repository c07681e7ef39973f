"""Every public name of ``bridge`` and ``callbacks`` has a docstring with a short example."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

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

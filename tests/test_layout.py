"""The layout of docs/design.md ("Architecture"), checked from the source: imports and module sizes.

The import graph is built from ``ast`` over every ``import`` statement of ``bridge`` and
``callbacks`` — module level, inside functions and under ``TYPE_CHECKING`` alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bridge", "callbacks")
#: The core of docs/design.md: the event model and the one batch engine, free of Lightning.
CORE = (
    "bridge.events",
    "bridge.exceptions",
    "bridge.callback",
    "bridge.handler",
    "bridge.levels",
    "bridge.engine",
    "bridge.protocol",
    "bridge.checks",
    "bridge.dialects",
    "bridge.dialects.common",
    "bridge.dialects.course",
    "bridge.dialects.v1",
)
MAX_LINES = 425  # "no module over ~400 lines"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports (the package's own submodules named as such)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m in MODULES}


def test_the_graph_is_built_from_real_imports() -> None:
    # Sanity: edges the code certainly has, including a TYPE_CHECKING-only one.
    assert "bridge.engine" in GRAPH["bridge.module"]
    assert "bridge.protocol" in GRAPH["bridge.callback"]  # under TYPE_CHECKING
    assert "bridge" in GRAPH["callbacks.tracker"] or "bridge.callback" in GRAPH["callbacks.tracker"]
    assert len(MODULES) > 40


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(_internal(name)):
            if dep == name or (name.startswith(dep + ".") and dep in PACKAGES):
                continue  # a package's submodule importing the package root is only its __init__
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_bridge_never_imports_callbacks() -> None:
    offenders = {
        name: sorted(m for m in deps if m.split(".")[0] == "callbacks")
        for name, deps in GRAPH.items()
        if name.split(".")[0] == "bridge"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_lightning(name: str) -> None:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        lightning = sorted(m for m in GRAPH[current] if m.split(".")[0] in ("lightning", "pytorch_lightning"))
        assert not lightning, f"{name} reaches Lightning through {current}: {lightning}"
        todo.extend(m for m in _internal(current) if m not in PACKAGES or m == name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_size_limit(name: str) -> None:
    n = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines"

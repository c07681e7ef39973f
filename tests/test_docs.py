"""The docs hold together: cited guarantees exist, links resolve, the README's commands match the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {_slug(h) for h in _HEADING.findall(text)}


def _cited_guarantees() -> dict[int, list[str]]:
    """Guarantee numbers cited under tests/: "Guarantee 1", "guarantees 2 (rebinding), 3 (...) and 8"."""
    cited: dict[int, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for match in re.finditer(r"[Gg]uarantees? ((?:\d+(?: \([^)]*\))?(?:, | and )?)+)", path.read_text()):
            for number in re.findall(r"(?:^|, | and )(\d+)", match.group(1)):
                cited.setdefault(int(number), []).append(path.name)
    return cited


def test_design_numbers_guarantees_1_to_8() -> None:
    text = (REPO / "docs" / "design.md").read_text()
    assert [int(n) for n in re.findall(r"^### Guarantee (\d+): ", text, re.M)] == list(range(1, 9))


def test_every_guarantee_a_test_cites_is_in_design() -> None:
    cited = _cited_guarantees()
    assert cited, "no test cites a guarantee: the pattern is wrong"
    headed = {int(n) for n in re.findall(r"^### Guarantee (\d+): ", (REPO / "docs" / "design.md").read_text(), re.M)}
    missing = {n: files for n, files in cited.items() if n not in headed}
    assert not missing, f"cited in tests but not a heading of docs/design.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, broken


def test_readme_is_a_map() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= 15 * 1024, f"README.md is {size} bytes; move long forms to docs/"


def test_readme_set_up_runs_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    ci_commands = [
        line.replace(" -q", "").strip()
        for line in ci.splitlines()
        if line.startswith(("python -m pip install", "python -m pytest"))
    ]
    assert len(ci_commands) == 4, ci_commands  # torch, the test extras, fastai (the tests' oracle), the tests
    set_up = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    for command in ci_commands:
        assert command in set_up, f"`{command}` (from .ci/run) is not in the README's set-up"


def test_paths_named_in_readme_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    paths = set(re.findall(r"python (?:-m pytest )?((?:examples|tests|scripts)/[\w/]+\.py)", readme))
    paths |= set(re.findall(r"bash (\.ci/\w+)", readme))
    assert {"examples/quickstart.py", ".ci/run"} <= paths
    assert [p for p in sorted(paths) if not (REPO / p).exists()] == []


def test_the_readme_quickstart_runs(tmp_path: Path) -> None:
    """The Quickstart's code blocks, as a user runs them: the training blocks as one script, then the
    serving block in a new process (nothing downloaded; the model's class is not needed there)."""
    import os
    import subprocess
    import sys

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quickstart") : readme.index("## Concepts in one page")]
    *train, serve = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "fit(1, learn, cb=CallbackHandler([TestCallback()]))" in train[0] and "load_learner" in serve
    (tmp_path / "quickstart.py").write_text("\n".join(train))
    (tmp_path / "serve.py").write_text(serve)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for script in ("quickstart.py", "serve.py"):
        proc = subprocess.run(
            [sys.executable, script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        if script == "quickstart.py":
            assert proc.stdout.split("\n")[-2] == "72"  # BatchCounter's count over 3 epochs
            assert (tmp_path / "runs" / "readme" / "export.pt2").is_file()
    label, total = proc.stdout.split()[-2:]
    assert label == str(load_digits_target(1600)) and abs(float(total) - 1) < 1e-5


def load_digits_target(i: int) -> int:
    from sklearn.datasets import load_digits

    return int(load_digits().target[i])

"""Every ``python`` block of README.md and docs/*.md is run or type-checked (issue 10).

Each block must follow a marker line: ``<!-- snippet: run -->`` (executed in a child
process, and type-checked) or ``<!-- snippet: typecheck -->`` (``mypy --strict`` only,
for a snippet that needs a network). An unmarked block fails the suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!-- snippet: (run|typecheck) -->\s*$")
RUN_TIMEOUT_S = 60
_MYPY = (sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"))


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    mode: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for path in DOCS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.search(before)
            found.append(Snippet(path, line, marker.group(1) if marker else None, match.group(1)))
    return found


SNIPPETS = _snippets()


def test_every_python_block_is_marked_run_or_typecheck() -> None:
    assert SNIPPETS, "no python snippet found: the pattern is broken"
    unmarked = [s.name for s in SNIPPETS if s.mode is None]
    assert unmarked == [], f"mark these with <!-- snippet: run|typecheck -->: {unmarked}"


def test_every_snippet_passes_mypy_strict(tmp_path: Path) -> None:
    files = []
    for i, snippet in enumerate(SNIPPETS):
        path = tmp_path / f"snippet_{i}.py"
        path.write_text(snippet.code)
        files.append(path)
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    result = subprocess.run(
        [*_MYPY, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
        check=False,
    )
    report = result.stdout
    for i, snippet in enumerate(SNIPPETS):
        report = report.replace(str(files[i]), snippet.name)
    assert result.returncode == 0, report


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.mode == "run"], ids=lambda s: s.name)
def test_run_snippets_run(snippet: Snippet, tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text(snippet.code)
    result = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

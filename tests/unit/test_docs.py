"""Examples in docstrings and in README.md run, and say what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import abathur
from abathur import logs

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(abathur.__path__, prefix="abathur.")
    if not info.name.endswith("__main__")
)

INTEGRATIONS = {
    "abathur.integrations.adk": "google.adk",
    "abathur.integrations.langgraph": "langgraph",
}


@pytest.fixture(autouse=True)
def logs_to_stderr() -> Iterator[None]:
    # Unconfigured structlog prints to stdout, which doctest would read as output.
    # Applications (and our CLI) call abathur.logs.configure(); so do we here.
    logs.configure(json=True)
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    # An integration needs its extra; `make test-lowest` runs without the adk one.
    for prefix, extra in INTEGRATIONS.items():
        if name.startswith(prefix):
            pytest.importorskip(extra, reason=f"{extra} (an extra) is not installed")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"


def test_the_service_modules_have_examples() -> None:
    # Guard against the doctest test above passing because nothing was collected.
    finder = doctest.DocTestFinder()
    for name in ("abathur.api", "abathur.sessions", "abathur.memory", "abathur.tasks"):
        examples = sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
        assert examples > 0, f"{name} has no runnable examples"


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_a_python_tour() -> None:
    assert readme_python_blocks(), "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_blocks_run(index: int, tmp_path: Path) -> None:
    code = readme_python_blocks()[index]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

"""Examples in docstrings and in README.md run, and say what they claim."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import importlib.util
import os
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
from tests.backends import BackendHandle

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(abathur.__path__, prefix="abathur.")
    if not info.name.endswith("__main__")
)

INTEGRATIONS = {
    "abathur.integrations.adk": "google.adk",
    "abathur.integrations.langgraph": "langgraph",
    "abathur.integrations.mcp": "mcp",
}


@pytest.fixture(autouse=True)
def logs_to_stderr() -> Iterator[None]:
    # A log line on stdout would be read by doctest as output: the CLI's set-up
    # (abathur.logs.configure) keeps them on stderr, whatever a doctest configured.
    logs.configure(json=True)
    yield
    structlog.reset_defaults()
    logs.install_library_defaults()


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


# -- the tour says what it prints ------------------------------------------------

_PRINTED = re.compile(r"^\s*print\(.*\)\s+#\s(?P<expected>.+)$")


def printed_comments(code: str) -> list[str]:
    """The ``# ...`` comments of the lines that print: what each print shows."""
    return [m["expected"].strip() for line in code.splitlines() if (m := _PRINTED.match(line))]


def assert_prints_what_it_says(code: str, stdout: str) -> None:
    expected = printed_comments(code)
    lines = iter(line.strip() for line in stdout.splitlines())
    # In order, each comment is a whole line of output (other lines may come between).
    missing = [want for want in expected if want not in lines]
    assert not missing, f"printed lines differ from their comments: {missing}\n{stdout}"


def test_the_tour_covers_the_calls_a_user_needs_first() -> None:
    (tour,) = readme_python_blocks()[:1]
    for call in (
        "ab.sessions.create(", "ab.sessions.append_event(", "ab.sessions.get(",
        "ab.sessions.list(", "ab.sessions.terminate(", "ab.memory.put(",
        "ab.memory.history(", "ab.memory.context(", "ab.memory.search(",
        "ab.memory.delete(", "ab.memory.restore(", "ab.embeddings.drain(",
    ):  # fmt: skip
        assert call in tour, f"the README tour does not show {call}"
    assert len(printed_comments(tour)) >= 7


def test_the_tour_prints_what_its_comments_say(tmp_path: Path) -> None:
    (tour,) = readme_python_blocks()[:1]
    done = subprocess.run(
        [sys.executable, "-c", tour], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert_prints_what_it_says(tour, done.stdout)


def test_printed_comments_are_checked() -> None:
    # The check above must be able to fail: a wrong comment is caught.
    code = "print(1)  # 1\nprint(2)  # 3\n"
    with pytest.raises(AssertionError, match="'3'"):
        assert_prints_what_it_says(code, "1\n2\n")


# -- the docs are in the repo, and true ------------------------------------------

DOCS = ROOT / "docs"
GUIDES = ("embedders", "several-processes", "memory-per-process", "namespaces", "erasing-a-user")
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_points_to_docs_in_the_repo_not_to_design_md() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "DESIGN.md" not in readme
    for page in ["docs/architecture.md", "docs/configuration.md"] + [
        f"docs/guides/{g}.md" for g in GUIDES
    ]:
        assert f"]({page})" in readme, f"README does not link {page}"
        assert (ROOT / page).is_file(), page


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target, _ in _LINK.findall(page.read_text("utf-8"))
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def _resolves(dotted: str) -> bool:
    """Whether ``abathur.<dotted>`` is a module, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module("abathur." + ".".join(parts[:cut]))
        except ImportError as exc:
            # An integration whose extra is not installed (test-lowest has no google-adk):
            # the module is there even though importing it needs the framework.
            if not (exc.name or "").startswith("abathur") and cut == len(parts):
                return importlib.util.find_spec("abathur." + dotted) is not None
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_architecture_names_real_modules_and_settings(backend: BackendHandle) -> None:
    text = (DOCS / "architecture.md").read_text("utf-8").replace("`abathur.", "`")
    modules = {info.name.removeprefix("abathur.").split(".")[0] for info in
               pkgutil.walk_packages(abathur.__path__, prefix="abathur.")}  # fmt: skip
    codes = {getattr(c, "code", None) for c in vars(abathur.errors).values()}
    dotted = {
        name
        for name in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", text)
        if name.split(".")[0] in modules and name not in codes
    }
    assert len(dotted) >= 15, dotted  # the page does name modules
    assert sorted(n for n in dotted if not _resolves(n)) == []
    services = set(re.findall(r"`ab\.([a-z_]+)`", text))
    assert len(services) >= 8, services

    async def attributes() -> set[str]:
        async with backend.open(embedder="none") as ab:
            return set(vars(ab))

    assert services <= asyncio.run(attributes())
    variables = set(re.findall(r"`(ABATHUR_[A-Z_]+)`", text))
    known = {f"ABATHUR_{name.upper()}" for name in abathur.Settings.model_fields}
    assert variables and variables <= known, variables - known


# -- the configuration table is Settings ------------------------------------------


def test_every_setting_is_described() -> None:
    undescribed = [n for n, f in abathur.Settings.model_fields.items() if not f.description]
    assert undescribed == []


def test_the_configuration_table_is_generated_from_settings() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        settings_table = importlib.import_module("settings_table")
    finally:
        sys.path.pop(0)
    text = (DOCS / "configuration.md").read_text("utf-8")
    assert settings_table.render(text) == text, (
        "docs/configuration.md is out of date: run .venv/bin/python scripts/settings_table.py"
    )
    for name in abathur.Settings.model_fields:
        assert f"| `ABATHUR_{name.upper()}` |" in text


# -- every example in the guides runs ---------------------------------------------

_BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", flags=re.S | re.M)
# The guides show a local OpenAI-compatible server at its usual address; the
# test serves the same API on a free port (tests/openai_server.py) instead.
_GUIDE_OPENAI_URL = "http://127.0.0.1:8080/v1"


def run_doc(page: Path, cwd: Path) -> list[str]:
    """Run every python and sh block of ``page`` in order in ``cwd``; their outputs."""
    from tests.openai_server import OpenAIServer

    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    outputs = []
    with OpenAIServer(dims=16) as server:
        for number, (lang, code) in enumerate(_BLOCK.findall(page.read_text("utf-8")), 1):
            code = code.replace(_GUIDE_OPENAI_URL, server.url)
            if lang == "python":
                script = cwd / f"example_{number}.py"
                script.write_text(code, "utf-8")
                argv = [sys.executable, str(script)]
            else:
                argv = ["bash", "-euo", "pipefail", "-c", code]
            done = subprocess.run(
                argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
            )
            where = f"{page.relative_to(ROOT)} block {number} ({lang})"
            assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
            assert_prints_what_it_says(code, done.stdout)
            outputs.append(done.stdout)
    return outputs


# memory-per-process runs in test_memory_per_process_measures_what_it_says.
@pytest.mark.parametrize("guide", [g for g in GUIDES if g != "memory-per-process"])
def test_guide_examples_run(guide: str, tmp_path: Path) -> None:
    page = DOCS / "guides" / f"{guide}.md"
    assert _BLOCK.findall(page.read_text("utf-8")), f"{guide} has no example"
    run_doc(page, tmp_path)


def test_configuration_examples_run(tmp_path: Path) -> None:
    run_doc(DOCS / "configuration.md", tmp_path)
    assert (tmp_path / "agent.db").is_file()


def test_memory_per_process_measures_what_it_says(tmp_path: Path) -> None:
    measured, worker = run_doc(DOCS / "guides" / "memory-per-process.md", tmp_path)
    peaks = {m[0]: int(m[1]) for m in re.findall(r"(\w+): peak RSS (\d+) MB", measured)}
    assert set(peaks) == {"bundled", "none"}, measured
    # The guide says ~370 MB with the model, ~62 without: the model is most of it.
    assert peaks["bundled"] - peaks["none"] > 200, peaks
    assert peaks["none"] < 150, peaks
    assert re.fullmatch(r"embedded 0, 0 left\n", worker), worker

"""The test suite's own layering (issue 13, knot 6): a test module takes what it
shares with others from tests/helpers.py (or tests/backends.py, the fake servers,
the fuzz strategies), never from another test module or from conftest.py, so
running, moving or deleting one test file never breaks another.

Imports are read from the source with ``ast``, wherever they sit in a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

# Test modules allowed to import from another test module: none.
FROM_OTHER_TEST_MODULES: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def _is_test_module_or_conftest(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    is_module = (TESTS.parent / name.replace(".", "/")).with_suffix(".py").is_file()
    return is_module and (last.startswith("test_") or last == "conftest")


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    # `from tests.unit import test_backup` imports the module test_backup.
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


def _imports() -> set[tuple[str, str]]:
    """(importer, imported) for every import of a ``tests.*`` name in the suite."""
    found: set[tuple[str, str]] = set()
    for path in sorted(TESTS.rglob("*.py")):
        importer = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found |= {(importer, n) for n in _imported(node) if n.startswith("tests.")}
    return found


def test_shared_helpers_come_from_tests_helpers() -> None:
    pairs = {
        (importer, name)
        for importer, name in _imports()
        if name != importer and _is_test_module_or_conftest(name)
    }
    assert pairs - FROM_OTHER_TEST_MODULES == set(), (
        "import shared test helpers from tests/helpers.py, not from another test module"
    )
    assert FROM_OTHER_TEST_MODULES - pairs == set(), (
        "these imports are gone: remove them from FROM_OTHER_TEST_MODULES"
    )


def test_the_rule_sees_the_suite() -> None:
    # The rule above would pass vacuously if it read no imports.
    assert ("tests.unit.test_costs", "tests.helpers") in _imports()
    assert _is_test_module_or_conftest("tests.conftest")
    assert not _is_test_module_or_conftest("tests.helpers")

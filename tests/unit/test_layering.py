"""The layers of DESIGN.md hold (issue 13): cli -> (ops) -> api -> services -> stores,
backends implement stores, no import cycles, and apsw stays inside the SQLite
backend.

Imports are read from the source with ``ast``, not by importing: module-level
imports and those under ``if TYPE_CHECKING:`` count (a cycle hidden behind
TYPE_CHECKING is still a cycle for the reader); imports inside functions,
which exist to load heavy optional pieces late, count for the layer rules but
not for cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "abathur"

# Leaf modules anyone may import: settings, errors, models, value checks.
LEAVES = {
    "abathur.config",
    "abathur.errors",
    "abathur.models",
    "abathur.values",
    "abathur.redact",
    "abathur.logs",
}

# Modules outside the SQLite backend allowed to import apsw: none.
APSW_OUTSIDE_BACKEND: set[str] = set()

# Modules above the seam allowed to reach into a backend: none.
BACKEND_IMPORTS_ABOVE_SEAM: set[str] = set()

# Import cycles allowed, as sorted module tuples: none.
CYCLES: set[tuple[str, ...]] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(imports that count for cycles, every import), as module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    every: set[str] = set()

    def names(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            return {alias.name for alias in node.names}
        target = _resolve(module, path, node)
        # `from abathur.backends import sqlite` imports a submodule.
        return {target} | {f"{target}.{alias.name}" for alias in node.names}

    def walk(nodes: list[ast.stmt], at_top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found = names(node)
                every.update(found)
                if at_top:
                    top.update(found)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for body in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, body, []):
                        walk(child.body if isinstance(child, ast.ExceptHandler) else [child],
                             at_top)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                walk(node.body, False)

    walk(tree.body, True)
    return top, every


MODULES = dict(_modules())
IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _ours(names: set[str]) -> set[str]:
    """The abathur modules among ``names`` (a ``from x import y`` may name a non-module)."""
    return {n for n in names if n in MODULES}


def _layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    if module == "abathur.__main__":
        return "cli"
    for prefix, layer in (
        ("abathur.cli", "cli"),
        # The operations kit (backup, check, smoke...) drives an open Abathur
        # like an application does and asks the backend for its machinery.
        ("abathur.ops", "ops"),
        ("abathur.backends", "backend"),
        ("abathur.stores", "store"),
        ("abathur.integrations", "integration"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    if module in ("abathur", "abathur.api"):
        return "api"
    return "service"


def test_apsw_stays_inside_the_sqlite_backend() -> None:
    outside = {
        name
        for name, (_, every) in IMPORTS.items()
        if "apsw" in every and not name.startswith("abathur.backends.sqlite")
    }
    assert outside - APSW_OUTSIDE_BACKEND == set(), "import apsw only in abathur.backends.sqlite"
    assert APSW_OUTSIDE_BACKEND - outside == set(), (
        "these no longer import apsw: remove them from APSW_OUTSIDE_BACKEND"
    )


# The PostgreSQL drivers (the postgres extra, issue 14): only its backend
# loads them, so an installation without the extra imports everything else.
PG_DRIVERS = ("psycopg", "psycopg_pool", "pgvector")


def test_psycopg_stays_inside_the_postgres_backend() -> None:
    outside = {
        name
        for name, (_, every) in IMPORTS.items()
        if any(m == d or m.startswith(d + ".") for m in every for d in PG_DRIVERS)
        and not name.startswith("abathur.backends.postgres")
    }
    assert outside == set(), "import psycopg and pgvector only in abathur.backends.postgres"
    assert "psycopg" in IMPORTS["abathur.backends.postgres.database"][0]


def test_stores_are_protocols_that_import_no_layer() -> None:
    for name, (_, every) in IMPORTS.items():
        if _layer(name) == "store":
            wrong = {m for m in _ours(every) if _layer(m) not in ("store", "leaf")}
            assert wrong == set(), f"{name} imports {sorted(wrong)}: stores name protocols only"


def test_backends_import_no_service_api_or_cli() -> None:
    for name, (_, every) in IMPORTS.items():
        if _layer(name) == "backend" and name != "abathur.backends":
            wrong = {m for m in _ours(every) if _layer(m) in ("service", "api", "cli")}
            assert wrong == set(), f"{name} imports {sorted(wrong)}: a backend sits below services"


def test_nothing_above_the_seam_imports_a_backend() -> None:
    # Only the api opens a backend (abathur.backends.open_backend).
    reaching = {
        name
        for name, (_, every) in IMPORTS.items()
        if _layer(name) in ("service", "cli", "integration")
        and any(_layer(m) == "backend" for m in _ours(every))
    }
    assert reaching - BACKEND_IMPORTS_ABOVE_SEAM == set(), (
        "services, the CLI and adapters reach storage through abathur.stores"
    )
    assert BACKEND_IMPORTS_ABOVE_SEAM - reaching == set(), (
        "these no longer import a backend: remove them from BACKEND_IMPORTS_ABOVE_SEAM"
    )


@pytest.mark.parametrize("lower", ["ops", "api", "service", "store", "backend", "leaf"])
def test_lower_layers_never_import_the_cli(lower: str) -> None:
    for name, (_, every) in IMPORTS.items():
        if _layer(name) == lower:
            assert not any(_layer(m) == "cli" for m in _ours(every)), f"{name} imports the CLI"


def test_services_never_import_the_api() -> None:
    for name, (_, every) in IMPORTS.items():
        if _layer(name) in ("service", "store", "backend", "leaf"):
            assert "abathur.api" not in every, f"{name} imports abathur.api"


def _cycles() -> set[tuple[str, ...]]:
    """Strongly connected components (Tarjan) of more than one module."""
    graph = {
        name: {m for m in _ours(top) if m != name and MODULES[m].name != "__init__.py"}
        for name, (top, _) in IMPORTS.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert cycles - CYCLES == set(), "an import cycle: break it (protocol, constructor argument)"
    assert CYCLES - cycles == set(), "these cycles are gone: remove them from CYCLES"


def test_the_rules_see_the_package() -> None:
    # The rules above would pass vacuously on an empty or mis-parsed package.
    assert len(MODULES) > 60
    assert _layer("abathur.cli.search") == "cli"
    assert _layer("abathur.backends.sqlite.database") == "backend"
    assert "apsw" in IMPORTS["abathur.backends.sqlite.database"][0]
    assert "abathur.stores" in IMPORTS["abathur.backends"][1]

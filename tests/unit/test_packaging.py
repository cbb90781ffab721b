"""pyproject.toml declares ranges that install beside an application's pins, and
the two constraints files pin inside them (issue 12).

The ranges themselves are proven by running the suite: `make test` with
constraints.txt, `make test-lowest` with constraints-lowest.txt (every runtime
dependency at its floor). These tests hold the files to that arrangement, so a
floor raised in one place and not the other fails here, not in CI an hour later.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
# The extras users install; `bench` stays exact for reproducible benchmark runs.
EXTRAS = {
    name: [Requirement(r) for r in PROJECT["optional-dependencies"][name]]
    for name in ("dev", "adk", "langgraph", "mcp")
}


def pins(name: str) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / name).read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line!r} is not an exact pin"
            found[canonicalize_name(req.name)] = Version(spec.version)
    return found


def floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req} needs exactly one lower bound (>=)"
    return floors[0]


@pytest.mark.parametrize("version", ["3.11.7", "3.12.1", "3.13.0"])
def test_the_supported_pythons_may_install(version: str) -> None:
    assert SpecifierSet(PROJECT["requires-python"]).contains(version)


def test_classifiers_name_exactly_the_tested_pythons() -> None:
    minors = {
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert minors == {"3.11", "3.12", "3.13"}


@pytest.mark.parametrize("req", RUNTIME + [r for reqs in EXTRAS.values() for r in reqs], ids=str)
def test_dependencies_are_ranges_with_a_floor(req: Requirement) -> None:
    operators = {s.operator for s in req.specifier}
    assert "==" not in operators and "~=" not in operators, f"{req} is pinned, not a range"
    floor(req)


def test_runtime_floors_are_what_test_lowest_installs() -> None:
    lowest = pins("constraints-lowest.txt")
    for req in RUNTIME:
        assert lowest.get(canonicalize_name(req.name)) == floor(req), (
            f"constraints-lowest.txt must pin {req.name} at its floor {floor(req)}"
        )


@pytest.mark.parametrize(
    ("name", "extras"),
    [
        ("constraints.txt", ("dev", "adk", "langgraph", "mcp")),
        ("constraints-lowest.txt", ("dev", "langgraph")),
    ],
)
def test_constraints_pin_inside_the_ranges(name: str, extras: tuple[str, ...]) -> None:
    # What `make test` and `make test-lowest` install (the Makefile's extras).
    pinned = pins(name)
    for req in RUNTIME + [r for extra in extras for r in EXTRAS[extra]]:
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{name} does not pin {req.name}"
        assert req.specifier.contains(version), f"{name} pins {req.name}=={version}, outside {req}"


def test_the_issues_example_pin_is_inside_the_range() -> None:
    # `pip install ./abathur pydantic==2.10.6` (issue 12); tests/dist resolves it
    # for real with pip.
    (pydantic,) = [r for r in RUNTIME if r.name == "pydantic"]
    assert pydantic.specifier.contains("2.10.6")


def test_apsw_floor_bundles_the_wal_reset_fix() -> None:
    # backends/sqlite/connection.py refuses SQLite before 3.51.3; apsw's version starts with
    # the SQLite version it bundles.
    (apsw,) = [r for r in RUNTIME if r.name == "apsw"]
    assert floor(apsw).release[:3] >= (3, 51, 3)

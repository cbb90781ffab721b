"""The CLI imports what a command needs, when it needs it (issue 12).

``abathur --version`` took about a second because importing the CLI imported
every command and the whole library (numpy through sqlite-vec, pydantic...).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import abathur.cli
from abathur.cli import COMMANDS, _short, main

HEAVY = (
    "numpy",
    "onnxruntime",
    "tokenizers",
    "ollama",
    "watchfiles",
    "pydantic",
    "pydantic_settings",
    "sqlite_vec",
    "apsw",
    "aiosqlite",
    "zstandard",
    "abathur.api",
)


def imported_by(*args: str, tmp_path: Path) -> set[str]:
    """The modules ``python -m abathur ARGS`` has imported when it exits (sys.modules).

    Not ``-X importtime``: it does not list what importlib.import_module loads,
    which is how the group loads a command.
    """
    listing = tmp_path / "modules.json"
    code = (
        "import atexit, json, runpy, sys\n"
        f"out = open({str(listing)!r}, 'w')\n"
        "atexit.register(lambda: out.write(json.dumps(sorted(sys.modules))) and out.close())\n"
        f"sys.argv = ['abathur', *{list(args)!r}]\n"
        "runpy.run_module('abathur', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    names = set(json.loads(listing.read_text("utf-8")))
    assert "abathur.cli" in names, "the listing is empty"
    return names


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    names = imported_by(*args, tmp_path=tmp_path)
    loaded = sorted(n for n in names if n.split(".")[0] in HEAVY or n in HEAVY)
    assert loaded == [], f"abathur {' '.join(args)} imported {loaded}"
    # No command module either: --help lists them from the table.
    assert not any(n.startswith("abathur.cli.") and n != "abathur.cli.options" for n in names)


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    names = imported_by("backup", "list", "--help", tmp_path=tmp_path)
    assert "abathur.cli.backup" in names
    assert "abathur.cli.search" not in names and "abathur.cli.smoke" not in names


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_tables_short_help_is_the_commands_own(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(10_000)
    for limit in (30, 45, 60, 87):  # as `abathur --help` cuts it, at any terminal width
        assert _short(COMMANDS[name][1], limit) == command.get_short_help_str(limit)


def test_every_command_defined_in_the_cli_is_reachable() -> None:
    # A command module added without an entry in COMMANDS (or main.add_command)
    # would be unreachable: catch it here, e.g. after a merge.
    reachable: set[int] = set()

    def walk(command: click.Command) -> None:
        reachable.add(id(command))
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                walk(sub)

    walk(main)
    defined = {}
    for info in pkgutil.iter_modules(abathur.cli.__path__, prefix="abathur.cli."):
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            callback = getattr(value, "callback", None)
            if (
                isinstance(value, click.Command)
                and getattr(callback, "__module__", "") == info.name
            ):
                defined[f"{info.name}:{attribute}"] = value
    assert len(defined) >= 25, sorted(defined)
    unreachable = sorted(k for k, v in defined.items() if id(v) not in reachable)
    assert unreachable == []


def test_every_public_name_of_the_package_resolves_from_its_sources() -> None:
    # abathur/__init__.py imports its names on first use from _SOURCES; a name
    # imported (for type checkers) from any other module would not resolve.
    import ast

    import abathur

    tree = ast.parse(Path(abathur.__file__).read_text("utf-8"))
    guarded = [
        node
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "_TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
    ]
    assert guarded, "no TYPE_CHECKING imports found in abathur/__init__.py"
    sources = set(abathur._SOURCES)
    for node in guarded:
        names = [alias.name for alias in node.names]
        if node.module == "abathur":  # submodules: ``from abathur import errors``
            assert {f"abathur.{n}" for n in names} <= sources, names
        else:
            assert node.module in sources, node.module
        assert set(names) <= set(abathur.__all__)
    assert {n for node in guarded for n in (a.name for a in node.names)} == set(abathur.__all__)
    for name in abathur.__all__:
        assert getattr(abathur, name) is not None

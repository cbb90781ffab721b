"""The ``abathur`` command: the click group and its wiring, nothing else.

Each command group lives in its own module (``database.py``: init, migrate,
info; ``demo.py``: demo; ``check.py``: check; ``backup.py``: backup, backup
list, backup verify, restore; ``health.py``: health, metrics; ``search.py``:
sync, unsync, search, reindex; ``archive.py``: archive run, list, show, restore;
``cost.py``: cost report; ``stats.py``: stats; ``transfer.py``: export,
import; ``purge.py``: purge; ``mcp.py``: mcp; ``memory.py``, ``sessions.py``, ``tasks.py``: the
memory, session and task views); ``options.py`` holds what they share.

A command's module is imported when that command runs, not before (the
:data:`COMMANDS` table): ``abathur --version`` and ``abathur --help`` load no
numpy, onnxruntime or pydantic, and ``abathur info`` loads no search code.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from abathur import __version__, logs
from abathur.cli.options import EXIT_CODES_HELP, GLOBAL_DB, GLOBAL_JSON, LOG_LEVELS, db_option

__all__ = ["COMMANDS", "main"]

# name -> ("module:attribute", the command's short help). The help is here so
# that `abathur --help` lists the commands without importing them;
# tests/unit/test_cli_lazy.py fails when it differs from the command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "archive": (
        "abathur.cli.archive:archive",
        "Archived sessions and memories: without a subcommand, list them (newest first).",
    ),
    "backup": (
        "abathur.cli.backup:backup",
        "Take an online, verified, compressed backup, then apply retention.",
    ),
    "check": (
        "abathur.cli.check:check",
        "Check a database without changing it: exit 0 clean, 1 findings, 3 could not run.",
    ),
    "cost": (
        "abathur.cli.cost:cost",
        "What embedding cost: without a subcommand, the same as 'cost report'.",
    ),
    "demo": (
        "abathur.cli.demo:demo",
        "Write and show an example session and memories (what 'make run' runs).",
    ),
    "export": (
        "abathur.cli.transfer:export",
        "Write the database's data to FILE as versioned JSON Lines ('-': stdout).",
    ),
    "health": (
        "abathur.cli.health:health",
        "Say whether the database is healthy: ok, warn or fail (exit 0 ok, 1 warn or fail).",
    ),
    "import": (
        "abathur.cli.transfer:import_",
        "Import an abathur-export/1 FILE ('-': stdin) into the database, all or nothing.",
    ),
    "info": (
        "abathur.cli.database:info",
        "Show sizes, schema version, library versions and row counts.",
    ),
    "init": (
        "abathur.cli.database:init",
        "Create the database file and bring its schema up to date.",
    ),
    "mcp": (
        "abathur.cli.mcp:mcp",
        "Serve the memory to MCP clients (Claude, Cursor...): stdio, or HTTP with tokens.",
    ),
    "memory": (
        "abathur.cli.memory:memory",
        "Memories: without a subcommand, the namespaces with how many memories each holds.",
    ),
    "metrics": (
        "abathur.cli.health:metrics",
        "Print metrics in Prometheus text exposition format (or --json).",
    ),
    "migrate": (
        "abathur.cli.database:migrate",
        "Show the pending schema migrations and apply them.",
    ),
    "purge": (
        "abathur.cli.purge:purge",
        "Erase data completely: what a prefix holds, or a user's sessions.",
    ),
    "reindex": (
        "abathur.cli.search:reindex",
        "Re-embed every memory and document chunk (or, with --compact, compact the vectors).",
    ),
    "restore": (
        "abathur.cli.backup:restore",
        "Restore a backup over the database, verified first, swapped atomically.",
    ),
    "search": (
        "abathur.cli.search:search",
        "Search the synced documents (or, with --memories, the memories) for QUERY.",
    ),
    "session": (
        "abathur.cli.sessions:session",
        "Sessions: without a subcommand, list them, most recently updated first.",
    ),
    "smoke": (
        "abathur.cli.smoke:smoke",
        "Run the 35 smoke cases against a live database: exit 0 only when all pass.",
    ),
    "stats": (
        "abathur.cli.stats:stats",
        "Counts, growth, sizes, queue, and latency percentiles of service calls.",
    ),
    "sync": (
        "abathur.cli.search:sync",
        "Sync the markdown files under DIRECTORY into the database, then embed the new chunks.",
    ),
    "task": (
        "abathur.cli.tasks:task",
        "Tasks: without a subcommand, list them (every session's, newest first).",
    ),
    "unsync": (
        "abathur.cli.search:unsync",
        "Take DIRECTORY, synced before, out of the index: its documents, chunks and vectors.",
    ),
}


def _short(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, as click cuts a short help."""
    if len(text) <= limit:
        return text
    if limit < len("..."):
        return "..."
    import textwrap  # only when a help line is too long for the terminal

    return textwrap.shorten(text, limit, placeholder="...", break_on_hyphens=False)


class LazyGroup(click.Group):
    """A group whose commands (:data:`COMMANDS`) are imported when first looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name][0]} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in COMMANDS and name not in self.commands:
                rows.append((name, _short(COMMANDS[name][1], limit)))
            elif (command := self.get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="abathur")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Lowest level of the log lines written to stderr (also accepted after the command).",
)
@db_option(
    default=None,
    envvar=None,
    show_default=False,
    help="The database file (also accepted after the command); default $ABATHUR_DB, else "
    "./abathur.db.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout (also accepted after the command).",
)
@click.pass_context
def main(ctx: click.Context, log_level: str, db_path: Any, as_json: bool) -> None:
    """abathur: durable memory for AI agents in one SQLite file.

    Every command takes --db PATH (default $ABATHUR_DB, else ./abathur.db),
    --json (one JSON document on stdout) and --log-level, before or after the
    command's name; the command's own value wins. Logs go to stderr.

    \b
    Examples:
      abathur init --db ./agent.db
      abathur demo --db ./agent.db
      abathur --db ./agent.db info --json
    """
    logs.configure(level=log_level.upper())
    # The commands' --db / --json read these when not given after the command.
    if db_path is not None:
        ctx.meta[GLOBAL_DB] = db_path
    if as_json:
        ctx.meta[GLOBAL_JSON] = True

"""The ``abathur`` command: the click group and its wiring, nothing else.

Each command group lives in its own module (``database.py``: init, migrate,
info; ``demo.py``: demo; ``check.py``: check; ``backup.py``: backup, backup
list, backup verify, restore; ``health.py``: health, metrics; ``search.py``:
sync, unsync, search, reindex; ``archive.py``: archive run, list, show, restore;
``cost.py``: cost report; ``stats.py``: stats; ``transfer.py``: export,
import; ``purge.py``: purge); ``options.py`` holds what they share.
"""

from __future__ import annotations

import click

from abathur import __version__, logs
from abathur.cli import archive, backup, check, cost, database, demo, health, purge, stats
from abathur.cli import memory as memory_cli
from abathur.cli import search as search_cli
from abathur.cli import sessions as sessions_cli
from abathur.cli import smoke as smoke_cli
from abathur.cli import tasks as tasks_cli
from abathur.cli import transfer as transfer_cli
from abathur.cli.options import EXIT_CODES_HELP

__all__ = ["main"]


@click.group(
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="abathur")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Lowest level of the log lines written to stderr.",
)
def main(log_level: str) -> None:
    """abathur: durable memory for AI agents in one SQLite file.

    Every command takes --db PATH (default $ABATHUR_DB, else ./abathur.db) and
    --json (one JSON document on stdout). Logs go to stderr.

    \b
    Examples:
      abathur init --db ./agent.db
      abathur demo --db ./agent.db
      abathur info --db ./agent.db --json
    """
    logs.configure(level=log_level.upper())


main.add_command(database.init)
main.add_command(database.migrate)
main.add_command(database.info)
main.add_command(demo.demo)
main.add_command(check.check)
main.add_command(backup.backup)
main.add_command(backup.restore)
main.add_command(health.health)
main.add_command(health.metrics)
main.add_command(search_cli.sync)
main.add_command(search_cli.unsync)
main.add_command(search_cli.search)
main.add_command(search_cli.reindex)
main.add_command(smoke_cli.smoke)
main.add_command(archive.archive)
main.add_command(cost.cost)
main.add_command(stats.stats)
main.add_command(transfer_cli.export)
main.add_command(transfer_cli.import_)
main.add_command(purge.purge)
main.add_command(memory_cli.memory)
main.add_command(sessions_cli.session)
main.add_command(tasks_cli.task)

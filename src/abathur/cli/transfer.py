"""``abathur export`` and ``abathur import``: data out to JSON Lines and back.

The format is documented in docs/export-format.md.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import click

from abathur.api import Abathur
from abathur.cli.options import (
    Output,
    database_missing,
    format_pairs,
    is_server,
    shown_db,
    standard_options,
)
from abathur.errors import DatabaseError, InvalidInputError
from abathur.models import ExportReport, ImportReport, TransferCounts
from abathur.ops.files import plan_migrations

__all__ = ["export", "import_"]

_STDIO = "-"


def _counts(counts: TransferCounts) -> str:
    return (
        f"{counts.memories} memory(ies) ({counts.versions} version(s)), "
        f"{counts.sessions} session(s), {counts.events} event(s), {counts.tasks} task(s), "
        f"{counts.app_state} app state and {counts.user_state} user state row(s)"
    )


def _total(counts: TransferCounts) -> int:
    # Versions and events are parts of memories and sessions: records, not rows.
    return counts.memories + counts.sessions + counts.tasks + counts.app_state + counts.user_state


def _skipped(counts: TransferCounts) -> str:
    total = _total(counts)
    return f"{total} already present" + (f" ({_counts(counts)})" if total else "")


def _export_human(report: ExportReport, where: str) -> str:
    lines: list[tuple[str, object]] = [
        ("exported", f"{_counts(report.counts)} to {where}"),
        ("format", report.format),
    ]
    if report.expired:
        lines.append(("left out", f"{report.expired} expired memory(ies)"))
    if report.archived:
        lines.append(
            (
                "not exported",
                f"{report.archived} archive entry(ies) in scope: 'abathur archive "
                "restore ID' first to include them",
            )
        )
    lines.append(("took", f"{report.seconds:.2f} s"))
    return format_pairs(lines)


@click.command("export")
@click.argument("dest", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--prefix", default=None, help="Only memories in this namespace or under it.")
@click.option("--app", default=None, help="Only sessions, tasks and state of this app.")
@click.option("--user", default=None, help="Only sessions, tasks and user state of this user.")
@standard_options
def export(
    *,
    db_path: Path,
    out: Output,
    dest: str,
    prefix: str | None,
    app: str | None,
    user: str | None,
) -> None:
    """Write the database's data to FILE as versioned JSON Lines ('-': stdout).

    Memories with every version (tombstones and superseded ones included),
    sessions with their events and state, tasks, app and user state: one JSON
    object a line, format abathur-export/1 (docs/export-format.md), from one
    consistent snapshot, streamed. A FILE is written whole or not at all (a
    temporary file renamed into place). With no filter everything is
    exported; --prefix alone exports memories only, --app/--user alone
    sessions only. Expired memories and archive entries are left out (the
    summary counts them). The summary goes to stdout, or to stderr when the
    data does ('-'); --json needs a FILE.

    \b
    Examples:
      abathur export --db ./agent.db data.jsonl
      abathur export --db ./agent.db - > data.jsonl
      abathur export --db ./agent.db --prefix user:alice --app helpdesk --user alice alice.jsonl
      abathur export --db ./agent.db data.jsonl --json
    """
    if dest == _STDIO and out.as_json:
        raise click.UsageError(
            "--json prints the summary as one JSON document on stdout, so the data needs a "
            "FILE, not '-'"
        )
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )

    async def run() -> ExportReport:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)  # refuses a file newer than this abathur
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            target = click.open_file("-", "wb") if dest == _STDIO else Path(dest)
            report = await ab.transfer.export_to(target, prefix=prefix, app=app, user=user)
            if dest == _STDIO:
                sys.stdout.flush()
            return report

    report = asyncio.run(run())
    data = {**report.model_dump(mode="json"), "path": shown_db(db_path), "file": dest}
    if dest == _STDIO:
        out.progress(_export_human(report, "stdout"))
    else:
        out.result(data, _export_human(report, dest))


@click.command("import")
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Check and apply everything, report, then roll back.")
@standard_options
def import_(*, db_path: Path, out: Output, source: str, dry_run: bool) -> None:
    """Import an abathur-export/1 FILE ('-': stdin) into the database, all or nothing.

    Every line is checked first (JSON, format version, each record's fields,
    the API's limits and id/namespace rules, contiguous versions and event
    numbers, duplicates, the end record); a bad line stops the import (exit 3)
    with its line number, before anything is written. Then one transaction
    inserts what the database lacks, exactly (times, versions, statuses), and
    skips what it already holds identically, so importing a file twice
    changes nothing the second time. A record that differs from the
    database's (a memory with another history, a session with other events)
    is a conflict: exit 3, nothing imported. Creates the database if needed.

    \b
    Examples:
      abathur import --db ./restored.db data.jsonl
      abathur import --db ./restored.db data.jsonl --dry-run --json
      abathur export --db ./a.db - | abathur import --db ./b.db -
    """

    async def run(path: Path) -> ImportReport:
        if not database_missing(db_path) and not is_server(db_path):
            await plan_migrations(db_path)  # refuses a file newer than this abathur
        # No embedder: imported memories are queued for the application's worker.
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            return await ab.transfer.import_from(path, dry_run=dry_run)

    if source != _STDIO and not Path(source).is_file():
        # Before opening the database: a failed import must not create one.
        raise InvalidInputError(f"no file to import at {source!r}")
    if source == _STDIO:
        # The check pass and the write pass each read the file: spool stdin first.
        with tempfile.TemporaryDirectory(prefix="abathur-import-") as tmp:
            spooled = Path(tmp) / "stdin.jsonl"
            with spooled.open("wb") as f:
                shutil.copyfileobj(click.open_file("-", "rb"), f)
            report = asyncio.run(run(spooled))
    else:
        report = asyncio.run(run(Path(source)))
    data = {**report.model_dump(mode="json"), "path": shown_db(db_path), "file": source}
    verb = "would import" if dry_run else "imported"
    lines: list[tuple[str, object]] = [
        ("database", shown_db(db_path)),
        (verb, _counts(report.imported)),
        ("skipped", _skipped(report.skipped)),
        ("lines", report.lines),
        ("took", f"{report.seconds:.2f} s"),
    ]
    if dry_run:
        lines.insert(1, ("dry run", "everything checked and rolled back: nothing written"))
    out.result(data, format_pairs(lines))

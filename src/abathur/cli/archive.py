"""``abathur archive`` (``run``, ``list``, ``show``, ``restore``): cold data out and back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from abathur.api import Abathur
from abathur.archival import ArchivalService
from abathur.cli.options import (
    Output,
    database_missing,
    format_pairs,
    format_table,
    is_server,
    shown_db,
    standard_options,
)
from abathur.errors import DatabaseError
from abathur.models import ArchiveEntry
from abathur.ops.files import plan_migrations

__all__ = ["archive"]

T = TypeVar("T")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _with_archival(db_path: Path, fn: Callable[[ArchivalService], Awaitable[T]]) -> T:
    """Open the existing file (never create one), run ``fn`` with ``ab.archival``, close."""
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )

    async def run() -> T:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)  # refuses a file newer than this abathur
        # No embedder: restored memories take their vector from the cache or
        # wait in the queue for the application's worker.
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            return await fn(ab.archival)

    return asyncio.run(run())


def _entries_table(entries: list[ArchiveEntry]) -> str:
    return format_table(
        ("id", "kind", "ref", "policy", "rows", "raw", "stored", "archived"),
        (
            (
                e.id,
                e.kind,
                e.ref if len(e.ref) <= 48 else e.ref[:47] + "…",
                e.policy,
                e.rows,
                _size(e.raw_bytes),
                _size(e.stored_bytes),
                _when(e.archived_at),
            )
            for e in entries
        ),
    )


def _list(
    db_path: Path,
    out: Output,
    *,
    kind: str | None,
    ref: str | None,
    limit: int,
    before: int | None,
) -> None:
    entries = _with_archival(
        db_path,
        lambda a: a.list(kind=kind, ref=ref, limit=limit, before=before),  # type: ignore[arg-type]
    )
    data = {
        "path": shown_db(db_path),
        "entries": [e.model_dump(mode="json") for e in entries],
    }
    human = _entries_table(entries) if entries else "the archive is empty (or nothing matched)"
    out.result(data, human)


def _list_options(fn: Any) -> Any:
    fn = click.option(
        "--kind",
        type=click.Choice(["session", "memory", "versions"]),
        default=None,
        help="Only entries of this kind.",
    )(fn)
    fn = click.option(
        "--ref",
        default=None,
        help="Only entries of this session id or namespace/key (with --kind).",
    )(fn)
    fn = click.option(
        "--limit",
        type=click.IntRange(1, 10_000),
        default=50,
        show_default=True,
        help="At most this many entries.",
    )(fn)
    return click.option(
        "--before",
        type=click.IntRange(min=1),
        default=None,
        help="Only entries with an id below this one (the next page).",
    )(fn)


@click.group(invoke_without_command=True)
@_list_options
@standard_options
def archive(
    *,
    db_path: Path,
    out: Output,
    kind: str | None,
    ref: str | None,
    limit: int,
    before: int | None,
) -> None:
    """Archived sessions and memories: without a subcommand, list them (newest first).

    'archive run' moves cold data (Settings.archive_policies: terminated
    sessions with their events, expired episodic memories, old versions,
    old tombstones) into compressed rows of the archive table; 'archive show'
    prints one entry's rows; 'archive restore' puts them back exactly.

    \b
    Examples:
      abathur archive --db ./agent.db
      abathur archive --db ./agent.db --kind session --limit 10 --json
      abathur archive run --db ./agent.db --dry-run
      abathur archive show --db ./agent.db 42
      abathur archive restore --db ./agent.db 42
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    _list(db_path, out, kind=kind, ref=ref, limit=limit, before=before)


@archive.command("list")
@_list_options
@standard_options
def list_(
    *,
    db_path: Path,
    out: Output,
    kind: str | None,
    ref: str | None,
    limit: int,
    before: int | None,
) -> None:
    """List archive entries, newest first: id, kind, ref, policy, rows and sizes.

    \b
    Examples:
      abathur archive list --db ./agent.db
      abathur archive list --db ./agent.db --kind memory --ref user:alice:episodes/s1 --json
    """
    _list(db_path, out, kind=kind, ref=ref, limit=limit, before=before)


@archive.command("run")
@click.option("--dry-run", is_flag=True, help="Report what would move; write nothing.")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Also VACUUM once, switching the file to incremental auto-vacuum so later runs "
    "shrink it. Rewrites the whole file and blocks writers while it runs.",
)
@standard_options
def run(*, db_path: Path, out: Output, dry_run: bool, vacuum: bool) -> None:
    """Move cold data into the archive, then reclaim space (nightly, from cron).

    Small transactions (ABATHUR_ARCHIVE_BATCH_SIZE items, then a pause of
    ABATHUR_ARCHIVE_PAUSE_MS) keep it safe while agents write. A run that is
    killed loses nothing: run it again and it finishes the rest, archiving
    nothing twice. Reports rows moved per policy and the file and WAL sizes
    before and after. Policies: ABATHUR_ARCHIVE_POLICIES (JSON).

    \b
    Examples:
      abathur archive run --db ./agent.db
      abathur archive run --db ./agent.db --dry-run --json
      abathur archive run --db ./agent.db --vacuum
    """
    report = _with_archival(db_path, lambda a: a.run(dry_run=dry_run, vacuum=vacuum))
    data = {"path": shown_db(db_path), **report.model_dump(mode="json")}
    verb = "would move" if dry_run else "moved"
    table = format_table(
        ("policy", "items", "rows", "raw", "stored"),
        (
            (p.policy, p.items, p.rows, _size(p.raw_bytes), _size(p.stored_bytes))
            for p in report.policies
        ),
    )
    lines: list[tuple[str, object]] = [
        ("database", shown_db(db_path)),
        ("run", "dry run: nothing written" if dry_run else report.run_id),
    ]
    if report.resumed_after is not None:
        lines.append(("resumed", f"run {report.resumed_after} did not finish; this one did"))
    lines += [
        (verb, f"{report.entries} item(s), {report.rows} row(s) in {report.batches} batch(es)"),
        ("size before", f"{_size(report.bytes_before)} (WAL {_size(report.wal_bytes_before)})"),
        ("size after", f"{_size(report.bytes_after)} (WAL {_size(report.wal_bytes_after)})"),
        ("free in file", f"{_size(report.free_bytes)} (reused by new rows)"),
        ("auto_vacuum", f"{report.auto_vacuum} (file shrank {_size(report.vacuumed_bytes)})"),
    ]
    lines += [
        ("compacted", f"{c.table}: {c.dead_rows} dead slot(s), {c.live_rows} live")
        for c in report.compacted
    ]
    lines += [("note", note) for note in report.notes]
    lines.append(("took", f"{report.seconds:.2f} s"))
    out.result(data, f"{format_pairs(lines)}\n\n{table}")


@archive.command("show")
@click.argument("entry_id", metavar="ID", type=click.IntRange(min=1))
@standard_options
def show(*, db_path: Path, out: Output, entry_id: int) -> None:
    """Print one archive entry with its rows, decompressed, as they were.

    The entry is verified as a restore verifies it: a damaged one is refused
    with archive.corrupt (exit 3).

    \b
    Examples:
      abathur archive show --db ./agent.db 42
      abathur archive show --db ./agent.db 42 --json | jq '.tables.events | length'
    """
    item = _with_archival(db_path, lambda a: a.show(entry_id))
    data = {"path": shown_db(db_path), **item.model_dump(mode="json")}
    parts = [_entries_table([item.entry])]
    for name, rows in item.tables.items():
        if not rows:
            parts.append(f"{name}: none")
            continue
        columns = tuple(rows[0])
        parts.append(f"{name} ({len(rows)} row(s))")
        parts.append(format_table(columns, (tuple(_cell(r[c]) for c in columns) for r in rows)))
    out.result(data, "\n\n".join(parts))


def _cell(value: object, width: int = 40) -> object:
    if isinstance(value, str) and len(value) > width:
        return value[: width - 1] + "…"
    return value


@archive.command("restore")
@click.argument("entry_id", metavar="ID", type=click.IntRange(min=1))
@standard_options
def restore(*, db_path: Path, out: Output, entry_id: int) -> None:
    """Put one archive entry back in the hot tables, exactly as it was.

    A session comes back with its status, state, revision and events; a
    memory with every version, back in the keyword index and the vector
    index (from the embedding cache, or queued for the application's worker).
    Refused (exit 3, nothing changed) if the hot tables hold that item again,
    or if the entry fails verification (archive.corrupt: its payload or its
    dictionary does not match its sha256, decompresses past the size it
    records, or does not hold the rows it names; see runbook 05-corruption).

    \b
    Examples:
      abathur archive restore --db ./agent.db 42
      abathur archive restore --db ./agent.db 42 --json
    """
    report = _with_archival(db_path, lambda a: a.restore(entry_id))
    data = {"path": shown_db(db_path), **report.model_dump(mode="json")}
    lines = [
        ("restored", f"{report.kind} {report.ref} (archive entry {report.id})"),
        ("rows", report.rows),
        (
            "search",
            f"{report.reindexed} memory(ies) back in the indexes"
            if report.kind == "memory"
            else "n/a",
        ),
        ("took", f"{report.seconds * 1000:.1f} ms"),
    ]
    out.result(data, format_pairs(lines))

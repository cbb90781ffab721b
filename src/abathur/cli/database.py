"""``abathur init``, ``abathur migrate`` and ``abathur info``: the file and its schema."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import click

from abathur.api import Abathur, sqlite_database
from abathur.cli.options import (
    Output,
    format_pairs,
    format_table,
    is_server,
    shown_db,
    standard_options,
)
from abathur.errors import DatabaseError
from abathur.ops.files import Migration, MigrationPlan, available_migrations, plan_migrations

__all__ = ["info", "init", "migrate"]


def _versions_line(versions: dict[str, str]) -> str:
    return ", ".join(f"{name.replace('_', '-')} {v}" for name, v in versions.items())


def _migration_name(m: Migration) -> str:
    return f"{m.version:03d}_{m.name}"


@click.command()
@standard_options
def init(*, db_path: Path, out: Output) -> None:
    """Create the database file and bring its schema up to date.

    Prints the file, its schema version and the versions of SQLite, sqlite-vec,
    apsw and aiosqlite in use. Safe to run again: an up-to-date file is left as
    it is, and an older one is first copied aside as FILE.pre-vN-TIME.bak.

    \b
    Examples:
      abathur init --db ./agent.db
      ABATHUR_DB=/var/lib/abathur/agent.db abathur init --json
    """
    existed = (await_plan(db_path).exists) if is_server(db_path) else db_path.exists()

    async def run() -> dict[str, Any]:
        # Refuse a file newer than this abathur before opening it: opening
        # would already switch its journal mode to WAL.
        await plan_migrations(db_path)
        async with Abathur.open(db_path) as ab:
            return {
                "path": shown_db(db_path),
                "created": not existed,
                "schema_version": await ab.db.schema_version(),
                "migrated_from": ab.db.migrated_from if existed else None,
                # A server is not copied aside: take 'abathur backup' first.
                "backup": getattr(ab.db, "premigration_backup", None),
                "versions": dataclasses.asdict(ab.versions),
            }

    data = asyncio.run(run())
    if data["created"]:
        status = "created"
    elif data["migrated_from"] is not None:
        status = f"migrated from version {data['migrated_from']}"
    else:
        status = "already up to date"
    out.result(
        data,
        format_pairs(
            [
                ("database", data["path"]),
                ("status", status),
                ("schema version", data["schema_version"]),
                *([("backup", data["backup"])] if data["backup"] else []),
                ("versions", _versions_line(data["versions"])),
            ]
        ),
    )


def await_plan(db_path: Path) -> MigrationPlan:
    """The migration plan of ``db_path`` (a file or a server), read without changing it."""
    return asyncio.run(plan_migrations(db_path))


def _plan_data(plan: MigrationPlan) -> dict[str, Any]:
    return {
        "path": shown_db(plan.path),
        "exists": plan.exists,
        "current_version": plan.current,
        "target_version": plan.latest,
        "pending": [{"version": m.version, "name": m.name} for m in plan.pending],
    }


@click.command()
@click.option(
    "--dry-run", is_flag=True, help="Print the plan only: never creates or changes the file."
)
@standard_options
def migrate(*, db_path: Path, out: Output, dry_run: bool) -> None:
    """Show the pending schema migrations and apply them.

    The plan is the file's current schema version (PRAGMA user_version),
    the target version, and each pending migration by number and name. An
    existing file is copied aside with SQLite's online backup API before it
    is migrated; each migration commits together with its version bump, so a
    failure leaves the file at the last version that succeeded.

    On PostgreSQL (--db postgresql://...) the plan reads schema_migrations;
    the database is not copied aside (take 'abathur backup' first); each
    migration runs in its own transaction under an advisory lock.

    \b
    Examples:
      abathur migrate --db ./agent.db --dry-run
      abathur migrate --db ./agent.db
      abathur migrate --db ./agent.db --json | jq '.applied'
    """
    plan = asyncio.run(plan_migrations(db_path))
    data = {
        **_plan_data(plan),
        "dry_run": dry_run,
        "applied": [],
        "backup": None,
        "schema_version": plan.current,
    }
    if not dry_run and (plan.pending or not plan.exists):
        if plan.exists:
            out.progress(f"migrating {data['path']} (a backup copy is taken first)")

        async def run() -> tuple[int | None, Path | None, int]:
            async with Abathur.open(db_path) as ab:
                return (
                    ab.db.migrated_from,
                    getattr(ab.db, "premigration_backup", None),
                    await ab.db.schema_version(),
                )

        migrated_from, backup, version = asyncio.run(run())
        # Report what this run did, not the plan: another process may have
        # migrated the file between the two.
        if migrated_from is not None:
            data["applied"] = [
                {"version": m.version, "name": m.name}
                for m in available_migrations()
                if migrated_from < m.version <= version
            ]
        data["backup"], data["schema_version"] = backup, version

    pending = ", ".join(_migration_name(m) for m in plan.pending) or "none"
    pairs: list[tuple[str, object]] = [
        ("database", data["path"] if plan.exists else f"{data['path']} (does not exist yet)"),
        ("schema version", f"{plan.current} (target {plan.latest})"),
        ("pending", pending),
    ]
    if dry_run:
        pairs.append(("result", "dry run: nothing was changed"))
    else:
        applied = [f"{m['version']:03d}_{m['name']}" for m in data["applied"]]
        pairs.append(("applied", ", ".join(applied) or "nothing: already up to date"))
        if data["backup"]:
            pairs.append(("backup", data["backup"]))
        pairs.append(("now at version", data["schema_version"]))
    out.result(data, format_pairs(pairs))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@click.command()
@standard_options
def info(*, db_path: Path, out: Output) -> None:
    """Show sizes, schema version, library versions and row counts.

    Reports the file's size and its WAL's, pages, the schema version, the
    versions of SQLite, sqlite-vec, apsw and aiosqlite, and the rows in each
    table. Never migrates: a file behind this abathur's schema is reported as
    such (run 'abathur migrate'). A missing file is an error, not created.

    \b
    Examples:
      abathur info --db ./agent.db
      abathur info --db ./agent.db --json | jq '.row_counts.memories'
    """
    if is_server(db_path):
        _server_info(db_path, out)
        return
    if not db_path.exists():
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create one with 'abathur init --db {db_path}'"
        )

    async def run() -> dict[str, Any]:
        async with Abathur.open(db_path, auto_migrate=False) as ab:
            found = await sqlite_database(ab, "abathur info").info()
            return {
                "path": shown_db(db_path),
                "size_bytes": found.size_bytes,
                "wal_bytes": found.wal_bytes,
                "page_size": found.page_size,
                "page_count": found.page_count,
                "freelist_count": found.freelist_count,
                "schema_version": found.schema_version,
                "latest_schema_version": found.latest_schema_version,
                "versions": dataclasses.asdict(ab.versions),
                "row_counts": dict(found.row_counts),
            }

    data = asyncio.run(run())
    behind = data["latest_schema_version"] - data["schema_version"]
    schema = f"{data['schema_version']}"
    if behind > 0:
        schema += f" ({behind} migration(s) pending: run 'abathur migrate')"
    elif behind < 0:
        schema += f" (newer than this abathur, which knows {data['latest_schema_version']})"
    summary = format_pairs(
        [
            ("database", data["path"]),
            ("size", f"{_size(data['size_bytes'])} + WAL {_size(data['wal_bytes'])}"),
            (
                "pages",
                f"{data['page_count']} x {data['page_size']} B, {data['freelist_count']} free",
            ),
            ("schema version", schema),
            ("versions", _versions_line(data["versions"])),
        ]
    )
    table = format_table(("table", "rows"), sorted(data["row_counts"].items()))
    out.result(data, f"{summary}\n\n{table}")


def _server_info(db_path: Path, out: Output) -> None:
    """``abathur info`` on a PostgreSQL database: sizes from the server, exact row counts."""
    from abathur.config import Settings
    from abathur.ops.files import server_kit

    async def run() -> dict[str, Any]:
        async with Abathur.open(db_path, auto_migrate=False, embedder="none", probe=True) as ab:
            found = await asyncio.to_thread(server_kit().info, db_path, Settings())  # type: ignore[arg-type]
            return {
                "path": shown_db(db_path),
                **found,
                "versions": dataclasses.asdict(ab.versions),
            }

    data = asyncio.run(run())
    behind = data["latest_schema_version"] - data["schema_version"]
    schema = f"{data['schema_version']}"
    if behind > 0:
        schema += f" ({behind} migration(s) pending: run 'abathur migrate')"
    summary = format_pairs(
        [
            ("database", data["path"]),
            ("size", _size(data["size_bytes"])),
            ("schema version", schema),
            ("versions", _versions_line(data["versions"])),
        ]
    )
    rows = [
        (t, n, _size(data["table_bytes"].get(t, 0))) for t, n in sorted(data["row_counts"].items())
    ]
    out.result(data, f"{summary}\n\n{format_table(('table', 'rows', 'size'), rows)}")

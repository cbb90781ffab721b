"""``abathur purge``: erase one prefix's memories or one user's sessions completely."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from abathur.api import Abathur
from abathur.cli.options import (
    Output,
    database_missing,
    format_table,
    is_server,
    shown_db,
    standard_options,
)
from abathur.errors import DatabaseError
from abathur.models import PurgeReport
from abathur.ops.files import plan_migrations

__all__ = ["purge"]


def _run(
    db_path: Path,
    *,
    prefix: str | None,
    everything: bool,
    app: str | None,
    user: str | None,
    dry_run: bool,
) -> list[PurgeReport]:
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )

    async def run() -> list[PurgeReport]:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)  # refuses a file newer than this abathur
        reports = []
        # No embedder: a purge deletes vectors, it never computes one.
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            if prefix is not None or everything:
                reports.append(
                    await ab.memory.purge(prefix, everything=everything, dry_run=dry_run)
                )
            if app is not None and user is not None:
                reports.append(await ab.sessions.purge(app=app, user=user, dry_run=dry_run))
        return reports

    return asyncio.run(run())


def _human(reports: list[PurgeReport], dry_run: bool) -> str:
    rows = [(r.scope, table, count) for r in reports for table, count in r.counts.items()] + [
        (r.scope, "audit records redacted", r.redacted) for r in reports
    ]
    verb = "would erase" if dry_run else "erased"
    lines = [f"{verb}:", format_table(("scope", "rows of", "count"), rows)]
    if dry_run:
        lines.append("dry run: nothing was changed; run again with --yes to erase")
    else:
        seqs = ", ".join(str(r.audit_seq) for r in reports)
        lines.append(
            f"audit record(s) {seqs} keep that this purge happened. Backups taken before "
            "still hold the data."
        )
    return "\n".join(lines)


@click.command()
@click.option("--prefix", default=None, help="Erase every memory in this namespace and below.")
@click.option(
    "--everything", is_flag=True, help="Erase every memory of the file (instead of --prefix)."
)
@click.option("--app", default=None, help="With --user: erase this user's sessions in this app.")
@click.option("--user", default=None, help="With --app: the user whose sessions go.")
@click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
@click.option("--yes", is_flag=True, help="Really erase (required unless --dry-run).")
@standard_options
def purge(
    *,
    db_path: Path,
    out: Output,
    prefix: str | None,
    everything: bool,
    app: str | None,
    user: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Erase data completely: what a prefix holds, or a user's sessions.

    Unlike a delete (a tombstone you can restore), a purge leaves nothing to
    restore: memories (every version, tombstones, archived copies, index
    words, vectors, queued jobs, unused cached vectors), or sessions of one
    user in one app (events, state, tasks, user state, archived sessions).
    Audit records naming them are redacted; one record keeps that the purge
    happened (counts and a sha256 of the prefix or user), and the audit chain
    still verifies. Prefixes match whole segments: --prefix user:al never
    touches user:alice. Backups taken before the purge still hold the data.

    \b
    Examples:
      abathur purge --db agent.db --prefix user:alice --dry-run
      abathur purge --db agent.db --prefix user:alice --app helpdesk --user alice --yes
    """
    if (app is None) != (user is None):
        raise click.UsageError("--app and --user go together")
    if prefix is None and not everything and app is None:
        raise click.UsageError("say what to purge: --prefix, --everything, or --app with --user")
    if not dry_run and not yes:
        raise click.UsageError(
            "a purge cannot be undone: add --yes to erase, or --dry-run to see what would go"
        )
    reports = _run(
        db_path, prefix=prefix, everything=everything, app=app, user=user, dry_run=dry_run
    )
    data = {
        "path": shown_db(db_path),
        "dry_run": dry_run,
        "reports": [r.model_dump(mode="json") for r in reports],
    }
    out.result(data, _human(reports, dry_run))

"""``abathur check``: integrity, foreign keys, schema, audit chain, JSON, search indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from abathur.cli.options import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    Output,
    format_table,
    is_server,
    shown_db,
    standard_options,
)
from abathur.errors import AbathurError, InvalidInputError
from abathur.memory import rebuild_keyword_index
from abathur.ops.backup import create_backup
from abathur.ops.integrity import (
    CHECKS,
    FIXABLE_CHECKS,
    CheckReport,
    rebuild_derived_indexes,
    run_checks,
)

__all__ = ["check"]


def _human(report: CheckReport, fixed: list[str] | None) -> str:
    rows = []
    for r in report.results:
        rows.append((r.status.upper() if r.status != "ok" else "ok", r.name, r.summary))
        rows.extend(("", "", f"- {finding}") for finding in r.findings)
    mode = "quick_check" if report.quick else "integrity_check"
    lines = [
        f"abathur check {shown_db(report.path)} ({mode})",
        "",
        format_table(("status", "check", "result"), rows),
    ]
    if fixed is not None:
        lines += ["", "rebuilt: " + (", ".join(fixed) or "nothing: the derived indexes agree")]
    if report.removed_temps:
        names = ", ".join(p.name for p in report.removed_temps)
        lines += ["", f"removed stale temps: {names} (owner gone)"]
    verdict = (
        "clean: no findings"
        if report.is_ok
        else f"{report.finding_count} finding(s): nothing was repaired"
    )
    lines += ["", verdict]
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="PRAGMA quick_check instead of integrity_check.")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice([c.name for c in CHECKS]),
    help="Run only this check (repeatable).",
)
@click.option(
    "--fix",
    is_flag=True,
    help="If a derived index (FTS) disagrees with its table, take a verified backup, "
    "rebuild it, and check again. Never changes, deletes or truncates table rows.",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Backup directory for --fix (default: the backup_dir setting, else ./backups "
    "beside the database).",
)
@standard_options
def check(
    *,
    db_path: Path,
    out: Output,
    quick: bool,
    only: tuple[str, ...],
    fix: bool,
    dest: Path | None,
) -> None:
    """Check a database without changing it: exit 0 clean, 1 findings, 3 could not run.

    \b
    Checks, in order, on one read-only snapshot (safe on a live database):
      integrity      PRAGMA integrity_check (quick_check with --quick)
      foreign_keys   PRAGMA foreign_key_check
      schema         tables, columns, indexes, triggers, user_version vs the migrations
      audit_chain    the audit hash chain, its head, and the rows it covers
      json_columns   every JSON column of every row is valid JSON
      fts_index      the FTS index agrees with its table
      vectors        every live memory has a vector or a queued job; none orphaned
      chunk_vectors  every document chunk has a vector or a queued job; none orphaned
      archive_payloads  every archive row and dictionary matches its sha256 and
                        decompresses within its recorded size (--quick: checksums only)
    A check that does not apply says "skipped" and why; it never passes silently.

    \b
    On PostgreSQL (--db postgresql://...), by the same names, on one snapshot:
      integrity      every table read end to end, plus pg_amcheck (--heapallindexed
                     unless --quick) when the database has the amcheck extension
                     (else its SQL functions; without it, says so)
      foreign_keys   enforced by PostgreSQL; NOT VALID ones and orphans looked for
      schema         tables, columns, indexes, functions against the migrations
      fts_index      memories_fts agrees with the live memories
    and the audit chain, JSON columns, vectors and archive payloads as on SQLite.

    It never repairs, deletes or truncates. --fix only rebuilds derived
    indexes (FTS), after a verified backup, and only when their check has
    findings; the report is then the one taken after the rebuild.

    \b
    Examples:
      abathur check --db ./agent.db
      abathur check --db ./agent.db --quick --json | jq '.checks[] | select(.status != "ok")'
      abathur check --db ./agent.db --only audit_chain
      abathur check --db ./agent.db --fix
    """
    if fix and is_server(db_path):
        # Only SQLite's FTS5 index is rebuilt by --fix; PostgreSQL's keyword
        # index is rows the memory service writes, not a derived structure.
        out.error(
            InvalidInputError(
                "--fix rebuilds SQLite's FTS5 indexes; on PostgreSQL the keyword index "
                "(memories_fts) is rows the memory service writes: run 'abathur check' "
                "for its findings (runbooks/05-corruption.md, On PostgreSQL)"
            )
        )
        raise click.exceptions.Exit(EXIT_ERROR)
    try:
        report = run_checks(db_path, quick=quick, only=only or None)
        fixed: list[str] | None = None
        data: dict[str, Any] = {}
        if fix:
            derived = [
                r
                for r in report.results
                if r.name in FIXABLE_CHECKS and r.status in ("findings", "error")
            ]
            if derived:
                out.progress("derived indexes disagree with their tables: backing up first")
                backup = create_backup(db_path, dest=dest)
                out.progress(f"backup {backup.data_path} verified; rebuilding")
                # memories_fts is contentless: the memory service computes its text.
                rebuilt = rebuild_derived_indexes(
                    db_path, rebuilders={"memories_fts": rebuild_keyword_index}
                )
                fixed = sorted(rebuilt)
                data["backup"] = str(backup.data_path)
                report = run_checks(db_path, quick=quick, only=only or None)
            else:
                fixed = []
    except AbathurError as exc:
        out.error(exc)
        raise click.exceptions.Exit(EXIT_ERROR) from None
    data = {**report.to_dict(), **data, **({"rebuilt": fixed} if fixed is not None else {})}
    out.result(data, _human(report, fixed))
    raise click.exceptions.Exit(EXIT_OK if report.is_ok else EXIT_FINDINGS)

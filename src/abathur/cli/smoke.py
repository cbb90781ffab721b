"""``abathur smoke``: the 35-case post-deploy smoke suite (issue 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from abathur.cli.options import (
    EXIT_FINDINGS,
    EXIT_OK,
    Output,
    database_problem,
    format_table,
    standard_options,
)
from abathur.ops.smoke import CATEGORIES, SmokeReport, run_smoke

__all__ = ["format_report", "smoke"]


def _time(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_report(report: SmokeReport) -> str:
    """The numbered table, the cleanup, then the summary line, as ``abathur smoke`` prints them."""
    table = format_table(
        ("#", "category", "case", "result", "time", "detail"),
        (
            (
                r.number,
                r.category,
                r.name,
                "pass" if r.is_passed else "FAIL",
                _time(r.seconds),
                r.detail,
            )
            for r in report.results
        ),
    )
    c = report.cleanup
    kept = c.remains
    cleanup = (
        f"cleanup: erased {c.sessions_deleted} sessions, {c.memories_deleted} memory versions, "
        f"{c.documents_removed} documents; kept by design: {kept.get('audit_redacted', 0)} "
        f"redacted audit records and {kept.get('purge_records', 0)} purge records"
    )
    if not c.is_clean:
        problems = list(c.errors)
        left = ", ".join(f"{n} {what}" for what, n in c.live_left.items() if n)
        if left:
            problems.append(f"still live: {left}")
        cleanup += "\nCLEANUP INCOMPLETE: " + "; ".join(problems)
    scope = f"category {report.category}" if report.category else "all cases"
    return "\n".join(
        [
            f"abathur smoke {report.to_dict()['path']} ({scope}, run {report.run_id})",
            "",
            table,
            "",
            f"took {report.seconds:.2f} s; {cleanup}",
            report.summary,
        ]
    )


@click.command()
@click.option(
    "--category",
    type=click.Choice(CATEGORIES),
    default=None,
    help="Run only this group of cases.",
)
@click.option(
    "--timeout",
    "timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds after which a case still running fails.",
)
@standard_options
def smoke(*, db_path: Path, out: Output, category: str | None, timeout: float) -> None:
    """Run the 35 smoke cases against a live database: exit 0 only when all pass.

    \b
    The cases, numbered in this order:
      connectivity  1-5    connects; all tables; all indexes; integrity_check;
                           foreign_key_check
      core          6-15   sessions, events, state, terminate; memory create,
                           version 2, get, namespace listing; audit; task
      performance   16-23  session get < 10 ms; memory get < 20 ms; namespace
                           query < 50 ms; 50 concurrent reads < 1 s; semantic
                           search < 500 ms; hybrid < 600 ms; document sync;
                           hot queries on their indexes (EXPLAIN QUERY PLAN)
      integration   24-30  session -> task -> memory; versioning; namespace
                           hierarchy; semantic relevance; changed document;
                           consolidation; audit trail
      errors        31-35  invalid JSON; duplicate session; invalid memory
                           type; unknown session on a task; concurrent conflict

    Safe after every deploy: the file is never created or migrated; the run
    writes only as app 'abathur-smoke' under the namespace
    'abathur-smoke:RUN_ID' (and in its own temporary directory), and erases
    what it wrote when it ends (purges: sessions, memories, vectors, queued
    jobs, cache entries, its document root). Its calls stay out of 'abathur
    stats' (call latencies, errors, namespace counts) and 'abathur cost'
    (usage ledger, budgets, advice), and the application's embedding worker
    never picks up its jobs. What stays is in the audit log only: the run's
    records, redacted (the hash chain still verifies), and three purge
    records. The semantic cases embed the run's own memories with the
    configured embedder (ABATHUR_EMBEDDER); without one they fail and say why.

    Exit 0 when every case passed and nothing of the run is left, 1
    otherwise, 3 when the run could not start.

    \b
    Examples:
      abathur smoke --db ./agent.db
      abathur smoke --db ./agent.db --category performance
      abathur smoke --db ./agent.db --json | jq '.cases[] | select(.status == "failed")'
    """
    # No database there (or not one): exit 3 like every command, not 5 failed cases.
    problem = database_problem(db_path)
    if problem is not None:
        raise problem
    report = asyncio.run(run_smoke(db_path, category=category, case_timeout_s=timeout))
    out.result(report.to_dict(), format_report(report))
    raise click.exceptions.Exit(EXIT_OK if report.is_ok else EXIT_FINDINGS)

"""``abathur cost`` (``cost report``): spend, tokens, cache savings, budgets and advice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from abathur.api import Abathur
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
from abathur.models import CostLine, CostReport
from abathur.ops.files import plan_migrations

__all__ = ["cost", "format_report"]

# Lines of the human table; the most expensive first.
_GROUPS_SHOWN = 20


def _load(db_path: Path, since: str, by: str) -> CostReport:
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )

    async def run() -> CostReport:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            return await ab.costs.report(since=since, by=by)  # type: ignore[arg-type]

    return asyncio.run(run())


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _rate(line: CostLine) -> str:
    return "-" if line.cache_hit_rate is None else f"{line.cache_hit_rate:.0%}"


def format_report(report: CostReport) -> str:
    """The report as text: totals, one line per group, context, budgets, advice."""
    t = report.total
    head = [
        (
            "period",
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(report.since))} .. "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(report.until))}",
        ),
        ("spend", _usd(t.cost_usd)),
        (
            "calls",
            f"{t.calls} ({t.texts} texts, {report.query_calls} search queries, "
            f"{report.repeated_queries} repeated)",
        ),
        ("tokens", f"{t.tokens:,}" + (" (some estimated)" if t.has_estimates else "")),
        (
            "cache",
            f"{t.cache_hits} hits, hit rate {_rate(t)}, saved {t.saved_tokens:,} tokens "
            f"= {_usd(t.saved_usd)}",
        ),
        (
            "context",
            f"{report.context_tokens:,} tokens served in {report.context_calls} "
            f"memory.context call(s) ({report.context_memories} memories)",
        ),
    ]
    shown = report.groups[:_GROUPS_SHOWN]
    groups = format_table(
        (
            f"by {report.by}",
            "calls",
            "texts",
            "tokens",
            "spend",
            "cache hits",
            "hit rate",
            "saved",
            "time",
        ),
        (
            (
                g.key,
                g.calls,
                g.texts,
                g.tokens,
                _usd(g.cost_usd),
                g.cache_hits,
                _rate(g),
                _usd(g.saved_usd),
                f"{g.duration_ms / 1000:.2f} s",
            )
            for g in shown
        ),
    )
    if len(report.groups) > len(shown):
        groups += f"\n... and {len(report.groups) - len(shown)} more (--json lists them all)"
    parts = [format_pairs(head), groups if report.groups else "no embedder calls in this period"]
    if report.budgets:
        parts.append(
            format_table(
                ("budget", "action", "spent", "limit", "used"),
                (
                    (
                        b.budget.replace("*", b.name) if b.name else b.budget,
                        b.action,
                        f"{b.spent:g} {b.unit}",
                        f"{b.limit:g} {b.unit}",
                        f"{b.used_share:.0%}" + (" EXCEEDED" if b.is_exceeded else ""),
                    )
                    for b in report.budgets
                ),
            )
        )
    advice = [f"- {a.message} [{a.code}]" for a in report.advice]
    parts.append("advice:\n" + ("\n".join(advice) if advice else "- nothing to change"))
    return "\n\n".join(parts)


def _options(fn: Any) -> Any:
    fn = click.option(
        "--since",
        default="7d",
        show_default=True,
        help="How far back: a number and s, m, h, d or w (30m, 24h, 7d, 2w).",
    )(fn)
    return click.option(
        "--by",
        type=click.Choice(["app", "user", "model"]),
        default="model",
        show_default=True,
        help="Group lines by the app or user charged (from the namespace), or by model.",
    )(fn)


def _report(db_path: Path, out: Output, since: str, by: str) -> None:
    report = _load(db_path, since, by)
    data = {"path": shown_db(db_path), **report.model_dump(mode="json")}
    out.result(data, format_report(report))


@click.group(invoke_without_command=True)
@_options
@standard_options
def cost(*, db_path: Path, out: Output, since: str, by: str) -> None:
    """What embedding cost: without a subcommand, the same as 'cost report'.

    \b
    Examples:
      abathur cost --db ./agent.db
      abathur cost --db ./agent.db --since 24h --by user --json
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    _report(db_path, out, since, by)


@cost.command("report")
@_options
@standard_options
def report(*, db_path: Path, out: Output, since: str, by: str) -> None:
    """Spend, calls, tokens, cache hit rate and savings, budgets, and advice.

    Read from the usage ledger: every embedder call (worker batches, search
    queries) with its tokens, price (Settings.prices, USD per million tokens;
    local models cost 0) and who it is charged to (from the namespace:
    user:<u>, app:<a>, adk.<a>:<u>). Cache savings value each cache hit at
    the model's average tokens per text. Advice is computed from the data:
    repeated queries, duplicate memories, oversized texts or chunks, a low
    cache hit rate, unpriced models, budgets near their limit.

    \b
    Examples:
      abathur cost report --db ./agent.db
      abathur cost report --db ./agent.db --since 30d --by app
      abathur cost report --db ./agent.db --json | jq .total.cost_usd
    """
    _report(db_path, out, since, by)

"""``abathur stats``: counts, growth (with sparklines), sizes, queue, call latencies."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
from abathur.models import Stats
from abathur.ops.files import plan_migrations

__all__ = ["format_stats", "stats"]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _load(db_path: Path, since: str, days: int, depth: int, top: int) -> Stats:
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )

    async def run() -> Stats:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)
        async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
            return await ab.analytics.stats(since=since, days=days, depth=depth, top=top)

    return asyncio.run(run())


def format_stats(s: Stats) -> str:
    """The stats as text: sizes, counts, growth sparklines, latencies, top namespaces."""
    eps = s.events_per_session
    sizes = [
        (
            "database",
            f"{_size(s.db_bytes)} + WAL {_size(s.wal_bytes)} "
            f"(archive {_size(s.archive_bytes)}, free {_size(s.free_bytes)})",
        ),
        (
            "memories",
            f"{s.memories:,} live ("
            + ", ".join(f"{t} {n:,}" for t, n in s.memories_by_type.items())
            + f"), {s.versions:,} versions",
        ),
        (
            "sessions",
            ", ".join(f"{k} {v:,}" for k, v in sorted(s.sessions_by_status.items())) or "none",
        ),
        (
            "events",
            f"{s.events:,} (per session: mean {eps['mean']:g}, p50 {eps['p50']:g}, "
            f"p95 {eps['p95']:g}, max {eps['max']:g})",
        ),
        (
            "queue",
            f"{s.queue_depth} job(s), {s.queue_failed} failed"
            + ("" if s.queue_oldest_age_s is None else f", oldest {s.queue_oldest_age_s:.0f} s"),
        ),
        (
            "archive",
            ", ".join(f"{k} {v:,}" for k, v in sorted(s.archive_entries.items())) or "empty",
        ),
    ]
    first, last = (s.growth[0].days[0], s.growth[0].days[-1]) if s.growth else ("", "")
    growth = format_table(
        (f"new per day, {first} .. {last}", "", "total"),
        ((g.name, g.sparkline, sum(g.counts)) for g in s.growth),
    )
    namespaces = format_table(
        ("namespace", "memories", "new in 7 days"),
        ((n.name, n.count, n.new_7d or 0) for n in s.namespaces),
    )
    calls = format_table(
        ("call", "calls", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"),
        (
            (
                c.name,
                c.calls,
                c.errors,
                f"{c.p50_ms:.3f}",
                f"{c.p95_ms:.3f}",
                f"{c.p99_ms:.3f}",
                f"{c.max_ms:.3f}",
            )
            for c in s.calls
        ),
    )
    access = (
        format_table(("top reads", "count"), ((n.name, n.count) for n in s.top_reads))
        + "\n\n"
        + format_table(("top writes", "count"), ((n.name, n.count) for n in s.top_writes))
    )
    parts = [
        format_pairs(sizes),
        growth,
        namespaces if s.namespaces else "no memories",
        calls if s.calls else "no service calls recorded in this period",
        access,
    ]
    return "\n\n".join(parts)


@click.command()
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Period of the call latencies and access counts (30m, 24h, 7d, 2w).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    default=14,
    show_default=True,
    help="UTC days of growth to chart.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Group namespaces by their first N segments.",
)
@click.option(
    "--top",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Namespaces in each list.",
)
@standard_options
def stats(*, db_path: Path, out: Output, since: str, days: int, depth: int, top: int) -> None:
    """Counts, growth, sizes, queue, and latency percentiles of service calls.

    \b
    Shows:
      sizes      database, WAL, archive and free space inside the file
      counts     memories per type and namespace, sessions per status, events
                 per session, embedding queue depth and age, archive entries
      growth     new memories, sessions and events per UTC day, as sparklines
      calls      count and p50/p95/p99 latency of each service method, from
                 the 'metrics' table every process flushes to once a minute
      access     namespaces with the most reads and writes
    Reads only; safe on a live database.

    \b
    Examples:
      abathur stats --db ./agent.db
      abathur stats --db ./agent.db --since 24h --days 30
      abathur stats --db ./agent.db --json | jq '.calls[] | select(.name == "memory.put")'
    """
    found = _load(db_path, since, days, depth, top)
    data = {"path": shown_db(db_path), **found.model_dump(mode="json")}
    out.result(data, format_stats(found))

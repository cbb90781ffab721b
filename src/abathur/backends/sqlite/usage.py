"""SQLite's :class:`~abathur.stores.usage.UsageLedger`: the ``usage_ledger`` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import apsw

from abathur.backends.sqlite.connection import scalar_int, table_exists
from abathur.backends.sqlite.context import SqliteContext
from abathur.stores.usage import ContextUsage, QueryRepeats, Spend, UsageGroup, UsageRow

__all__ = [
    "SQL_REPORT_BY",
    "SQL_SPEND_ALL",
    "SQL_SPEND_APP",
    "SQL_SPEND_USER",
    "SQL_USAGE",
    "SqliteUsageLedger",
]

SQL_USAGE = (
    "INSERT INTO usage_ledger (at, provider, model, operation, inputs, tokens, is_estimate, "
    "chars, duration_ms, cache_hits, app, user, text_hash, price_usd_per_mtok, cost_usd, "
    "call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Budgets: spend since the start of the period. Context rows serve tokens, they
# cost nothing and are not embedder calls. Indexes usage_by_time / _by_app / _by_user.
SQL_SPEND_ALL = (
    "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0.0) FROM usage_ledger "
    "WHERE at >= ? AND operation != 'context'"
)
SQL_SPEND_APP = (
    "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0.0) FROM usage_ledger "
    "WHERE app = ? AND at >= ? AND operation != 'context'"
)
SQL_SPEND_USER = (
    "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0.0) FROM usage_ledger "
    "WHERE user = ? AND at >= ? AND operation != 'context'"
)
# Budgets with no name: every app (or user) with spend in the period.
SQL_SPENDERS = {
    "app": "SELECT DISTINCT app FROM usage_ledger WHERE at >= ? AND app IS NOT NULL",
    "user": "SELECT DISTINCT user FROM usage_ledger WHERE at >= ? AND user IS NOT NULL",
}
# cost report: one row per (group, provider, model, operation) in [since, until).
# The group expressions are ours, chosen by --by, never a caller's text.
_GROUP_KEYS = {
    "app": "coalesce(app, '-')",
    "user": "coalesce(user, '-')",
    "model": "provider || '/' || model",
}
SQL_REPORT_BY = {
    by: (
        f"SELECT {expr}, provider, model, operation, sum(inputs), sum(tokens), "
        "max(is_estimate), sum(chars), sum(duration_ms), sum(cache_hits), sum(cost_usd), "
        "sum(inputs > 0 AND call_id IS NULL) + count(DISTINCT call_id) "
        "FROM usage_ledger WHERE at >= ? AND at < ? GROUP BY 1, 2, 3, 4"
    )
    for by, expr in _GROUP_KEYS.items()
}
# Calls in [since, until): whole rows, and each split call once.
SQL_CALLS = (
    "SELECT coalesce(sum(inputs > 0 AND call_id IS NULL), 0) + count(DISTINCT call_id) "
    "FROM usage_ledger WHERE at >= ? AND at < ? AND operation != 'context'"
)
# Tokens per text of each model over the whole ledger: what a cache hit saved.
SQL_TOKENS_PER_TEXT = (
    "SELECT provider, model, sum(tokens) * 1.0 / sum(inputs) FROM usage_ledger "
    "WHERE operation != 'context' AND inputs > 0 GROUP BY provider, model"
)
SQL_REPEATED_QUERIES = (
    "SELECT count(*), count(*) - count(DISTINCT text_hash) FROM usage_ledger "
    "WHERE operation = 'embed.query' AND at >= ? AND at < ? AND text_hash IS NOT NULL"
)
SQL_CONTEXT = (
    "SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(inputs), 0) FROM usage_ledger "
    "WHERE operation = 'context' AND at >= ? AND at < ?"
)
# Memories whose embedded text runs past what the embedder reads (~4 chars a token).
SQL_OVERSIZED_MEMORIES = (
    "SELECT count(*) FROM memories WHERE is_current = 1 AND status = 'live' AND length(value) > ?"
)
SQL_DUPLICATE_VALUES = (
    "SELECT count(*) - count(DISTINCT value) FROM memories "
    "WHERE is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > ?)"
)
SQL_LONG_CHUNKS = "SELECT count(*) FROM chunks WHERE tokens > ?"


class SqliteUsageLedger:
    """:class:`~abathur.stores.usage.UsageLedger` on one apsw connection, in its transaction.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur.backends.sqlite import Database
        >>> from abathur.config import Settings
        >>> from abathur.stores.usage import UsageRow
        >>> async def demo():
        ...     path = pathlib.Path(tempfile.mkdtemp()) / "u.db"
        ...     db = await Database.open(path, Settings(db=path))
        ...     row = UsageRow(at=100.0, provider="p", model="m", operation="embed",
        ...                    inputs=1, tokens=7, is_estimate=False, chars=20,
        ...                    duration_ms=1.0, user="alice", cost_usd=0.5)
        ...     try:
        ...         await db.write(lambda tx: tx.usage.add([row]))
        ...         return await db.read(lambda tx: tx.usage.spend(0.0, user="alice"))
        ...     finally:
        ...         await db.close()
        >>> asyncio.run(demo())
        Spend(tokens=7, cost_usd=0.5)
    """

    def __init__(self, conn: apsw.Connection, context: SqliteContext) -> None:
        self._conn = conn
        self._context = context

    def add(self, rows: Sequence[UsageRow]) -> None:
        """Append ``rows`` to the ledger."""
        if rows:
            self._conn.executemany(
                SQL_USAGE,
                [
                    (
                        r.at,
                        r.provider,
                        r.model,
                        r.operation,
                        r.inputs,
                        r.tokens,
                        int(r.is_estimate),
                        r.chars,
                        r.duration_ms,
                        r.cache_hits,
                        r.app,
                        r.user,
                        r.text_hash,
                        r.price_usd_per_mtok,
                        r.cost_usd,
                        r.call_id,
                    )
                    for r in rows
                ],
            )

    def spend(self, since: float, *, app: str | None = None, user: str | None = None) -> Spend:
        """Spend at or after ``since`` of ``app``, else of ``user``, else of everything."""
        if app is not None:
            found = self._conn.execute(SQL_SPEND_APP, (app, since)).fetchall()
        elif user is not None:
            found = self._conn.execute(SQL_SPEND_USER, (user, since)).fetchall()
        else:
            found = self._conn.execute(SQL_SPEND_ALL, (since,)).fetchall()
        tokens, usd = cast(tuple[int, float], found[0])
        return Spend(int(tokens), float(usd))

    def spenders(self, since: float, *, by: Literal["app", "user"]) -> list[str]:
        """Every app (or user) with a row at or after ``since``."""
        return [str(name) for (name,) in self._conn.execute(SQL_SPENDERS[by], (since,))]

    def groups(
        self, since: float, until: float, *, by: Literal["app", "user", "model"]
    ) -> list[UsageGroup]:
        """Totals in ``[since, until)`` per (``by`` key, provider, model, operation)."""
        return [
            UsageGroup(
                key, provider, model, operation, inputs, tokens, bool(estimate), chars, ms,
                hits, cost, calls,
            )
            for (
                key, provider, model, operation, inputs, tokens, estimate, chars, ms, hits,
                cost, calls,
            ) in self._conn.execute(SQL_REPORT_BY[by], (since, until))
        ]  # fmt: skip

    def calls(self, since: float, until: float) -> int:
        """Embedder calls in ``[since, until)``, each split call once."""
        return scalar_int(self._conn, SQL_CALLS, (since, until))

    def tokens_per_text(self) -> dict[tuple[str, str], float]:
        """Average tokens per text of each (provider, model) over the whole ledger."""
        return {(p, m): t for p, m, t in self._conn.execute(SQL_TOKENS_PER_TEXT)}

    def query_repeats(self, since: float, until: float) -> QueryRepeats:
        """Query embeddings in ``[since, until)`` and how many repeated a text."""
        row = self._conn.execute(SQL_REPEATED_QUERIES, (since, until)).fetchall()[0]
        return QueryRepeats(*cast(tuple[int, int], row))

    def context_usage(self, since: float, until: float) -> ContextUsage:
        """``memory.context`` totals in ``[since, until)``."""
        row = self._conn.execute(SQL_CONTEXT, (since, until)).fetchall()[0]
        return ContextUsage(*cast(tuple[int, int, int], row))

    def oversized_memories(self, min_chars: int) -> int:
        """Live current memories whose value is longer than ``min_chars``."""
        return scalar_int(self._conn, SQL_OVERSIZED_MEMORIES, (min_chars,))

    def duplicate_memory_values(self, now: float) -> int:
        """Live unexpired current memories whose value another one also holds."""
        return scalar_int(self._conn, SQL_DUPLICATE_VALUES, (now,))

    def long_chunks(self, min_tokens: int) -> int | None:
        """Document chunks over ``min_tokens`` tokens; None if the file has no documents."""
        if not table_exists(self._conn, "chunks"):
            return None
        return scalar_int(self._conn, SQL_LONG_CHUNKS, (min_tokens,))

"""PostgreSQL's :class:`~abathur.stores.usage.UsageLedger` (issue 14): the ``usage_ledger`` table.

Mirrors :mod:`abathur.backends.sqlite.usage`. The numbers must be SQLite's,
to the last bit, since budgets compare them with their limits. What differs,
and why:

* Float sums (``cost_usd``, ``duration_ms``) use ``kbn_sum`` (migration 030),
  SQLite's compensated summation, fed in the order SQLite's plan reads the
  rows (its ``at`` indexes: ``at``, then id). PostgreSQL's own
  ``sum(double precision)`` adds naively: ten rows of 0.1 make
  0.9999999999999999 there and 1.0 on SQLite.
* ``sum(bigint)`` is ``numeric`` in PostgreSQL (a Decimal in Python): cast
  back to ``bigint``, as SQLite's integer sums are.
* ``sum(boolean)`` does not exist: ``count(*) FILTER (WHERE ...)``.
* SQLite's GROUP BY returns its groups sorted by the grouped columns (and the
  cost report adds them up in that order); PostgreSQL's may come in any
  order, so the report says ``ORDER BY``. ``DISTINCT`` likewise.
* ``user`` is reserved: ``"user"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.stores.usage import ContextUsage, QueryRepeats, Spend, UsageGroup, UsageRow

__all__ = [
    "SQL_REPORT_BY",
    "SQL_SPEND_ALL",
    "SQL_SPEND_APP",
    "SQL_SPEND_USER",
    "SQL_USAGE",
    "PgUsageLedger",
]

SQL_USAGE = (
    "INSERT INTO usage_ledger (at, provider, model, operation, inputs, tokens, is_estimate, "
    'chars, duration_ms, cache_hits, app, "user", text_hash, price_usd_per_mtok, cost_usd, '
    "call_id) VALUES (%(at)s, %(provider)s, %(model)s, %(operation)s, %(inputs)s, "
    "%(tokens)s, %(is_estimate)s, %(chars)s, %(duration_ms)s, %(cache_hits)s, %(app)s, "
    "%(user)s, %(text_hash)s, %(price_usd_per_mtok)s, %(cost_usd)s, %(call_id)s)"
)
# SQLite's sum(cost_usd), in the order SQLite reads the rows.
_COST = "kbn_sum(cost_usd ORDER BY at, id)"
# Budgets: spend since the start of the period. Context rows serve tokens, they
# cost nothing and are not embedder calls. Indexes usage_by_time / _by_app / _by_user.
_SPEND = f"SELECT coalesce(sum(tokens), 0)::bigint, coalesce({_COST}, 0.0) FROM usage_ledger "
SQL_SPEND_ALL = _SPEND + "WHERE at >= %(since)s AND operation != 'context'"
SQL_SPEND_APP = _SPEND + "WHERE app = %(name)s AND at >= %(since)s AND operation != 'context'"
SQL_SPEND_USER = _SPEND + "WHERE \"user\" = %(name)s AND at >= %(since)s AND operation != 'context'"
# Budgets with no name: every app (or user) with spend in the period (SQLite
# reads them off its (app, at) index: sorted).
SQL_SPENDERS = {
    "app": (
        "SELECT DISTINCT app FROM usage_ledger WHERE at >= %(since)s AND app IS NOT NULL "
        "ORDER BY app"
    ),
    "user": (
        'SELECT DISTINCT "user" FROM usage_ledger WHERE at >= %(since)s '
        'AND "user" IS NOT NULL ORDER BY "user"'
    ),
}
# cost report: one row per (group, provider, model, operation) in [since, until),
# sorted by them as SQLite's GROUP BY returns them. The group expressions are
# ours, chosen by --by, never a caller's text.
_CALLS = "count(*) FILTER (WHERE inputs > 0 AND call_id IS NULL) + count(DISTINCT call_id)"
_GROUP_KEYS = {
    "app": "coalesce(app, '-')",
    "user": "coalesce(\"user\", '-')",
    "model": "provider || '/' || model",
}
SQL_REPORT_BY = {
    by: (
        f"SELECT {expr}, provider, model, operation, sum(inputs)::bigint, sum(tokens)::bigint, "
        "max(is_estimate), sum(chars)::bigint, kbn_sum(duration_ms ORDER BY at, id), "
        f"sum(cache_hits)::bigint, {_COST}, {_CALLS} "
        "FROM usage_ledger WHERE at >= %(since)s AND at < %(until)s "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    )
    for by, expr in _GROUP_KEYS.items()
}
# Calls in [since, until): whole rows, and each split call once.
SQL_CALLS = (
    f"SELECT {_CALLS} FROM usage_ledger "
    "WHERE at >= %(since)s AND at < %(until)s AND operation != 'context'"
)
# Tokens per text of each model over the whole ledger: what a cache hit saved.
# Integer sums, then one double division, as SQLite's sum(tokens) * 1.0 / sum(inputs).
SQL_TOKENS_PER_TEXT = (
    "SELECT provider, model, sum(tokens)::double precision / sum(inputs)::double precision "
    "FROM usage_ledger WHERE operation != 'context' AND inputs > 0 GROUP BY provider, model"
)
SQL_REPEATED_QUERIES = (
    "SELECT count(*), count(*) - count(DISTINCT text_hash) FROM usage_ledger "
    "WHERE operation = 'embed.query' AND at >= %(since)s AND at < %(until)s "
    "AND text_hash IS NOT NULL"
)
SQL_CONTEXT = (
    "SELECT count(*), coalesce(sum(tokens), 0)::bigint, coalesce(sum(inputs), 0)::bigint "
    "FROM usage_ledger WHERE operation = 'context' AND at >= %(since)s AND at < %(until)s"
)
# Memories whose embedded text runs past what the embedder reads (~4 chars a
# token). length() counts characters in a UTF8 database, as SQLite's does.
SQL_OVERSIZED_MEMORIES = (
    "SELECT count(*) FROM memories WHERE is_current = 1 AND status = 'live' "
    "AND length(value) > %(n)s"
)
SQL_DUPLICATE_VALUES = (
    "SELECT count(*) - count(DISTINCT value) FROM memories "
    "WHERE is_current = 1 AND status = 'live' AND (expires_at IS NULL OR expires_at > %(now)s)"
)
SQL_HAS_CHUNKS = "SELECT to_regclass('chunks') IS NOT NULL"
SQL_LONG_CHUNKS = "SELECT count(*) FROM chunks WHERE tokens > %(n)s"


def _row_params(r: UsageRow) -> dict[str, Any]:
    return {
        "at": r.at,
        "provider": r.provider,
        "model": r.model,
        "operation": r.operation,
        "inputs": r.inputs,
        "tokens": r.tokens,
        "is_estimate": int(r.is_estimate),
        "chars": r.chars,
        "duration_ms": r.duration_ms,
        "cache_hits": r.cache_hits,
        "app": r.app,
        "user": r.user,
        "text_hash": r.text_hash,
        "price_usd_per_mtok": r.price_usd_per_mtok,
        "cost_usd": r.cost_usd,
        "call_id": r.call_id,
    }


class PgUsageLedger:
    """:class:`~abathur.stores.usage.UsageLedger` on one psycopg connection, in its
    transaction (the backend opens, commits and retries it; this store never does)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], context: PgContext) -> None:
        self._conn = conn
        self._context = context

    def _row(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...]:
        row = self._conn.execute(sql, params).fetchone()
        assert row is not None  # an aggregate without GROUP BY returns one row
        return row

    def _count(self, sql: str, params: dict[str, Any]) -> int:
        return int(self._row(sql, params)[0])

    def add(self, rows: Sequence[UsageRow]) -> None:
        """Append ``rows`` to the ledger."""
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(SQL_USAGE, [_row_params(r) for r in rows])

    def spend(self, since: float, *, app: str | None = None, user: str | None = None) -> Spend:
        """Spend at or after ``since`` of ``app``, else of ``user``, else of everything."""
        if app is not None:
            tokens, usd = self._row(SQL_SPEND_APP, {"name": app, "since": since})
        elif user is not None:
            tokens, usd = self._row(SQL_SPEND_USER, {"name": user, "since": since})
        else:
            tokens, usd = self._row(SQL_SPEND_ALL, {"since": since})
        return Spend(int(tokens), float(usd))

    def spenders(self, since: float, *, by: Literal["app", "user"]) -> list[str]:
        """Every app (or user) with a row at or after ``since``."""
        return [str(name) for (name,) in self._conn.execute(SQL_SPENDERS[by], {"since": since})]

    def groups(
        self, since: float, until: float, *, by: Literal["app", "user", "model"]
    ) -> list[UsageGroup]:
        """Totals in ``[since, until)`` per (``by`` key, provider, model, operation)."""
        rows = self._conn.execute(SQL_REPORT_BY[by], {"since": since, "until": until})
        return [
            UsageGroup(
                str(key), str(provider), str(model), str(operation), int(inputs), int(tokens),
                bool(estimate), int(chars), float(ms), int(hits), float(cost), int(calls),
            )
            for (
                key, provider, model, operation, inputs, tokens, estimate, chars, ms, hits,
                cost, calls,
            ) in rows
        ]  # fmt: skip

    def calls(self, since: float, until: float) -> int:
        """Embedder calls in ``[since, until)``, each split call once."""
        return self._count(SQL_CALLS, {"since": since, "until": until})

    def tokens_per_text(self) -> dict[tuple[str, str], float]:
        """Average tokens per text of each (provider, model) over the whole ledger."""
        return {(str(p), str(m)): float(t) for p, m, t in self._conn.execute(SQL_TOKENS_PER_TEXT)}

    def query_repeats(self, since: float, until: float) -> QueryRepeats:
        """Query embeddings in ``[since, until)`` and how many repeated a text."""
        calls, repeated = self._row(SQL_REPEATED_QUERIES, {"since": since, "until": until})
        return QueryRepeats(int(calls), int(repeated))

    def context_usage(self, since: float, until: float) -> ContextUsage:
        """``memory.context`` totals in ``[since, until)``."""
        calls, tokens, memories = self._row(SQL_CONTEXT, {"since": since, "until": until})
        return ContextUsage(int(calls), int(tokens), int(memories))

    def oversized_memories(self, min_chars: int) -> int:
        """Live current memories whose value is longer than ``min_chars``."""
        return self._count(SQL_OVERSIZED_MEMORIES, {"n": min_chars})

    def duplicate_memory_values(self, now: float) -> int:
        """Live unexpired current memories whose value another one also holds."""
        return self._count(SQL_DUPLICATE_VALUES, {"now": now})

    def long_chunks(self, min_tokens: int) -> int | None:
        """Document chunks over ``min_tokens`` tokens; None if the database has no documents."""
        if not self._row(SQL_HAS_CHUNKS, {})[0]:
            return None
        return self._count(SQL_LONG_CHUNKS, {"n": min_tokens})

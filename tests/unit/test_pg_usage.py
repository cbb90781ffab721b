"""PgUsageLedger (issue 14): the same numbers as SQLite's ledger, to the last bit.

Budgets compare a limit with :meth:`UsageLedger.spend`, and the cost report
adds up :meth:`UsageLedger.groups` in order: a float that differs in its last
bit from SQLite's changes an answer. SQLite sums REAL values with
compensation; PostgreSQL's ``sum(double precision)`` does not.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import apsw

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.usage import PgUsageLedger
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.stores import UsageLedger
from abathur.stores.usage import UsageRow


def ledger_rows() -> list[UsageRow]:
    """Rows whose float sums round differently when added naively."""
    rng = random.Random(14)
    rows = [
        # Ten dimes: 1.0 with compensation, 0.9999999999999999 without.
        UsageRow(
            at=1000.0 + n, provider="openai", model="small", operation="embed", inputs=3,
            tokens=40, is_estimate=False, chars=120, duration_ms=0.1, app="shop",
            user="alice", price_usd_per_mtok=0.02, cost_usd=0.1,
        )
        for n in range(10)
    ]  # fmt: skip
    apps = [None, "shop", "blog", "b_og"]
    users = [None, "alice", "bob", "al%ce"]
    for n in range(300):
        call_id = None if n % 7 else 1000 + n // 21  # split calls share an id
        rows.append(
            UsageRow(
                # Not in id order: SQLite reads by `at`.
                at=1000.0 + rng.uniform(0, 500),
                provider=rng.choice(["openai", "ollama"]),
                model=rng.choice(["small", "large"]),
                operation=rng.choice(["embed", "embed", "embed.query", "context"]),
                inputs=rng.choice([0, 1, 2, 5]),
                tokens=rng.randrange(0, 10_000),
                is_estimate=rng.random() < 0.3,
                chars=rng.randrange(0, 50_000),
                duration_ms=round(rng.uniform(0.01, 900.0), 3),
                cache_hits=rng.randrange(0, 4),
                app=rng.choice(apps),
                user=rng.choice(users),
                text_hash=rng.choice([None, "q1", "q2", "q3"]),
                price_usd_per_mtok=rng.choice([None, 0.02, 0.13]),
                cost_usd=rng.choice([0.1, 0.2, 0.3, 1e-7, 3.3e-5, rng.uniform(0, 0.01), 123.456]),
                call_id=call_id,
            )
        )
    return rows


WINDOWS = [(0.0, 2000.0), (1000.0, 1010.0), (1100.0, 1400.0), (1250.5, 1251.0), (3000.0, 4000.0)]


def questions(ledger: UsageLedger) -> list[Any]:
    """Every read of the ledger, over several windows and scopes."""
    out: list[Any] = []
    for since, until in WINDOWS:
        out.append(ledger.spend(since))
        for name in ("shop", "blog", "b_og", "nobody"):
            out.append(ledger.spend(since, app=name))
        for name in ("alice", "bob", "al%ce", "nobody"):
            out.append(ledger.spend(since, user=name))
        out.append(ledger.spend(since, app="shop", user="bob"))  # app wins
        out += [ledger.spenders(since, by="app"), ledger.spenders(since, by="user")]
        for by in ("app", "user", "model"):
            out.append(ledger.groups(since, until, by=by))  # type: ignore[arg-type]
        out += [
            ledger.calls(since, until),
            ledger.query_repeats(since, until),
            ledger.context_usage(since, until),
        ]
    out.append(ledger.tokens_per_text())
    return out


MEMORIES = [
    # (namespace, key, value, is_current, status, expires_at)
    ("user:a", "k1", '"same"', 1, "live", None),
    ("user:b", "k1", '"same"', 1, "live", 5000.0),
    ("user:c", "k1", '"same"', 1, "live", 10.0),  # expired at now=100
    ("user:d", "k1", '"same"', 0, "superseded", None),
    ("user:e", "k1", '"ééééé"', 1, "live", None),  # 7 characters, 12 bytes
    ("user:f", "k1", '"abcdefgh"', 1, "live", None),  # 10 characters
    ("user:g", "k1", '"other"', 1, "deleted", None),
]


def outside_the_ledger(ledger: UsageLedger, execute: Any) -> list[Any]:
    for n, (namespace, key, value, current, status, expires) in enumerate(MEMORIES, 1):
        execute(
            "INSERT INTO memories (id, namespace, key, version, type, value, created_at, "
            "first_created_at, expires_at, is_current, status) "
            "VALUES (%s, %s, %s, 1, 'semantic', %s, 1.0, 1.0, %s, %s, %s)",
            (n, namespace, key, value, expires, current, status),
        )
    out: list[Any] = [ledger.long_chunks(5)]
    execute("INSERT INTO document_roots (id, path, created_at) VALUES (1, '/r', 1.0)", ())
    execute(
        "INSERT INTO documents (id, root_id, path, content_hash, size, mtime_ns, status, "
        "synced_at) VALUES (1, 1, 'a', 'h', 1, 1, 'indexed', 1.0)",
        (),
    )
    for n, tokens in enumerate([3, 5, 6, 900], 1):
        execute(
            "INSERT INTO chunks (id, document_id, ordinal, heading, text, content_hash, tokens) "
            "VALUES (%s, 1, %s, '', 't', 'c', %s)",
            (n, n, tokens),
        )
    out += [ledger.long_chunks(5), ledger.long_chunks(10_000)]
    for min_chars in (0, 7, 8, 9, 10):
        out.append((min_chars, ledger.oversized_memories(min_chars)))
    for now in (0.0, 100.0, 6000.0):
        out.append((now, ledger.duplicate_memory_values(now)))
    return out


async def test_every_number_is_sqlites(pg_conn: Any, tmp_path: Path) -> None:
    rows = ledger_rows()
    path = tmp_path / "u.db"
    db = await Database.open(path, Settings(db=path))

    def on_sqlite(tx: Any) -> list[Any]:
        tx.usage.add(rows[:150])
        tx.usage.add(rows[150:])
        tx.usage.add([])

        def execute(sql: str, params: tuple[Any, ...]) -> None:
            tx.conn.execute(sql.replace("%s", "?"), params)

        return [questions(tx.usage), outside_the_ledger(tx.usage, execute)]

    try:
        expected = await db.write(on_sqlite)
    finally:
        await db.close()
    ledger = PgUsageLedger(pg_conn, PgContext("", Settings()))
    with pg_conn.transaction():
        ledger.add(rows[:150])
        ledger.add(rows[150:])
        ledger.add([])
        got = [
            questions(ledger),
            outside_the_ledger(ledger, lambda sql, params: pg_conn.execute(sql, params)),
        ]
    assert got == expected
    # The same values, typed as SQLite's: ints and floats, never Decimal.
    for answer in got[0]:
        if isinstance(answer, dict):
            answer = [*answer, *answer.values()]
        for item in answer if isinstance(answer, list) else [answer]:
            for value in item if isinstance(item, tuple) else [item]:
                assert type(value) in (int, float, str, bool), (answer, value)


def test_the_dimes_cost_one_dollar_not_less(pg_conn: Any) -> None:
    # What the aggregate is for: PostgreSQL's own sum() misses by one ulp.
    ledger = PgUsageLedger(pg_conn, PgContext("", Settings()))
    with pg_conn.transaction():
        ledger.add(ledger_rows()[:10])
        spend = ledger.spend(0.0, app="shop")
        naive = pg_conn.execute("SELECT sum(cost_usd) FROM usage_ledger").fetchone()[0]
        (group,) = ledger.groups(0.0, 2000.0, by="app")
    assert naive == 0.9999999999999999
    assert spend.cost_usd == 1.0 and spend.tokens == 400
    assert group.cost_usd == 1.0 and group.duration_ms == 1.0 and group.calls == 10


def test_kbn_sum_is_sqlites_sum(pg_conn: Any) -> None:
    # NULLs skipped, NULL over no row, cancellation, and order: SQLite's own
    # sum() over the same values, in the same order, is the expected answer.
    rng = random.Random(7)
    cases: list[list[float | None]] = [
        [],
        [None, None],
        [1e100, 1.0, -1e100],
        [0.1] * 10,
        [0.1, None, 0.2],
        [-0.5, 0.25],
        [rng.uniform(-1, 1) * 10 ** rng.randrange(-12, 12) for _ in range(500)],
        [rng.choice([0.1, 0.2, 0.3, 1e-7, 3.3e-5]) for _ in range(1000)],
    ]
    sqlite = apsw.Connection(":memory:")
    naive_differs = 0
    for values in cases:
        (expected,) = sqlite.execute(
            "SELECT sum(value) FROM (SELECT value FROM json_each(?) ORDER BY key)",
            (json.dumps(values),),
        ).fetchone()
        got, naive = pg_conn.execute(
            "SELECT kbn_sum(v ORDER BY n), sum(v) "
            "FROM unnest(%s::double precision[]) WITH ORDINALITY AS t(v, n)",
            (values,),
        ).fetchone()
        assert got == expected, values
        naive_differs += naive != expected
    assert naive_differs >= 2  # the cases do tell the two sums apart

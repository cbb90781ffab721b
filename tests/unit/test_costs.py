"""CostService: every embedder call is priced and charged to an app/user, budgets warn, block
or degrade exactly at their limit, the report adds up and gives advice from the data, and
memory.context packs memories under a token budget."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from abathur import Abathur, BudgetExceededError, InvalidInputError
from abathur.backends.sqlite.usage import (
    SQL_REPORT_BY,
    SQL_SPEND_ALL,
    SQL_SPEND_APP,
    SQL_SPEND_USER,
)
from abathur.costs import attribute, period_start
from abathur.embeddings.queue.usage import UsageBuffer, charge
from abathur.stores import Transaction
from abathur.stores.usage import UsageRow
from abathur.values import parse_duration
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged

# WordHashEmbedder counts one token per word; "k: w1 ... w8" is 9 of them.
NINE_TOKENS = "w1 w2 w3 w4 w5 w6 w7 w8"


def opener(backend: BackendHandle, embedder: WordHashEmbedder | str = "none", **settings: Any):
    return backend.open(embedder=embedder, embed_worker=False, **settings)


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of ``sql`` on the SQLite file (tests that use it are sqlite_only)."""
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


def budget(action: str, **kw: Any) -> list[dict[str, Any]]:
    return [{"scope": "user", "name": "alice", "max_tokens": 10, "action": action, **kw}]


# -- attribution and prices -------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "scope"),
    [
        ("user:alice", (None, "alice")),
        ("user:alice:preferences", (None, "alice")),
        ("app:helpdesk", ("helpdesk", None)),
        ("app:helpdesk:faq", ("helpdesk", None)),
        ("app:helpdesk:user:bob", ("helpdesk", None)),  # the first two segments only
        ("adk.help%3Adesk:b%3Ab", ("help:desk", "b:b")),
        ("user", (None, None)),
        ("docs:runbooks", (None, None)),
        ("users:alice", (None, None)),
    ],
)
def test_attribution_follows_the_namespace(namespace: str, scope: tuple) -> None:
    assert attribute(namespace) == scope


def test_durations_and_periods() -> None:
    assert parse_duration("2w") == 14 * 86400 and parse_duration(" 1.5h ") == 5400
    with pytest.raises(InvalidInputError) as ei:
        parse_duration("7 days")
    assert ei.value.code == "invalid_input"
    at = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert period_start("day", at) == datetime(2026, 3, 31, tzinfo=UTC).timestamp()
    assert period_start("month", at) == datetime(2026, 3, 1, tzinfo=UTC).timestamp()


@pytest.mark.sqlite_only("reads the usage_ledger and metrics tables with SQL")
async def test_usage_rows_carry_who_pays_the_price_and_the_cost(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, prices={"test/word-hash": 2.0}) as ab:
        await ab.memory.put("adk.helpdesk:alice:notes", "k", NINE_TOKENS)
        await ab.memory.put("user:bob", "k", "one two")
        await ab.memory.put("docs:faq", "k", "three")
        await ab.embeddings.drain()
        await ab.memory.search("w1 w2", prefix="user:bob", mode="vector")
        await ab.embeddings.drain()
        report = await ab.costs.report(since="1h", by="user")
        call_ids = await rows(
            ab, "SELECT count(DISTINCT call_id), count(call_id) FROM usage_ledger"
        )
        ledger = await rows(
            ab,
            "SELECT operation, app, user, inputs, tokens, chars, "
            "is_estimate, price_usd_per_mtok, cost_usd, text_hash "
            "FROM usage_ledger ORDER BY id",
        )
    # One call for the batch, one ledger row per payer: each gets its own texts and
    # characters, and the call's 14 tokens in proportion to its characters.
    embeds = {(r[1], r[2]): r for r in ledger if r[0] == "embed"}
    assert set(embeds) == {("helpdesk", "alice"), (None, "bob"), (None, None)}
    assert sum(r[4] for r in embeds.values()) == 9 + 3 + 2
    assert {scope: row[5] for scope, row in embeds.items()} == {
        ("helpdesk", "alice"): len(f"k: {NINE_TOKENS}"),
        (None, "bob"): len("k: one two"),
        (None, None): len("k: three"),
    }
    for _, _, _, inputs, tokens, _, is_estimate, price, cost, text_hash in embeds.values():
        assert (inputs, is_estimate, price, text_hash) == (1, 1, 2.0, None)
        assert cost == pytest.approx(tokens * 2.0 / 1e6)
    (query,) = [r for r in ledger if r[0] == "embed.query"]
    assert query[1:5] == (None, "bob", 1, 2) and query[8] == pytest.approx(4e-6)
    assert query[9] is not None  # the query's hash: repeated queries show in the report
    assert embedder.calls == 2
    # Two calls in all; each payer's group counts the call its texts were part of.
    assert call_ids == [(1, 3)]
    assert report.total.calls == 2
    assert {g.key: g.calls for g in report.groups} == {"alice": 1, "bob": 2, "-": 1}


async def test_prices_by_model_then_provider_and_none_for_unknown(backend: BackendHandle) -> None:
    prices = {"openai/text-embedding-3-small": 0.02, "openai/*": 0.13}
    async with opener(backend, prices=prices) as ab:
        assert ab.costs.price("openai", "text-embedding-3-small") == 0.02
        assert ab.costs.price("openai", "other") == 0.13
        assert ab.costs.price("bundled", "all-MiniLM-L6-v2") is None  # replaced defaults
    async with opener(backend) as ab:
        assert ab.costs.price("bundled", "all-MiniLM-L6-v2") == 0.0
        assert ab.costs.price("ollama", "nomic-embed-text") == 0.0


# -- budgets at the boundary ----------------------------------------------------------------


async def _spend_nine(ab: Abathur) -> None:
    await ab.memory.put("user:alice", "k", NINE_TOKENS)
    await ab.embeddings.drain()
    (status,) = await ab.costs.budgets()
    assert (status.spent, status.limit, status.is_exceeded) == (9, 10, False)


async def test_block_allows_the_call_below_the_limit_and_refuses_at_it(
    backend: BackendHandle,
) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, budgets=budget("block")) as ab:
        await _spend_nine(ab)
        # 9 of 10: allowed; this one-token query brings spend to exactly 10.
        found = await ab.memory.search("w1", prefix="user:alice", mode="vector")
        assert (found.mode, found.is_degraded) == ("vector", False)
        calls = embedder.calls
        async with assert_unchanged(ab):
            with pytest.raises(BudgetExceededError) as ei:
                await ab.memory.search("w2", prefix="user:alice", mode="hybrid")
        assert embedder.calls == calls, "the embedder was not called"
        error = ei.value
        assert (error.code, error.retryable, error.spent, error.limit, error.unit) == (
            "budget.exceeded",
            False,
            10,
            10,
            "tokens",
        )
        assert "user:alice/day" in error.message
        assert error.to_dict()["budget"] == "user:alice/day"
        # Keyword search and other users go on; writes succeed and their jobs wait.
        assert (await ab.memory.search("w2", prefix="user:alice", mode="keyword")).hits
        assert (await ab.memory.search("w2", prefix="user:bob", mode="vector")).mode == "vector"
        await ab.memory.put("user:alice", "k2", "more words")
        await ab.memory.put("user:bob", "k", "bob words")
        with pytest.raises(BudgetExceededError):
            await ab.embeddings.drain()
        status = await ab.embeddings.status()
        assert (status.queue_depth, status.vectors) == (1, 2)  # bob embedded, alice waits
        assert embedder.texts[-1] == "k: bob words"


async def test_degrade_falls_back_to_keyword_and_the_queue_waits(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, budgets=budget("degrade")) as ab:
        await _spend_nine(ab)
        assert (await ab.memory.search("w1", prefix="user:alice", mode="vector")).mode == ("vector")
        found = await ab.memory.search("w1", prefix="user:alice", mode="vector")
        assert (found.mode, found.requested_mode, found.is_degraded) == ("keyword", "vector", True)
        assert "budget user:alice/day is used up" in (found.degraded_reason or "")
        assert [h.key for h in found.hits] == ["k"]
        calls = embedder.calls
        await ab.memory.put("user:alice", "k2", "another fact")
        report = await ab.embeddings.drain()
        assert (report.embedded, report.waiting, report.remaining) == (0, 1, 1)
        assert embedder.calls == calls
    # A higher limit (or the next day) lets the waiting job through.
    async with opener(backend, embedder, budgets=budget("degrade", max_tokens=100)) as ab:
        report = await ab.embeddings.drain()
        assert (report.embedded, report.waiting, report.remaining) == (1, 0, 0)


@pytest.mark.sqlite_only("reads the usage_ledger and metrics tables with SQL")
async def test_warn_logs_once_counts_every_call_and_lets_calls_through(
    backend: BackendHandle,
) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, budgets=budget("warn", max_tokens=9)) as ab:
        await ab.memory.put("user:alice", "k", NINE_TOKENS)
        await ab.embeddings.drain()
        with capture_logs() as logs:
            for query in ("w1", "w2", "w3"):
                found = await ab.memory.search(query, prefix="user:alice", mode="vector")
                assert found.mode == "vector"
        warned = [e for e in logs if e["event"] == "budget.exceeded"]
        assert len(warned) == 1
        assert (warned[0]["action"], warned[0]["spent"], warned[0]["limit"]) == ("warn", 9, 9)
        await ab.analytics.flush()
        counter = await rows(
            ab, "SELECT count FROM metrics WHERE kind = 'counter' AND name = 'budget.warn'"
        )
        assert counter == [(3,)]


async def test_money_budgets_per_app_and_overall(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    budgets = [
        {"scope": "app", "max_usd": 10.0, "action": "block"},  # every app on its own
        {"scope": "all", "max_tokens": 1000, "period": "month", "action": "warn"},
    ]
    # One dollar a token makes the arithmetic visible.
    async with opener(
        backend, embedder, budgets=budgets, prices={"test/word-hash": 1_000_000.0}
    ) as ab:
        await ab.memory.put("app:helpdesk:faq", "k", NINE_TOKENS)
        await ab.embeddings.drain()
        await ab.memory.search("w1", prefix="app:helpdesk", mode="vector")  # $9 -> $10
        with pytest.raises(BudgetExceededError) as ei:
            await ab.memory.search("w2", prefix="app:helpdesk:faq", mode="vector")
        assert (ei.value.unit, ei.value.spent, ei.value.budget) == ("usd", 10.0, "app:helpdesk/day")
        assert (await ab.memory.search("w2", prefix="app:billing", mode="vector")).mode == (
            "vector"
        )
        statuses = {(s.budget, s.name): s for s in await ab.costs.budgets()}
        assert statuses["app:*/day", "helpdesk"].is_exceeded
        assert not statuses["app:*/day", "billing"].is_exceeded
        overall = statuses["all/month", None]
        # 9 + the two queries made; the refused one cost nothing.
        assert (overall.unit, overall.spent, overall.is_exceeded) == ("tokens", 11, False)


# -- the report -------------------------------------------------------------------------


async def test_report_adds_up_by_model_user_and_app(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, prices={"test/word-hash": 100.0}) as ab:
        await ab.memory.put("user:alice", "note", "the same words")
        await ab.embeddings.drain()
        await ab.memory.put("user:bob", "note", "the same words")  # vector from the cache
        await ab.memory.put("app:helpdesk:faq", "note", "carol only")
        await ab.embeddings.drain()
        by_model = await ab.costs.report(since="1h")
        by_user = await ab.costs.report(since="1h", by="user")
        by_app = await ab.costs.report(since=3600, by="app")
    total = by_model.total
    # alice: 4 words, helpdesk: 3 words; bob's text came from the cache.
    assert (total.calls, total.texts, total.tokens, total.cache_hits) == (2, 2, 7, 1)
    assert total.cost_usd == pytest.approx(7 * 100 / 1e6)
    assert total.saved_tokens == 4  # 7 tokens / 2 texts, rounded: one hit saved 3.5
    assert total.saved_usd == pytest.approx(3.5 * 100 / 1e6)
    assert total.cache_hit_rate == pytest.approx(1 / 3, abs=1e-4)
    assert [(g.key, g.texts) for g in by_model.groups] == [("test/word-hash", 2)]
    assert {g.key: (g.texts, g.cache_hits) for g in by_user.groups} == {
        "alice": (1, 0),
        "bob": (0, 1),
        "-": (1, 0),
    }
    assert {g.key: g.texts for g in by_app.groups} == {"-": 1, "helpdesk": 1}
    assert by_model.unpriced == [] and by_model.by == "model"


async def test_report_advice_comes_from_the_data(backend: BackendHandle) -> None:
    embedder = WordHashEmbedder()
    async with opener(backend, embedder, budgets=budget("warn", max_tokens=5000)) as ab:
        for i in range(210):
            await ab.memory.put("user:alice", f"k{i}", f"fact number {i}")
        await ab.memory.put("user:alice", "dup", "fact number 7")  # same value as k7
        await ab.memory.put("user:alice", "long", "word " * 300)
        await ab.embeddings.drain()
    for _ in range(2):  # the same query from two processes: embedded twice
        async with opener(backend, embedder) as ab:
            await ab.memory.search("fact", prefix="user:alice", mode="vector")
    async with opener(backend, embedder, budgets=budget("warn", max_tokens=800)) as ab:
        report = await ab.costs.report(since="1d", by="user")
    codes = {a.code: a.message for a in report.advice}
    assert (report.query_calls, report.repeated_queries) == (2, 1)
    assert "1 of 2 search queries" in codes["repeated_queries"]
    assert "1 live memories hold the same value" in codes["duplicate_memories"]
    assert codes["oversized_texts"].startswith("1 live memories have values over 1024")
    assert "of 212 texts came from the embedding cache" in codes["low_cache_hit_rate"]
    assert "test/word-hash" in codes["unpriced_models"] and report.unpriced == ["test/word-hash"]
    assert "budget user:alice/day is used up" in codes["budget_exceeded"]


async def test_report_refuses_bad_arguments(ab: Abathur) -> None:
    for kwargs, message in (
        ({"since": "7x"}, "duration '7x'"),
        ({"since": 0}, "positive duration"),
        ({"since": True}, "since must be a duration"),
        ({"by": "team"}, "by 'team' is not one of"),
    ):
        async with assert_unchanged(ab):
            with pytest.raises(InvalidInputError) as ei:
                await ab.costs.report(**kwargs)
        assert ei.value.code == "invalid_input" and message in ei.value.message


# -- memory.context ---------------------------------------------------------------------


async def test_context_packs_the_most_relevant_memories_under_the_budget(
    backend: BackendHandle,
) -> None:
    async with opener(backend) as ab:
        await ab.memory.put("user:alice:prefs", "language", "Alice speaks French at work")
        await ab.memory.put("user:alice:prefs", "essay", "French grammar notes " * 50)
        await ab.memory.put("user:alice:prefs", "drink", "green tea, French press coffee")
        await ab.memory.put("user:bob", "language", "Bob speaks French too")
        ranked = await ab.memory.search("French", prefix="user:alice", mode="keyword", k=50)
        ctx = await ab.memory.context("user:alice", "French", 30, mode="keyword")
        assert ctx.tokens <= 30 and ctx.is_estimate
        assert [m.key for m in ctx.memories] == [h.key for h in ranked.hits if h.key != "essay"]
        assert ctx.skipped == 1
        assert ctx.text.splitlines() == [f"{m.namespace}/{m.key}: {m.value}" for m in ctx.memories]
        roomy = await ab.memory.context("user:alice", "French", max_tokens=10_000)
        assert len(roomy.memories) == 3 and roomy.skipped == 0
        tiny = await ab.memory.context("user:alice", "French", max_tokens=1)
        assert (tiny.memories, tiny.text, tiny.tokens, tiny.skipped) == ([], "", 0, 3)
        report = await ab.costs.report(since="1h")
    assert (report.context_calls, report.context_memories) == (3, 5)
    assert report.context_tokens == ctx.tokens + roomy.tokens
    assert report.total.calls == 0  # serving context is not an embedder call


@pytest.mark.parametrize("max_tokens", [0, -5, 1_000_001, "100", 2.5, True])
async def test_context_refuses_a_bad_budget(ab: Abathur, max_tokens: object) -> None:
    await ab.memory.put("user:alice", "k", "v")
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.memory.context("user:alice", "v", max_tokens)  # type: ignore[arg-type]
    assert ei.value.code == "invalid_input" and "max_tokens" in ei.value.message


# -- query plans ------------------------------------------------------------------------


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite ledger queries")
@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (SQL_SPEND_ALL, (0.0,), "usage_by_time (at>?)"),
        (SQL_SPEND_APP, ("helpdesk", 0.0), "usage_by_app (app=? AND at>?)"),
        (SQL_SPEND_USER, ("alice", 0.0), "usage_by_user (user=? AND at>?)"),
        (SQL_REPORT_BY["model"], (0.0, 1.0), "usage_by_time (at>? AND at<?)"),
    ],
    ids=["spend_all", "spend_app", "spend_user", "report"],
)
async def test_ledger_queries_use_their_indexes(
    ab: Abathur, sql: str, params: tuple, index: str
) -> None:
    plan = " | ".join(str(row[-1]) for row in await rows(ab, "EXPLAIN QUERY PLAN " + sql, params))
    assert f"INDEX {index}" in plan, plan


async def test_buffered_usage_rows_survive_a_write_that_rolls_back(ab: Abathur) -> None:
    """A write that flushes the buffer, then fails, leaves the rows buffered (a
    PostgreSQL retry re-runs the write the same way), and the next flush writes
    each row once."""
    buffer = UsageBuffer()
    call = UsageRow(at=time.time(), provider="openai", model="small", operation="embed",
                    inputs=1, tokens=500, is_estimate=False, chars=2000, duration_ms=3.0)
    buffer.add(charge(call, ("helpdesk", None), price=0.02))

    def flush_then_fail(tx: Transaction) -> None:
        buffer.flush(tx)
        raise RuntimeError("the write fails after the flush")

    with pytest.raises(RuntimeError):
        await ab.db.write(flush_then_fail)
    assert [r.app for r in buffer.rows] == ["helpdesk"]
    await ab.db.write(buffer.flush)
    assert not buffer.rows
    report = await ab.costs.report(since="1h", by="app")
    assert [(g.key, g.texts) for g in report.groups] == [("helpdesk", 1)]

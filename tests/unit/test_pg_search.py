"""PgSearchIndex (issue 14): keyword ranking and vector search against SQLite's index.

Keyword: BM25 over ``memories_fts`` must rank a small corpus as FTS5 does
(same ids, same order, same scores), see words as FTS5 does (stemming, case,
accents, no stop words) and never read a query word as tsquery syntax.
Vector: top-k in exact cosine order, every filter applied before ranking,
a narrow filter still getting k results, and the bookkeeping (pending
deletes, dead rows, compaction) reading as on SQLite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from abathur.backends.postgres.search import (
    SQL_CHUNK_FTS_INSERT,
    SQL_KEYWORD_SEARCH,
    chunk_fts_params,
    index_text,
    nearest_query,
)
from abathur.backends.ranges import range_params
from abathur.errors import SchemaError
from abathur.stores.memories import MemoryVersion
from abathur.stores.search import IndexItem, MemoryText, VectorFilter
from tests.postgres import both, on_pg


def remember(
    tx: Any,
    namespace: str,
    key: str,
    text: str,
    *,
    type: str = "semantic",
    metadata: dict[str, Any] | None = None,
    expires_at: float | None = None,
) -> int:
    """A current live memory version with its keyword row, as memory.put writes them."""
    row = MemoryVersion(
        namespace,
        key,
        1,
        type,
        json.dumps(text),
        json.dumps(metadata or {}),
        "live",
        None,
        None,
        1.0,
        1.0,
        expires_at,
    )
    item_id: int = tx.memories.insert_current(row, audit_seq=1)
    tx.search.add_memory_text(MemoryText(item_id, namespace, key, text))
    return item_id


CORPUS = [
    ("user:al", "tea_pref", "green tea is my favourite drink"),
    ("user:al", "coffee", "I drink coffee every morning, never tea"),
    ("user:al", "ceremony", "tea tea tea: the tea ceremony takes hours and hours of practice"),
    ("user:al", "shoes", "running shoes for the marathon"),
    ("user:al", "daily", "he runs daily and enjoys running in the rain"),
    ("user:al", "fox", "the quick brown fox jumps over the lazy dog"),
    ("user:al", "dessert", "Crème brûlée recipe with vanilla and sugar"),
    ("user:al", "party", "e-mail the team about the tea party on friday"),
    ("user:al:work", "meeting", "Drinks after the meeting: tea or coffee?"),
    ("user:alice", "tea", "alice drinks tea too"),
    ("user:al_", "x", "tea underscore tenant"),
    ("user:al%", "x", "tea percent tenant"),
]

QUERIES: list[list[str]] = [
    ["tea"],
    ["drink", "tea"],
    ["Running"],
    ["runs"],
    ["creme"],
    ["brûlée"],
    ["e-mail"],
    ["the"],
    ["tea", "Tea"],
    ["fox", "nothing"],
    ["hours"],
    ["coffee", "morning", "rain"],
    ["absent"],
]

HOSTILE = [
    "&|!():*'\\",
    "tea&coffee",
    "tea|drink",
    "!tea",
    "(tea)",
    "tea:*",
    "'tea'",
    "\\tea",
    "<->",
    "tea<->drink",
    "tea<2>drink",
    "NEAR(tea",
    '"tea"',
    "tea''",
    "%(words)s",
    "AND",
]


async def test_keyword_ranking_matches_fts5_bm25_on_a_small_corpus(
    pg_conn: Any, tmp_path: Path
) -> None:
    def scenario(tx: Any) -> list[list[tuple[int, float]]]:
        for namespace, key, text in CORPUS:
            remember(tx, namespace, key, text)
        return [
            tx.search.memory_keyword_ranking(
                words, "user:al", now=0.0, type=None, metadata={}, limit=20
            )
            for words in QUERIES
        ]

    pg, lite = await both(pg_conn, tmp_path, scenario)
    for words, got, want in zip(QUERIES, pg, lite, strict=True):
        assert [i for i, _ in got] == [i for i, _ in want], words
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9), words
    by_query = dict(zip(map(tuple, QUERIES), pg, strict=True))
    # Stemming (runs/running), case, accents and stop words as FTS5 sees them.
    assert {i for i, _ in by_query[("Running",)]} == {4, 5}
    assert [i for i, _ in by_query[("creme",)]] == [7]
    assert len(by_query[("the",)]) >= 5  # stop words are words here, as on SQLite
    assert by_query[("absent",)] == []
    # Segment-aware prefix: user:alice, user:al_ and user:al% are not under user:al.
    assert {i for i, _ in by_query[("tea",)]} == {1, 2, 3, 8, 9}


async def test_hostile_query_words_are_words_never_syntax(pg_conn: Any, tmp_path: Path) -> None:
    def scenario(tx: Any) -> list[Any]:
        for namespace, key, text in CORPUS:
            remember(tx, namespace, key, text)
        out = []
        for word in HOSTILE:
            out.append(
                tx.search.memory_keyword_ranking(
                    [word], "user", now=0.0, type=None, metadata={}, limit=50
                )
            )
        out.append(
            tx.search.memory_keyword_ranking(
                HOSTILE, "user", now=0.0, type=None, metadata={}, limit=50
            )
        )
        out.append(tx.search.word_coverage(HOSTILE, [text for _, _, text in CORPUS]))
        return out

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert [[i for i, _ in r] for r in pg[:-1]] == [[i for i, _ in r] for r in lite[:-1]]
    assert pg[-1] == pytest.approx(lite[-1])
    assert pg[0] == []  # only separators
    assert pg[1] == []  # "tea&coffee" is the phrase "tea coffee": in no memory
    assert {i for i, _ in pg[4]} == {1, 2, 3, 8, 9, 10, 11, 12}  # "(tea)" is the word tea


def test_keyword_words_postgres_text_cannot_hold_do_not_raise(pg_conn: Any) -> None:
    def scenario(tx: Any) -> tuple[Any, ...]:
        remember(tx, "n:s", "k", "tea\x00time \ud800 cake")
        return (
            tx.search.memory_keyword_ranking(
                ["\x00tea", "cake\ud800"], "n", now=0.0, type=None, metadata={}, limit=5
            ),
            tx.search.word_coverage(["tea\x00", "\udfff"], ["tea \x00 \ud800"]),
            tx.search.chunk_keyword_ranking(
                ["\x00tea", "x\ud800"], root_id=None, path_prefix=None, limit=5
            ),
        )

    ranked, coverage, chunks = on_pg(pg_conn, scenario)
    assert [i for i, _ in ranked] == [1]
    assert coverage == [1.0]
    assert chunks == []


async def test_keyword_filters_prefix_type_metadata_expiry_and_limit(
    pg_conn: Any, tmp_path: Path
) -> None:
    def scenario(tx: Any) -> list[list[int]]:
        remember(tx, "t:a", "k1", "tea one", metadata={"n": 1})
        remember(tx, "t:a", "k2", "tea two", type="episodic", metadata={"n": 1.0})
        remember(tx, "t:a", "k3", "tea three", metadata={"n": True})
        remember(tx, "t:a", "k4", "tea four", expires_at=5.0)
        remember(tx, "t:a:b", "k5", "tea five tea")
        remember(tx, "t:ab", "k6", "tea six")
        tx.memories.retire_current("t:a", "k1")  # no longer current: never found
        search = tx.search.memory_keyword_ranking

        def ids(prefix: str, **kw: Any) -> list[int]:
            args: dict[str, Any] = {"now": 1.0, "type": None, "metadata": {}, "limit": 10} | kw
            return [i for i, _ in search(["tea"], prefix, **args)]

        return [
            ids("t:a"),
            ids("t:a", now=6.0),
            ids("t:a", type="episodic"),
            ids("t:a", metadata={"n": 1}),
            ids("t", limit=2),
            ids("t:a:b"),
        ]

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite
    assert sorted(pg[0]) == [2, 3, 4, 5]
    assert pg[3] == [2]


async def test_word_coverage_sees_words_as_fts5(pg_conn: Any, tmp_path: Path) -> None:
    words = ["Tea", "drinks", "RUNNING", "the", "crème", "e-mail"]
    texts = [text for _, _, text in CORPUS] + ["", "!!!", "THE TEAS"]

    def scenario(tx: Any) -> tuple[list[float], list[float], list[float]]:
        return (
            tx.search.word_coverage(words, texts),
            tx.search.word_coverage([], texts[:2]),
            tx.search.word_coverage(words, []),
        )

    pg, lite = await both(pg_conn, tmp_path, scenario)
    for got, want in zip(pg, lite, strict=True):
        assert got == pytest.approx(want)
    assert max(pg[0]) > 0


def test_index_text_cuts_words_as_unicode61() -> None:
    assert index_text("Crème_Brûlée's e-mail: a@b.c/d").split() == [
        "creme",
        "brulee",
        "s",
        "e",
        "mail",
        "a",
        "b",
        "c",
        "d",
    ]


async def test_rebuild_and_remove_memory_text(pg_conn: Any, tmp_path: Path) -> None:
    def scenario(tx: Any) -> tuple[Any, ...]:
        first = remember(tx, "r:s", "a", "tea leaves")
        second = remember(tx, "r:s", "b", "more tea")
        tx.search.remove_memory_text(first)
        tx.search.remove_memory_text(999)  # absent: no-op
        after_remove = tx.search.memory_keyword_ranking(
            ["tea"], "r", now=0.0, type=None, metadata={}, limit=5
        )
        built = tx.search.memory_text_built()
        count = tx.search.rebuild_memory_text(
            iter([MemoryText(first, "r:s", "a", "tea leaves"), MemoryText(second, "r:s", "b", "x")])
        )
        after_rebuild = tx.search.memory_keyword_ranking(
            ["tea"], "r", now=0.0, type=None, metadata={}, limit=5
        )
        return [i for i, _ in after_remove], built, count, [i for i, _ in after_rebuild]

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite == ([2], True, 2, [1])


# BM25's statistics and inverted index, recomputed from memories_fts itself.
_SQL_STATS_FROM_ROWS = "SELECT count(*), coalesce(sum(dl), 0) FROM memories_fts"
_SQL_TERMS_FROM_ROWS = (
    "SELECT u.lexeme, f.namespace, f.memory_id, array_length(u.positions, 1), f.dl "
    "FROM memories_fts AS f CROSS JOIN LATERAL unnest(f.tsv) AS u ORDER BY 1, 2, 3"
)
_SQL_TERMS = "SELECT lexeme, namespace, memory_id, tf, dl FROM memories_fts_terms ORDER BY 1, 2, 3"


def test_bm25_tables_follow_every_write_of_the_keyword_index(pg_conn: Any) -> None:
    """Add, remove, purge (a plain DELETE), rebuild: the triggers' tables stay exact."""

    def state(tx: Any) -> tuple[Any, Any, Any, Any]:
        conn = tx.conn
        stats = conn.execute("SELECT n_rows, total_dl FROM memories_fts_stats").fetchall()
        return (
            stats,
            conn.execute(_SQL_STATS_FROM_ROWS).fetchall(),
            conn.execute(_SQL_TERMS).fetchall(),
            conn.execute(_SQL_TERMS_FROM_ROWS).fetchall(),
        )

    def scenario(tx: Any) -> list[tuple[Any, Any, Any, Any]]:
        seen = []
        ids = [remember(tx, ns, key, text) for ns, key, text in CORPUS]
        seen.append(state(tx))
        tx.search.remove_memory_text(ids[2])
        tx.search.remove_memory_text(ids[2])  # twice: nothing more goes
        tx.conn.execute("DELETE FROM memories_fts WHERE memory_id = ANY(%s::bigint[])", (ids[5:7],))
        seen.append(state(tx))
        count = tx.search.rebuild_memory_text(
            iter([MemoryText(ids[0], "user:al", "tea_pref", "tea tea tea and more tea")])
        )
        assert count == 1
        seen.append(state(tx))
        tx.search.rebuild_memory_text(iter([]))
        seen.append(state(tx))
        return seen

    seen = on_pg(pg_conn, scenario)
    for stats, want_stats, terms, want_terms in seen:
        assert stats == want_stats
        assert terms == want_terms
    assert seen[0][0][0][0] == len(CORPUS)
    assert seen[1][0][0][0] == len(CORPUS) - 3
    # Key "tea_pref" and text "tea tea tea and more tea": tea 1 + 4 times.
    assert [(lexeme, tf) for lexeme, _, _, tf, _ in seen[2][2]] == [
        ("and", 1),
        ("more", 1),
        ("pref", 1),
        ("tea", 5),
    ]
    assert seen[3][0] == [(0, 0)] and seen[3][2] == []


def test_keyword_search_of_a_tenant_is_an_index_range(pg_conn: Any) -> None:
    """The tenant prefix narrows the inverted index's key range: no scan of any table.

    Like inspection.py's HOT_QUERIES: the plan of the SQL that ships, on a
    table big enough that a scan would be cheaper if the index could not do it.
    """
    with pg_conn.transaction():
        pg_conn.execute(
            "INSERT INTO memories (id, namespace, key, version, type, value, created_at, "
            "first_created_at) SELECT i, 't:' || lpad((i % 200)::text, 4, '0'), 'k' || i, 1, "
            "'semantic', '\"x\"', 0, 0 FROM generate_series(1, 4000) AS i"
        )
        pg_conn.execute(
            "INSERT INTO memories_fts (memory_id, namespace, dl, tsv) "
            "SELECT id, namespace, 4, to_tsvector('abathur_words', 'tea leaves ' || key) "
            "FROM memories"
        )
    pg_conn.execute("VACUUM ANALYZE memories_fts_terms")
    pg_conn.execute("ANALYZE memories")
    pg_conn.execute("ANALYZE memories_fts")
    params = {
        "words": ["tea", "leaves"],
        "now": 0.0,
        "type": None,
        "limit": 10,
        **range_params("t:0042"),
    }
    plan = "\n".join(
        row[0] for row in pg_conn.execute("EXPLAIN " + SQL_KEYWORD_SEARCH, params).fetchall()
    )
    # (The phrase branch of a word's document frequency, never run for a
    # one-token word, may plan a scan of memories_fts: it is over every tenant.)
    scans = [line for line in plan.splitlines() if "Seq Scan on memories" in line]
    assert all("Seq Scan on memories_fts " in line for line in scans), plan
    assert "memories_fts_terms_pkey" in plan, plan
    assert "namespace >= 't:0042'" in plan, plan  # the tenant is part of the index condition
    rows = pg_conn.execute(SQL_KEYWORD_SEARCH, params).fetchall()
    assert len(rows) == 10
    assert {int(i) % 200 for i, _ in rows} == {42}


def add_chunk(conn: Any, root: int, path: str, heading: str, text: str) -> int:
    doc = conn.execute(
        "INSERT INTO documents (root_id, path, content_hash, size, mtime_ns, status, synced_at) "
        "VALUES (%s, %s, 'h', 1, 1, 'indexed', 0) "
        "ON CONFLICT (root_id, path) DO UPDATE SET size = 1 RETURNING id",
        (root, path),
    ).fetchone()[0]
    chunk = int(
        conn.execute(
            "INSERT INTO chunks (document_id, ordinal, heading, text, content_hash, tokens) "
            "VALUES (%s, 0, %s, %s, 'c', 1) RETURNING id",
            (doc, heading, text),
        ).fetchone()[0]
    )
    conn.execute(SQL_CHUNK_FTS_INSERT, chunk_fts_params(chunk, heading, text))
    return chunk


def test_chunk_keyword_ranking_weights_heading_and_filters_paths(pg_conn: Any) -> None:
    def scenario(tx: Any) -> dict[str, Any]:
        roots = [
            int(
                tx.conn.execute(
                    "INSERT INTO document_roots (path, created_at) VALUES (%s, 0) RETURNING id",
                    (p,),
                ).fetchone()[0]
            )
            for p in ("/r1", "/r2")
        ]
        ids = {
            "heading": add_chunk(
                tx.conn, roots[0], "runbooks/backup.md", "Backup restore", "steps"
            ),
            "text": add_chunk(tx.conn, roots[0], "runbooks", "Steps", "how to restore a backup"),
            "sibling": add_chunk(tx.conn, roots[0], "runbooks2/x.md", "Restore", "restore"),
            "other_root": add_chunk(tx.conn, roots[1], "runbooks/y.md", "Restore", "x"),
            "pct": add_chunk(tx.conn, roots[0], "run%/z.md", "Restore", "x"),
        }
        search = tx.search.chunk_keyword_ranking
        return {
            "ids": ids,
            "under": search(["restore"], root_id=roots[0], path_prefix="runbooks", limit=10),
            "any": search(["restore", "backup"], root_id=None, path_prefix=None, limit=10),
            "pct": search(["restore"], root_id=None, path_prefix="run%", limit=10),
            "limit": search(["restore"], root_id=None, path_prefix=None, limit=2),
            "hostile": [search([w], root_id=None, path_prefix=None, limit=10) for w in HOSTILE],
            "none": search([], root_id=None, path_prefix=None, limit=10),
        }

    out = on_pg(pg_conn, scenario)
    ids = out["ids"]
    assert [i for i, _ in out["under"]] == [ids["heading"], ids["text"]]
    assert out["under"][0][1] > out["under"][1][1] > 0
    assert {i for i, _ in out["any"]} == set(ids.values())
    assert [i for i, _ in out["pct"]] == [ids["pct"]]
    assert len(out["limit"]) == 2
    assert out["hostile"][0] == [] and out["none"] == []


# -- vectors ------------------------------------------------------------------

DIMS = 16


def put_cache(tx: Any, model: str, text_hash: str, vector: np.ndarray) -> None:
    blob = np.asarray(vector, dtype="<f4").tobytes()
    mark = "%s" if tx.kind == "pg" else "?"
    tx.conn.execute(
        "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
        f"VALUES ({mark}, {mark}, {mark}, {mark}, 0)",
        (model, text_hash, len(vector), blob),
    )


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """Same ids in the same order, scores equal up to float rounding."""
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12)


def exact_order(
    vectors: dict[int, np.ndarray], query: np.ndarray, ids: set[int] | None = None
) -> list[tuple[int, float]]:
    q = query.astype(np.float64)
    scored = []
    for item_id, v in vectors.items():
        if ids is not None and item_id not in ids:
            continue
        w = v.astype(np.float64)
        scored.append((item_id, float(w @ q / (np.linalg.norm(w) * np.linalg.norm(q)))))
    return sorted(scored, key=lambda p: (-p[1], p[0]))


class VectorData:
    """Items across tenants, with their vectors, types and expiries."""

    def __init__(self, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        scopes = ["user:a"] * 30 + ["user:b"] * 12 + ["user:ab"] * 5 + ["user"] * 3 + ["userx"] * 4
        self.items: list[IndexItem] = []
        self.vectors: dict[int, np.ndarray] = {}
        for n, scope in enumerate(scopes, start=1):
            self.vectors[n] = rng.normal(size=DIMS).astype(np.float32)
            expires = 5.0 if n % 11 == 0 else math.inf
            self.items.append(IndexItem(n, f"text {n}", scope, n % 3, expires))
        self.query = rng.normal(size=DIMS).astype(np.float32)

    def load(self, tx: Any) -> None:
        tx.search.create_vector_table("memories_vec", "memory", DIMS, 8, now=1.0)
        for item in self.items:
            put_cache(tx, "m", f"h{item.id}", self.vectors[item.id])
            assert tx.search.insert_vector(
                "memories_vec", item, model="m", content_hash=f"h{item.id}"
            )


async def test_vector_search_is_exact_cosine_order_with_filters(
    pg_conn: Any, tmp_path: Path
) -> None:
    data = VectorData()
    filters = [
        VectorFilter(now=0.0),
        VectorFilter(now=10.0),
        VectorFilter(now=0.0, partition="user:a"),
        VectorFilter(now=0.0, partition_prefix="user"),
        VectorFilter(now=0.0, partition="user:ab", type_code=1),
        VectorFilter(now=0.0, allowed_ids=[3, 5, 7, 40, 41]),
        VectorFilter(now=0.0, allowed_ids=[]),
        VectorFilter(now=10.0, accept=lambda ids: {i for i in ids if i % 2 == 0}),
        VectorFilter(now=0.0, partition="nobody"),
    ]

    def scenario(tx: Any) -> list[list[tuple[int, float]]]:
        data.load(tx)
        tx.search.defer_vector_delete("memories_vec", 2)
        out = []
        for where in filters:
            # candidates covers every row: SQLite's binary first pass is then exact too.
            out.append(
                tx.search.vector_search(
                    "memories_vec", data.query, n=8, candidates=100, where=where
                )
            )
        # A first pass of only n rows, through the HNSW index (the planner
        # would sort so few rows itself): still the exact top n.
        if tx.kind == "pg":
            tx.conn.execute("SET LOCAL enable_seqscan = off")
            tx.conn.execute("SET LOCAL enable_sort = off")
            query_sql, params = nearest_query(
                "memories_vec", data.query.tolist(), 8, VectorFilter(now=0.0)
            )
            plan = " ".join(r[0] for r in tx.conn.execute(sql.SQL("EXPLAIN ") + query_sql, params))
            assert "memories_vec_hnsw" in plan
        out.append(
            tx.search.vector_search(
                "memories_vec", data.query, n=8, candidates=8, where=VectorFilter(now=0.0)
            )
        )
        return out

    pg, lite = await both(pg_conn, tmp_path, scenario)
    for got, want in zip(pg[:-1], lite, strict=False):
        assert_same_ranking(got, want)
    everyone = {i for i in data.vectors if i != 2}
    assert_same_ranking(pg[0], exact_order(data.vectors, data.query, everyone)[:8])
    assert pg[-1] == pg[0]
    # Segment-aware partition prefix: "user" and "user:*", never "userx".
    scopes = {item.id: item.scope for item in data.items}
    assert pg[3] and all(scopes[i] != "userx" for i, _ in pg[3])
    assert pg[6] == [] and pg[8] == []
    expired = {item.id for item in data.items if item.expires <= 10.0}
    assert pg[1] and not expired & {i for i, _ in pg[1]}


def test_narrow_filter_still_returns_k_results(pg_conn: Any) -> None:
    """A tenant (or a type) whose vectors are all far from the query, among many close ones.

    The type filter has no index of its own: with sequential scans and sorts
    off, the planner must walk the HNSW index, whose first ``ef_search`` (40)
    rows are all filtered out; only the iterative scan finds the 10 wanted
    (with ``hnsw.iterative_scan = off`` this finds none).
    """
    rng = np.random.default_rng(11)
    query = rng.normal(size=DIMS).astype(np.float32)
    near, far = 1500, 20

    def scenario(tx: Any) -> tuple[list[Any], ...]:
        tx.search.create_vector_table("memories_vec", "memory", DIMS, 8, now=1.0)
        for n in range(1, near + far + 1):
            close = n <= near
            base = query if close else -query
            vector = (base + 0.3 * rng.normal(size=DIMS)).astype(np.float32)
            put_cache(tx, "m", f"h{n}", vector)
            scope = "big:tenant" if close else "small:tenant"
            item = IndexItem(n, "t", scope, 1 if close or n % 2 else 2, math.inf)
            tx.search.insert_vector("memories_vec", item, model="m", content_hash=f"h{n}")
        tx.conn.execute("ANALYZE memories_vec")
        search = tx.search.vector_search
        small = VectorFilter(now=0.0, partition="small:tenant")
        query_sql, params = nearest_query("memories_vec", query.tolist(), 10, small)
        plan = "\n".join(row[0] for row in tx.conn.execute(sql.SQL("EXPLAIN ") + query_sql, params))
        tx.conn.execute("SET LOCAL enable_seqscan = off")
        tx.conn.execute("SET LOCAL enable_sort = off")
        by_type = VectorFilter(now=0.0, type_code=2)
        query_sql, params = nearest_query("memories_vec", query.tolist(), 10, by_type)
        type_plan = "\n".join(
            row[0] for row in tx.conn.execute(sql.SQL("EXPLAIN ") + query_sql, params)
        )
        return (
            search("memories_vec", query, n=10, candidates=10, where=small),
            search("memories_vec", query, n=10, candidates=10, where=by_type),
            search(
                "memories_vec",
                query,
                n=10,
                candidates=10,
                where=VectorFilter(now=0.0, accept=lambda ids: {i for i in ids if i > near + 10}),
            ),
            [plan, type_plan],
        )

    by_partition, by_type, by_accept, (plan, type_plan) = on_pg(pg_conn, scenario)
    assert "memories_vec_hnsw" in type_plan, type_plan
    assert len(by_partition) == 10 and all(i > near for i, _ in by_partition)
    assert len(by_type) == 10 and all(i > near and i % 2 == 0 for i, _ in by_type)
    assert sorted(i for i, _ in by_accept) == list(range(near + 11, near + far + 1))
    # The tenant filter is an index range, not a filter over every row.
    assert "memories_vec_by_scope" in plan, plan


async def test_vector_bookkeeping_reads_as_sqlite(pg_conn: Any, tmp_path: Path) -> None:
    data = VectorData(seed=5)

    def scenario(tx: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "before": (
                tx.search.vector_dims("memories_vec"),
                tx.search.vector_index_state("memories_vec"),
            )
        }
        data.load(tx)
        tx.search.create_vector_table("memories_vec", "memory", DIMS, 8, now=2.0)  # exists
        out["state"] = (
            tx.search.vector_dims("memories_vec"),
            tx.search.vector_index_state("memories_vec"),
        )
        out["no_cache"] = tx.search.insert_vector(
            "memories_vec",
            IndexItem(999, "t", "user:a", 1, math.inf),
            model="m",
            content_hash="nope",
        )
        out["deleted"] = (
            tx.search.delete_vector("memories_vec", 1),
            tx.search.delete_vector("memories_vec", 1),
        )
        for item_id in (3, 4, 5):
            tx.search.defer_vector_delete("memories_vec", item_id)
        out["stats_pending"] = tx.search.vector_table_stats()
        # Re-inserting a pending id settles its old vector first.
        tx.search.insert_vector("memories_vec", data.items[3], model="m", content_hash="h4")
        out["stats_reinsert"] = tx.search.vector_table_stats()
        out["applied"] = tx.search.apply_vector_deletes()
        out["stats_applied"] = tx.search.vector_table_stats()
        out["compacted"] = tx.search.compact_vector_table("memories_vec", "memory", 8)
        out["stats_compacted"] = tx.search.vector_table_stats()
        out["similar"] = tx.search.cached_similarity("m", data.query, ["h1", "h2", "zz", "h2"])
        out["similar_other_model"] = tx.search.cached_similarity("other", data.query, ["h1"])
        out["search"] = tx.search.vector_search(
            "memories_vec", data.query, n=5, candidates=100, where=VectorFilter(now=0.0)
        )
        tx.search.forget_cached_vectors()
        tx.search.drop_vector_tables()
        out["dropped"] = (
            tx.search.vector_dims("memories_vec"),
            tx.search.vector_index_state("memories_vec"),
            tx.search.vector_table_stats(),
        )
        return out

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg.keys() == lite.keys()
    for key in pg:
        if key == "similar":
            assert pg[key] == pytest.approx(lite[key], rel=1e-12), key
        elif key == "search":
            assert_same_ranking(pg[key], lite[key])
        else:
            assert pg[key] == lite[key], key
    assert pg["stats_pending"][0].pending_deletes == 3
    assert pg["stats_compacted"][0].dead_rows == 0


def test_vector_table_names_never_reach_sql_unchecked(pg_conn: Any) -> None:
    def scenario(tx: Any) -> None:
        with pytest.raises(SchemaError):
            tx.search.create_vector_table('x"; DROP TABLE memories; --', "memory", 8, 8, now=0.0)
        tx.conn.execute(
            "INSERT INTO vector_tables (name, kind, dims, chunk_size, generation, created_at) "
            "VALUES ('evil\"', 'evil', 8, 8, 1, 0)"
        )
        tx.conn.execute("INSERT INTO vector_deletes (vec_table, item_id) VALUES ('evil\"', 1)")
        assert tx.search.apply_vector_deletes() == 1
        with pytest.raises(SchemaError):
            tx.search.drop_vector_tables()

    on_pg(pg_conn, scenario)


def test_vector_tables_have_a_scope_btree_and_an_hnsw_index(pg_conn: Any) -> None:
    def scenario(tx: Any) -> list[str]:
        tx.search.create_vector_table("chunks_vec", "chunk", 3072, 8, now=0.0)
        rows = tx.conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks_vec' ORDER BY indexname"
        ).fetchall()
        return [r[0] for r in rows]

    defs = on_pg(pg_conn, scenario)
    assert any("hnsw (embedding halfvec_cosine_ops)" in d for d in defs)
    assert any("(scope)" in d for d in defs)


def test_a_huge_text_of_distinct_words_still_gets_its_keyword_row(pg_conn: Any) -> None:
    """A 1 MiB value of UUIDs: more distinct tokens than a tsvector (1 MB) can hold."""
    import random
    import uuid

    rng = random.Random(5)
    text = " ".join(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(28_000))
    assert len(text) > 1_000_000

    def scenario(tx: Any) -> list[int]:
        item_id = remember(tx, "big:one", "uuids", text)
        first = text.split("-")[0]
        ranked = tx.search.memory_keyword_ranking(
            [first], "big", now=0.0, type=None, metadata={}, limit=5
        )
        return [item_id] + [i for i, _ in ranked]

    assert on_pg(pg_conn, scenario) == [1, 1]


def test_drop_empty_partition_forgets_its_dead_rows_once_empty(pg_conn: Any) -> None:
    data = VectorData(seed=9)

    def scenario(tx: Any) -> list[tuple[int, int]]:
        data.load(tx)
        ab = [item.id for item in data.items if item.scope == "user:ab"]
        for item_id in ab[:-1]:
            tx.search.delete_vector("memories_vec", item_id)
        dead = len(ab) - 1
        out = [
            (
                tx.search.drop_empty_partition("memories_vec", "user:ab", dead=dead),
                tx.search.vector_table_stats()[0].dead_rows,
            )
        ]
        tx.search.delete_vector("memories_vec", ab[-1])
        out.append(
            (
                tx.search.drop_empty_partition("memories_vec", "user:ab", dead=dead + 1),
                tx.search.vector_table_stats()[0].dead_rows,
            )
        )
        out.append((tx.search.drop_empty_partition("chunks_vec", "user:ab", dead=3), -1))
        return out

    assert on_pg(pg_conn, scenario) == [(0, 4), (0, 0), (0, -1)]

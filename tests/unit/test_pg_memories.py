"""PgMemoryStore (issue 14) against SQLite's MemoryStore: the same calls, the same answers.

Each test runs one scenario of store calls on a fresh PostgreSQL database
(``pg_conn``, inside one transaction) and on a fresh SQLite file, and
compares what they return: prefixes (segment-aware, ``_`` and ``%``
literal), metadata filters (JSON types), ordering, limits, paging, purge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from abathur.backends.postgres import memories as pg_memories
from abathur.stores.memories import MemoryRow, MemoryVersion
from abathur.stores.search import IndexItem, MemoryText
from tests.postgres import both, on_pg


def version(
    namespace: str,
    key: str,
    value: Any = "v",
    *,
    n: int = 1,
    type: str = "semantic",
    metadata: dict[str, Any] | None = None,
    status: str = "live",
    expires_at: float | None = None,
    superseded_by: tuple[str, str] | None = None,
) -> MemoryVersion:
    return MemoryVersion(
        namespace,
        key,
        n,
        type,
        json.dumps(value),
        json.dumps(metadata or {}),
        status,
        None if superseded_by is None else superseded_by[0],
        None if superseded_by is None else superseded_by[1],
        1.0,
        2.0,
        expires_at,
    )


# Namespaces that a LIKE-based or non-segment-aware prefix would confuse.
NAMESPACES = [
    "user:al",
    "user:al:prefs",
    "user:al:prefs:deep",
    "user:alice",
    "user:al_",
    "user:al%",
    "user:alx",
    "user:a_",
    "user:ab",
    "user:a%",
    "user:a%:x",
    "user:aZ",
    "user:al;",
    "user:al!",
    "usera",
]


def put_all(tx: Any, rows: list[MemoryVersion]) -> list[int]:
    ids = []
    for i, row in enumerate(rows):
        tx.memories.retire_current(row.namespace, row.key)
        ids.append(tx.memories.insert_current(row, audit_seq=100 + i))
    return ids


async def test_prefixes_are_segment_aware_with_underscore_and_percent_literal(
    pg_conn: Any, tmp_path: Path
) -> None:
    def scenario(tx: Any) -> dict[str, Any]:
        put_all(tx, [version(ns, "k") for ns in NAMESPACES])
        out: dict[str, Any] = {}
        for prefix in ["user:al", "user:a_", "user:a%", "user:al_", "user", "user:a", "us"]:
            out[prefix] = (
                [r.namespace for r in tx.memories.list_current(prefix, now=10.0)],
                tx.memories.namespaces(prefix, now=10.0, limit=None),
                tx.memories.namespace_counts(prefix, now=10.0, limit=100),
                sorted(tx.memories.ids_under(prefix, now=10.0)),
                [r.namespace for r in tx.memories.versions_under(prefix)],
            )
        out["all"] = tx.memories.namespaces(None, now=10.0, limit=3)
        out["counts"] = tx.memories.namespace_counts(None, now=10.0, limit=100)
        return out

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite
    # The cases a LIKE prefix or a plain startswith would get wrong.
    assert pg["user:a_"][1] == ["user:a_"]
    assert pg["user:a%"][1] == ["user:a%", "user:a%:x"]
    assert pg["user:al"][1] == ["user:al", "user:al:prefs", "user:al:prefs:deep"]
    assert pg["us"][1] == []
    # Bytes order (COLLATE "C"), as SQLite: upper case before lower case.
    assert pg["user"][1].index("user:aZ") < pg["user"][1].index("user:a_")


async def test_metadata_filters_compare_json_types_as_sqlite(pg_conn: Any, tmp_path: Path) -> None:
    metas: list[dict[str, Any]] = [
        {"n": 1},
        {"n": 1.0},
        {"n": True},
        {"n": "1"},
        {"n": None},
        {},
        {"a.b": "x", "$": 2},
        {"n": 2, "s": "x y"},
        {"n": [1]},
        {"n": {"m": 1}},
        {"s": "O'Brien %_"},
        {"n": 1, "z": "nul \x00 inside"},
    ]
    filters: list[dict[str, Any]] = [
        {"n": 1},
        {"n": 1.0},
        {"n": True},
        {"n": False},
        {"n": "1"},
        {"n": None},
        {"a.b": "x"},
        {"$": 2},
        {"n": 2, "s": "x y"},
        {"n": 2, "s": "x"},
        {"s": "O'Brien %_"},
        {"missing": None},
        {"z": "nul \x00 inside"},
    ]

    def scenario(tx: Any) -> list[Any]:
        ids = put_all(tx, [version("t:a", f"k{i}", metadata=m) for i, m in enumerate(metas)])
        out = []
        for f in filters:
            out.append(
                (
                    [r.key for r in tx.memories.list_current("t", now=0.0, metadata=f)],
                    sorted(tx.memories.ids_matching(ids, f)),
                )
            )
        return out

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite
    assert pg[0][0] == ["k0", "k1", "k11"]  # 1 finds 1 and 1.0, never true or "1"
    assert pg[5][0] == ["k4"]  # None finds JSON null, not a missing key
    assert pg[-1][0] == ["k11"]  # a NUL (which jsonb refuses) in a document and a filter


async def test_versions_listing_limits_and_statuses_match_sqlite(
    pg_conn: Any, tmp_path: Path
) -> None:
    def scenario(tx: Any) -> dict[str, Any]:
        put_all(
            tx,
            [
                version("u:a", "k", "one"),
                version("u:a", "k", "two", n=2),
                version("u:a", "gone", n=1, status="deleted"),
                version("u:a", "old", expires_at=5.0),
                version("u:a", "ep", type="episodic"),
                version("u:b", "z", superseded_by=("u:a", "k"), status="superseded"),
            ],
        )
        current = tx.memories.current("u:a", "k")
        return {
            "current": current,
            "history": tx.memories.history("u:a", "k"),
            "version": tx.memories.version("u:a", "k", 1),
            "none": (tx.memories.version("u:a", "k", 9), tx.memories.current("u:a", "nope")),
            "live": tx.memories.list_current("u", now=10.0),
            "limit": tx.memories.list_current("u", now=10.0, limit=1, offset=1),
            "deleted": tx.memories.list_current("u", now=1.0, include_deleted=True),
            "episodic": tx.memories.list_current("u", now=1.0, type="episodic"),
            "by_id": sorted(tx.memories.rows_by_id([current.id, 999, 1])),
            "ids_episodic": tx.memories.ids_under("u", now=1.0, type="episodic"),
            "current_live": list(tx.memories.current_live(now=10.0)),
            "current_live_all": list(tx.memories.current_live()),
            "current_live_ids": list(tx.memories.current_live(ids=[1, 2, 3])),
            "pointing": tx.memories.pointing_into("u:a"),
            "seqs": tx.memories.audit_seqs_in_use([100, 101, 102, 7]),
            "empty": (tx.memories.rows_by_id([]), tx.memories.ids_matching([], {"a": 1})),
        }

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite
    assert isinstance(pg["current"], MemoryRow) and pg["current"].version == 2
    assert [r.key for r in pg["live"]] == ["ep", "k"]
    assert [r.key for r in pg["deleted"]] == ["ep", "gone", "k", "old", "z"]


async def test_current_live_pages_by_id(
    pg_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_memories, "PAGE", 2)

    def scenario(tx: Any) -> list[int]:
        put_all(tx, [version("p:q", f"k{i}") for i in range(7)])
        tx.memories.retire_current("p:q", "k3")
        stream = tx.memories.current_live()
        first = next(stream)
        # Abandoning the stream half-way leaves nothing open in the transaction.
        stream.close()
        return [first.id] + [r.id for r in tx.memories.current_live()]

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite == [1, 1, 2, 3, 5, 6, 7]


def put_cache(tx: Any, model: str, text_hash: str, vector: np.ndarray) -> None:
    blob = np.asarray(vector, dtype="<f4").tobytes()
    if tx.kind == "pg":
        tx.conn.execute(
            "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
            "VALUES (%s, %s, %s, %s, 0)",
            (model, text_hash, len(vector), blob),
        )
    else:
        tx.conn.execute(
            "INSERT INTO embedding_cache (model, content_hash, dims, vector, created_at) "
            "VALUES (?, ?, ?, ?, 0)",
            (model, text_hash, len(vector), blob),
        )


def count(tx: Any, table: str) -> int:
    # Our own constant table names.
    return int(tx.conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


async def test_purge_counts_and_erase_match_sqlite(pg_conn: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = {f"h{i}": rng.normal(size=16).astype(np.float32) for i in range(5)}

    def scenario(tx: Any) -> dict[str, Any]:
        ids = put_all(
            tx,
            [
                version("user:al", "a", "alpha words"),
                version("user:al:x", "b", "beta words"),
                version("user:alice", "c", "gamma words"),
                version("user:al", "a", "alpha again", n=2),
                version("other:o", "d", superseded_by=("user:al", "a"), status="superseded"),
            ],
        )
        texts = {ids[0]: "h0", ids[1]: "h1", ids[2]: "h2", ids[3]: "h3"}
        for item_id in ids[:4]:
            tx.search.add_memory_text(MemoryText(item_id, "n", "k", f"words {item_id}"))
        for text_hash, vector in vectors.items():
            put_cache(tx, "m", text_hash, vector)
        tx.search.create_vector_table("memories_vec", "memory", 16, 8, now=1.0)
        for item_id, text_hash in texts.items():
            item = IndexItem(item_id, "x", "user:al", 1, math.inf)
            assert tx.search.insert_vector("memories_vec", item, model="m", content_hash=text_hash)
        # h4 is cached but used by no vector; h2 is used by user:alice's vector.
        tx.conn.execute(
            "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, not_before) "
            "VALUES ('memory', 2, 'h1', 0, 0)"
        )
        tx.search.defer_vector_delete("memories_vec", ids[0])
        rows = tx.memories.versions_under("user:al")
        purged = [r.id for r in rows]
        hashes = ["h0", "h1", "h3", "h4", "h2"]
        counts = tx.memories.purge_counts("user:al", purged, hashes)
        pointing = tx.memories.pointing_into("user:al")
        tx.memories.erase("user:al", purged, hashes)
        for row in pointing:
            tx.memories.unlink(row.id, audit_seq=500)
        return {
            "purged": purged,
            "counts": counts,
            "pointing": [r.id for r in pointing],
            "left": [r.namespace for r in tx.memories.versions_under(None)],
            "cache": count(tx, "embedding_cache"),
            "queue": count(tx, "embedding_queue"),
            "pending": count(tx, "vector_deletes"),
            "vectors": [(s.live_rows, s.pending_deletes) for s in tx.search.vector_table_stats()],
            "unlinked": tx.memories.current("other:o", "d"),
            "seqs": tx.memories.audit_seqs_in_use(range(95, 510)),
            "all_counts": tx.memories.purge_counts(None, [], []),
        }

    pg, lite = await both(pg_conn, tmp_path, scenario)
    assert pg == lite
    assert pg["counts"].keyword_rows == 3 and pg["counts"].vectors == 3
    assert pg["counts"].embedding_jobs == 1
    assert pg["left"] == ["other:o", "user:alice"]
    assert pg["unlinked"].superseded_by_namespace is None


async def test_purge_everything_reaches_the_top_of_the_range(pg_conn: Any) -> None:
    def scenario(tx: Any) -> tuple[list[str], list[str]]:
        put_all(tx, [version(ns, "k") for ns in ["a", "\U0010ffff", "z:\uffff"]])
        under = [r.namespace for r in tx.memories.versions_under(None)]
        tx.memories.erase(None, [r.id for r in tx.memories.versions_under(None)], [])
        return under, [r.namespace for r in tx.memories.versions_under(None)]

    under, left = on_pg(pg_conn, scenario)
    assert sorted(under) == ["a", "z:\uffff", "\U0010ffff"]
    assert left == []


def test_insert_current_ids_follow_the_identity_and_awaiting_vectors(pg_conn: Any) -> None:
    def scenario(tx: Any) -> tuple[list[int], int, int]:
        ids = put_all(tx, [version("w:x", "a"), version("w:x", "b"), version("w:xy", "c")])
        for item_id in ids:
            tx.conn.execute(
                "INSERT INTO embedding_queue (kind, ref_id, content_hash, enqueued_at, "
                "not_before) VALUES ('memory', %s, 'h', 0, 0)",
                (item_id,),
            )
        tx.conn.execute("UPDATE embedding_queue SET failed_at = 1 WHERE ref_id = %s", (ids[1],))
        return ids, tx.memories.awaiting_vectors("w:x"), tx.memories.awaiting_vectors("w")

    ids, under_x, under_w = on_pg(pg_conn, scenario)
    assert ids == [1, 2, 3]
    assert (under_x, under_w) == (1, 2)

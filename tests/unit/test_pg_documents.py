"""PgDocumentStore (issue 14): the same answers as SQLite's store, on a real PostgreSQL.

One scenario runs against both stores and every answer is compared (ids,
order, NULLs); then what is PostgreSQL's own: the generated keyword column,
keyset paging of the live chunks, and prefix ranges with LIKE's wildcards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.documents import PgDocumentStore
from abathur.backends.sqlite import Database
from abathur.config import Settings
from abathur.stores import DocumentStore
from abathur.stores.documents import DocumentFile

# Paths chosen around the prefix range's edges: '/' (0x2f) and '0' (0x30),
# LIKE's wildcards, a sibling sharing the prefix's bytes, case, non-ASCII.
PATHS = [
    "ops",
    "ops/restore.md",
    "ops/deep/backup.md",
    "ops-old.md",
    "ops0.md",
    "ops.md",
    "opsx/a.md",
    "Ops/upper.md",
    "o_s/under.md",
    "o%s/percent.md",
    "ops/é/accent.md",
    "ops/🦀.md",
    "z.md",
]
PREFIXES = ["ops", "o_s", "o%s", "ops/deep", "ops/deep/backup.md", "Ops", "op", "ops/é", "nope"]


def scenario(store: DocumentStore) -> list[Any]:
    """Every method of the protocol, with what each returned."""
    out: list[Any] = [store.is_ready()]
    root = store.insert_root("/srv/docs", created_at=1.5)
    other = store.insert_root("/srv/other", created_at=2.5)
    out += [root, other, store.root_id("/srv/docs"), store.root_id("/srv/none")]
    store.mark_root_synced(root, at=3.25)
    chunk_ids: list[int] = []
    for n, path in enumerate(PATHS):
        failed = n % 5 == 4
        file = DocumentFile(
            content_hash="" if failed else f"h{n}",
            size=n * 10,
            mtime_ns=1_700_000_000_000_000_000 + n,  # past 2**53: bigint, not a float
            status="failed" if failed else "indexed",
            error="binary file (NUL byte at offset 0)" if failed else None,
            chunks=0 if failed else 2,
            synced_at=10.0 + n,
        )
        doc = store.insert_document(root if n % 3 else other, path, file)
        out.append(doc)
        if failed:
            continue
        for ordinal in (1, 0):  # inserted out of order: chunks_of_document sorts
            chunk_ids.append(
                store.insert_chunk(
                    doc,
                    ordinal=ordinal,
                    heading=f"{path} > part {ordinal}",
                    text=f"restore the backup, step {ordinal} of {path}",
                    content_hash=f"c{n}.{ordinal}",
                    tokens=7 + ordinal,
                )
            )
    out += [store.documents_of_root(root), store.documents_of_root(other)]
    out += [store.document_by_path(root, "ops/restore.md"), store.document_by_path(root, "x")]
    doc = store.document_by_path(root, "ops/restore.md")
    assert doc is not None
    refs = store.chunks_of_document(doc.id)
    out.append(refs)
    store.set_chunk_ordinal(refs[0].id, 5)
    store.delete_chunk(refs[1].id)
    store.update_document(
        doc.id, DocumentFile("new", 99, 98, "failed", "too large", 0, synced_at=20.5)
    )
    store.touch_document(doc.id, size=100, mtime_ns=97, synced_at=21.5)
    out += [store.chunks_of_document(doc.id), store.document_by_path(root, "ops/restore.md")]
    asked = [*chunk_ids, 10_000, refs[1].id]
    out.append(sorted(store.chunk_entries(asked)))
    out.append(sorted(store.chunk_hits(asked)))
    out += [store.chunk_entries([]), store.chunk_hits([])]
    out.append(list(store.live_chunk_entries()))
    for prefix in PREFIXES:
        out.append((prefix, store.chunk_ids_under(None, prefix)))
        out.append((prefix, store.chunk_ids_under(root, prefix)))
    out.append(store.forget_root(other))  # still has documents: kept
    for state in store.documents_of_root(other):
        found = store.document_by_path(other, state.path)
        assert found is not None
        for ref in store.chunks_of_document(found.id):
            store.delete_chunk(ref.id)
        store.delete_document(found.id)
    out += [store.forget_root(other), store.root_id("/srv/other"), store.forget_root(other)]
    return out


def pg_store(conn: psycopg.Connection[tuple[Any, ...]], url: str = "") -> PgDocumentStore:
    return PgDocumentStore(conn, PgContext(url, Settings()))


async def test_every_method_answers_as_sqlite_does(pg_conn: Any, tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    db = await Database.open(path, Settings(db=path))
    try:
        expected = await db.write(lambda tx: scenario(tx.documents))
    finally:
        await db.close()
    with pg_conn.transaction():
        got = scenario(pg_store(pg_conn))
    assert got == expected
    # The scenario's answers are not trivially empty.
    ops = dict(x for x in expected if isinstance(x, tuple) and isinstance(x[0], str))
    assert ops["ops"] and ops["o_s"] and not ops["op"] and not ops["nope"]


def test_types_of_what_comes_back(pg_conn: Any) -> None:
    # psycopg hands back what PostgreSQL types say; the rows must hold what
    # SQLite's do: ints for bigint columns, floats for double ones.
    store = pg_store(pg_conn)
    with pg_conn.transaction():
        root = store.insert_root("/r", created_at=1.0)
        doc = store.insert_document(
            root, "a.md", DocumentFile("h", 1, 2**62, "indexed", None, 1, synced_at=3.0)
        )
        (state,) = store.documents_of_root(root)
        row = store.document_by_path(root, "a.md")
    assert type(root) is int and type(doc) is int
    assert type(state.size) is int and state.mtime_ns == 2**62
    assert type(state.synced_at) is float
    assert row is not None and type(row.id) is int


def test_keyword_row_follows_the_chunk(pg_conn: Any) -> None:
    # chunks_fts (migration 050): the memory index's tokenizer, the heading
    # weighted 'A' (tf 2 per token, FTS5's bm25 weight 2.0), BM25's statistics
    # and inverted index kept by triggers; deleting the chunk takes them all.
    store = pg_store(pg_conn)
    with pg_conn.transaction():
        root = store.insert_root("/r", created_at=1.0)
        doc = store.insert_document(
            root, "a.md", DocumentFile("h", 1, 2, "indexed", None, 1, synced_at=3.0)
        )
        chunk = store.insert_chunk(
            doc,
            ordinal=0,
            heading="Backups",
            text="Restoring the backups' databases",
            content_hash="c",
            tokens=3,
        )
        row = pg_conn.execute("SELECT chunk_id, dl FROM chunks_fts").fetchall()
        assert row == [(chunk, 5)]  # backups + restoring the backups databases
        terms = dict(
            pg_conn.execute(
                "SELECT lexeme, tf FROM chunks_fts_terms WHERE chunk_id = %(id)s", {"id": chunk}
            ).fetchall()
        )
        assert terms == {"backup": 3, "restor": 1, "the": 1, "databas": 1}
        stats = pg_conn.execute("SELECT n_rows, total_dl FROM chunks_fts_stats").fetchone()
        assert stats == (1, 5)
        store.delete_chunk(chunk)
        assert pg_conn.execute("SELECT count(*) FROM chunks_fts").fetchone() == (0,)
        assert pg_conn.execute("SELECT count(*) FROM chunks_fts_terms").fetchone() == (0,)
        stats = pg_conn.execute("SELECT n_rows, total_dl FROM chunks_fts_stats").fetchone()
        assert stats == (0, 0)


def test_live_chunk_entries_pages_through_every_chunk_lazily(pg_conn: Any) -> None:
    store = pg_store(pg_conn)
    with pg_conn.transaction():
        root = store.insert_root("/r", created_at=1.0)
        doc = store.insert_document(
            root, "a.md", DocumentFile("h", 1, 2, "indexed", None, 1, synced_at=3.0)
        )
        # Imported ids can be anything a bigint holds, gaps included.
        pg_conn.execute(
            "INSERT INTO chunks (id, document_id, ordinal, heading, text, content_hash, tokens) "
            "SELECT i, %(doc)s, i, 'h', 't' || i, 'c', 1 FROM generate_series(-5, 2600) AS i "
            "WHERE i %% 7 != 3",
            {"doc": doc},
        )
        expected = [
            int(i) for (i,) in pg_conn.execute("SELECT id FROM chunks ORDER BY id").fetchall()
        ]
        entries = store.live_chunk_entries()
        first = next(iter(entries))
        assert first.id == -5 and first.root_id == root and first.text == "t-5"
        ids = [first.id, *(entry.id for entry in entries)]
    assert ids == expected and len(ids) > 2 * 1000


def test_path_prefix_range_is_bytes_not_like(pg_conn: Any) -> None:
    # '_' and '%' are LIKE wildcards; the range must take them literally, and
    # 'ops-old.md', 'ops.md', 'ops0.md' (bytes around '/') are not under 'ops'.
    store = pg_store(pg_conn)
    with pg_conn.transaction():
        root = store.insert_root("/r", created_at=1.0)
        by_path: dict[str, int] = {}
        for path in PATHS:
            doc = store.insert_document(
                root, path, DocumentFile("h", 1, 2, "indexed", None, 1, synced_at=3.0)
            )
            by_path[path] = store.insert_chunk(
                doc, ordinal=0, heading="", text=path, content_hash="c", tokens=1
            )
        under = {p: set(store.chunk_ids_under(root, p)) for p in ("ops", "o_s", "o%s")}
        other_root = set(store.chunk_ids_under(root + 1, "ops"))
    names = {v: k for k, v in by_path.items()}
    assert {names[i] for i in under["ops"]} == {
        "ops",
        "ops/restore.md",
        "ops/deep/backup.md",
        "ops/é/accent.md",
        "ops/🦀.md",
    }
    assert {names[i] for i in under["o_s"]} == {"o_s/under.md"}
    assert {names[i] for i in under["o%s"]} == {"o%s/percent.md"}
    assert other_root == set()

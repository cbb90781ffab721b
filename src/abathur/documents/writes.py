"""Writing a root's documents and chunks, inside one write transaction."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import apsw

from abathur.backends.sqlite.documents import (
    SQL_CHUNK_DELETE,
    SQL_CHUNK_INSERT,
    SQL_CHUNK_ITEMS_BY_ID,
    SQL_CHUNK_ORDINAL,
    SQL_CHUNKS_OF_DOCUMENT,
    SQL_DOCUMENT_BY_PATH,
    SQL_DOCUMENT_DELETE,
    SQL_DOCUMENT_INSERT,
    SQL_DOCUMENT_TOUCH,
    SQL_DOCUMENT_UPDATE,
    SQL_INDEX_STATE,
    SQL_LIVE_CHUNK_ITEMS,
)
from abathur.documents.chunking import Chunk, _embedded
from abathur.documents.walk import _Examined
from abathur.embeddings.queue import cancel, content_hash, enqueue
from abathur.models import SyncFailure, SyncReport
from abathur.search import IndexItem, IndexKind, defer_vector_delete, insert_vector

KIND_NAME = "chunk"
VEC_TABLE = "chunks_vec"


@dataclass
class _Tally:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[SyncFailure] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    queued: int = 0

    def add(self, other: _Tally) -> None:
        self.added += other.added
        self.changed += other.changed
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.chunks_added += other.chunks_added
        self.chunks_removed += other.chunks_removed
        self.chunks_kept += other.chunks_kept
        self.queued += other.queued

    def report(self, root: str, started: float) -> SyncReport:
        """What a sync (or a forget) of ``root`` begun at ``started`` (perf_counter) did."""
        return SyncReport(
            root=root,
            added=sorted(self.added),
            changed=sorted(self.changed),
            removed=sorted(self.removed),
            unchanged=self.unchanged,
            failed=sorted(self.failed, key=lambda f: f.path),
            chunks_added=self.chunks_added,
            chunks_removed=self.chunks_removed,
            chunks_kept=self.chunks_kept,
            embeddings_queued=self.queued,
            seconds=round(time.perf_counter() - started, 6),
        )

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "failed": len(self.failed),
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
        }


class _Indexing:
    """Keeps the embedding queue and chunks_vec in step with one write's chunks.

    As for memories (abathur.memory): whether vectors are kept at all (an
    embedder configured in this process, or one recorded in the file) is read
    inside the write, so a write from any process keeps them right.
    chunks_fts needs nothing here: triggers on chunks keep it.
    """

    def __init__(self, conn: apsw.Connection, *, configured: bool, held: bool = False) -> None:
        ((model, has_table),) = conn.execute(SQL_INDEX_STATE).fetchall()
        self.model: str | None = model
        self.has_table = bool(has_table) and model is not None
        self.vectors = configured or model is not None
        self.held = held  # a probe's write: its jobs wait for the probe's own drain

    def add(
        self,
        conn: apsw.Connection,
        tally: _Tally,
        doc_id: int,
        root_id: int,
        ordinal: int,
        chunk: Chunk,
        text_hash: str,
        now: float,
    ) -> None:
        ((chunk_id,),) = conn.execute(
            SQL_CHUNK_INSERT,
            (doc_id, ordinal, chunk.heading, chunk.text, text_hash, chunk.tokens),
        ).fetchall()
        tally.chunks_added += 1
        if not self.vectors:
            return
        item = _item(chunk_id, chunk.heading, chunk.text, root_id)
        # A text embedded before (a renamed file, an edit undone) needs no job.
        if self.has_table and insert_vector(
            conn, VEC_TABLE, item, model=self.model or "", content_hash=text_hash
        ):
            return
        enqueue(conn, KIND_NAME, chunk_id, text_hash, now, held=self.held)
        tally.queued += 1

    def remove(self, conn: apsw.Connection, tally: _Tally, chunk_id: int) -> None:
        # A chunk has a queued job or a vector, never both.
        if self.vectors and not cancel(conn, KIND_NAME, chunk_id) and self.has_table:
            defer_vector_delete(conn, VEC_TABLE, chunk_id)
        conn.execute(SQL_CHUNK_DELETE, (chunk_id,))
        tally.chunks_removed += 1


def _item(chunk_id: int, heading: str, text: str, root_id: int) -> IndexItem:
    # One vec0 partition per root: a search within a root reads only its chunks.
    return IndexItem(
        id=chunk_id,
        text=_embedded(heading, text),
        scope=str(root_id),
        type_code=0,
        expires=math.inf,
    )


def _load_items(conn: apsw.Connection, ids: Sequence[int], now: float) -> list[IndexItem]:
    if not _has_chunks_table(conn):
        return []
    rows = conn.execute(SQL_CHUNK_ITEMS_BY_ID, (json.dumps(list(ids)),)).fetchall()
    return [_item(*row) for row in rows]


def _live_items(conn: apsw.Connection) -> Iterator[IndexItem]:
    # A file not migrated yet (opened with auto_migrate=False) has no chunks.
    if not _has_chunks_table(conn):
        return
    cursor = conn.execute(SQL_LIVE_CHUNK_ITEMS)
    while rows := list(itertools.islice(cursor, 1000)):
        yield from (_item(*row) for row in rows)


def _has_chunks_table(conn: apsw.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'chunks'"
        ).fetchall()
    )


CHUNK_KIND = IndexKind(name=KIND_NAME, vec_table=VEC_TABLE, load=_load_items, live=_live_items)


def _write_document(
    conn: apsw.Connection,
    index: _Indexing,
    tally: _Tally,
    root_id: int,
    item: _Examined,
    now: float,
) -> bool:
    """Bring one file's rows in line with what was read; False if nothing needed writing."""
    rows = conn.execute(SQL_DOCUMENT_BY_PATH, (root_id, item.path)).fetchall()
    current = rows[0] if rows else None
    if item.outcome == "failed":
        tally.failed.append(SyncFailure(path=item.path, reason=item.reason))
        if current is None:
            conn.execute(
                SQL_DOCUMENT_INSERT,
                (root_id, item.path, "", item.size, item.mtime_ns, "failed", item.reason, 0, now),
            ).fetchall()
            return True
        doc_id, _, status, error, size, mtime_ns = current
        if (status, error, size, mtime_ns) == ("failed", item.reason, item.size, item.mtime_ns):
            return False
        _remove_chunks(conn, index, tally, doc_id)
        conn.execute(
            SQL_DOCUMENT_UPDATE,
            ("", item.size, item.mtime_ns, "failed", item.reason, 0, now, doc_id),
        )
        return True
    if current is not None and current[2] == "indexed" and current[1] == item.content_hash:
        # Read again with the same content (or another sync got here first).
        tally.unchanged += 1
        conn.execute(SQL_DOCUMENT_TOUCH, (item.size, item.mtime_ns, now, current[0]))
        return True
    if current is None:
        ((doc_id,),) = conn.execute(
            SQL_DOCUMENT_INSERT,
            (
                root_id,
                item.path,
                item.content_hash,
                item.size,
                item.mtime_ns,
                "indexed",
                None,
                len(item.chunks),
                now,
            ),
        ).fetchall()
        tally.added.append(item.path)
    else:
        doc_id = current[0]
        (tally.changed if current[2] == "indexed" else tally.added).append(item.path)
        conn.execute(
            SQL_DOCUMENT_UPDATE,
            (
                item.content_hash,
                item.size,
                item.mtime_ns,
                "indexed",
                None,
                len(item.chunks),
                now,
                doc_id,
            ),
        )
    # Chunks whose embedded text is unchanged stay, with their vectors; the
    # rest go, and the new ones come in.
    old: dict[str, list[int]] = {}
    order: dict[int, int] = {}
    for chunk_id, text_hash, ordinal in conn.execute(SQL_CHUNKS_OF_DOCUMENT, (doc_id,)).fetchall():
        old.setdefault(text_hash, []).append(chunk_id)
        order[chunk_id] = ordinal
    for ordinal, chunk in enumerate(item.chunks):
        text_hash = content_hash(chunk.embedded)
        kept = old.get(text_hash)
        if kept:
            chunk_id = kept.pop(0)
            if order[chunk_id] != ordinal:
                conn.execute(SQL_CHUNK_ORDINAL, (ordinal, chunk_id))
            tally.chunks_kept += 1
        else:
            index.add(conn, tally, doc_id, root_id, ordinal, chunk, text_hash, now)
    for leftovers in old.values():
        for chunk_id in leftovers:
            index.remove(conn, tally, chunk_id)
    return True


def _remove_chunks(conn: apsw.Connection, index: _Indexing, tally: _Tally, doc_id: int) -> None:
    for chunk_id, _, _ in conn.execute(SQL_CHUNKS_OF_DOCUMENT, (doc_id,)).fetchall():
        index.remove(conn, tally, chunk_id)


def _remove_document(
    conn: apsw.Connection, index: _Indexing, tally: _Tally, root_id: int, path: str
) -> bool:
    rows = conn.execute(SQL_DOCUMENT_BY_PATH, (root_id, path)).fetchall()
    if not rows:
        return False
    doc_id, _, status, *_ = rows[0]
    _remove_chunks(conn, index, tally, doc_id)
    conn.execute(SQL_DOCUMENT_DELETE, (doc_id,))
    if status == "indexed":
        tally.removed.append(path)
    return True

"""Writing a root's documents and chunks, inside one write transaction.

A write reads what is stored of each file (``tx.documents``), keeps the
chunks whose text did not change (with their vectors), and stores the new
ones; :class:`~abathur.documents.search.ChunkIndexing` keeps the embedding
queue and the vectors in step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from abathur.documents.search import ChunkIndexing
from abathur.documents.walk import Examined
from abathur.embeddings.queue import content_hash
from abathur.models import SyncFailure, SyncReport
from abathur.stores import Transaction
from abathur.stores.documents import DocumentFile

__all__ = ["Tally", "remove_document", "write_document"]


@dataclass
class Tally:
    """What the writes of one sync (or forget) did, summed over its transactions."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[SyncFailure] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    queued: int = 0

    def add(self, other: Tally) -> None:
        """Add what another transaction did."""
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
        """The counts an audit record of this write keeps."""
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "failed": len(self.failed),
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
        }


def write_document(
    tx: Transaction,
    index: ChunkIndexing,
    tally: Tally,
    root_id: int,
    item: Examined,
    now: float,
) -> bool:
    """Bring one file's rows in line with what was read; False if nothing needed writing."""
    store = tx.documents
    current = store.document_by_path(root_id, item.path)
    if item.outcome == "failed":
        tally.failed.append(SyncFailure(path=item.path, reason=item.reason))
        failed = DocumentFile("", item.size, item.mtime_ns, "failed", item.reason, 0, now)
        if current is None:
            store.insert_document(root_id, item.path, failed)
            return True
        if (current.status, current.error, current.size, current.mtime_ns) == (
            "failed",
            item.reason,
            item.size,
            item.mtime_ns,
        ):
            return False
        _remove_chunks(tx, index, tally, current.id)
        store.update_document(current.id, failed)
        return True
    if (
        current is not None
        and current.status == "indexed"
        and current.content_hash == item.content_hash
    ):
        # Read again with the same content (or another sync got here first).
        tally.unchanged += 1
        store.touch_document(current.id, size=item.size, mtime_ns=item.mtime_ns, synced_at=now)
        return True
    indexed = DocumentFile(
        item.content_hash, item.size, item.mtime_ns, "indexed", None, len(item.chunks), now
    )
    if current is None:
        doc_id = store.insert_document(root_id, item.path, indexed)
        tally.added.append(item.path)
    else:
        doc_id = current.id
        (tally.changed if current.status == "indexed" else tally.added).append(item.path)
        store.update_document(doc_id, indexed)
    # Chunks whose embedded text is unchanged stay, with their vectors; the
    # rest go, and the new ones come in.
    old: dict[str, list[int]] = {}
    order: dict[int, int] = {}
    for ref in store.chunks_of_document(doc_id):
        old.setdefault(ref.content_hash, []).append(ref.id)
        order[ref.id] = ref.ordinal
    for ordinal, chunk in enumerate(item.chunks):
        text_hash = content_hash(chunk.embedded)
        kept = old.get(text_hash)
        if kept:
            chunk_id = kept.pop(0)
            if order[chunk_id] != ordinal:
                store.set_chunk_ordinal(chunk_id, ordinal)
            tally.chunks_kept += 1
        else:
            chunk_id = store.insert_chunk(
                doc_id,
                ordinal=ordinal,
                heading=chunk.heading,
                text=chunk.text,
                content_hash=text_hash,
                tokens=chunk.tokens,
            )
            tally.chunks_added += 1
            if index.added(tx, chunk_id, root_id, chunk, text_hash, now):
                tally.queued += 1
    for leftovers in old.values():
        for chunk_id in leftovers:
            _remove_chunk(tx, index, tally, chunk_id)
    return True


def _remove_chunk(tx: Transaction, index: ChunkIndexing, tally: Tally, chunk_id: int) -> None:
    index.removing(tx, chunk_id)
    tx.documents.delete_chunk(chunk_id)
    tally.chunks_removed += 1


def _remove_chunks(tx: Transaction, index: ChunkIndexing, tally: Tally, doc_id: int) -> None:
    for ref in tx.documents.chunks_of_document(doc_id):
        _remove_chunk(tx, index, tally, ref.id)


def remove_document(
    tx: Transaction, index: ChunkIndexing, tally: Tally, root_id: int, path: str
) -> bool:
    """Remove one document, its chunks and their index entries; False if it was not stored."""
    current = tx.documents.document_by_path(root_id, path)
    if current is None:
        return False
    _remove_chunks(tx, index, tally, current.id)
    tx.documents.delete_document(current.id)
    if current.status == "indexed":
        tally.removed.append(path)
    return True

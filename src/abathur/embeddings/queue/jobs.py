"""The queue's entry points: what services call inside their own write transactions.

A service that writes an item calls :func:`enqueue` with the hash of its
text (:func:`content_hash`), and :func:`cancel` for the version it replaces,
inside its own write transaction, so the item and its job commit together.
The worker (:mod:`abathur.embeddings.queue.worker`) takes the jobs later.

Example:
    >>> from abathur.embeddings.queue.jobs import content_hash
    >>> content_hash("hi")[:12]
    '8f434346648f'
"""

from __future__ import annotations

import hashlib

from abathur.stores import Transaction
from abathur.stores.queue import RecordedEmbedder

__all__ = [
    "HELD_NOT_BEFORE",
    "MAX_EMBED_CHARS",
    "cancel",
    "content_hash",
    "enqueue",
    "recorded_embedder",
]

# Embedders read a few hundred tokens at most; sending more only costs time.
MAX_EMBED_CHARS = 8192


# A probe's jobs (Abathur.open(probe=True), abathur smoke) wait at HELD_NOT_BEFORE,
# where no worker's ready_before reaches: only a probe's drain takes them.
HELD_NOT_BEFORE = 1e18


def content_hash(text: str) -> str:
    """The cache key of a text: sha256 of its UTF-8 bytes, hex.

    Example:
        >>> from abathur.embeddings.queue.jobs import content_hash
        >>> content_hash("hi")[:12]
        '8f434346648f'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def recorded_embedder(tx: Transaction) -> RecordedEmbedder | None:
    """The (name, dims) recorded for the file; dims is 0 until first known; None if none."""
    return tx.queue.recorded_embedder()


def enqueue(
    tx: Transaction, kind: str, ref_id: int, text_hash: str, now: float, *, held: bool = False
) -> None:
    """Queue item ``ref_id`` of ``kind`` for embedding (no-op if already queued).

    ``held``: a probe's job, which only a probe's drain takes (:data:`HELD_NOT_BEFORE`).
    """
    tx.queue.enqueue(kind, ref_id, text_hash, now=now, not_before=HELD_NOT_BEFORE if held else now)


def cancel(tx: Transaction, kind: str, ref_id: int) -> bool:
    """Drop the job of an item version that is no longer live; True if there was one."""
    return tx.queue.cancel(kind, ref_id)

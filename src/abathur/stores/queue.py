"""``QueueStore``: the embedding queue, the embedding cache and the embedder's record.

The protocol every backend implements; reach it inside a transaction as
``tx.queue`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["QueueStore"]


class QueueStore(Protocol):
    """The embedding queue, the embedding cache and the embedder's record."""

"""``DocumentStore``: synced document roots, their documents and chunks.

The protocol every backend implements; reach it inside a transaction as
``tx.documents`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DocumentStore"]


class DocumentStore(Protocol):
    """Synced document roots, their documents and chunks."""

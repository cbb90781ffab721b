"""``MemoryStore``: versioned memories (every version a row) and their namespaces.

The protocol every backend implements; reach it inside a transaction as
``tx.memories`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MemoryStore"]


class MemoryStore(Protocol):
    """Versioned memories (every version a row) and their namespaces."""

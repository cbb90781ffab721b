"""``SearchIndex``: keyword and vector indexes over memories and chunks.

The protocol every backend implements; reach it inside a transaction as
``tx.search`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["SearchIndex"]


class SearchIndex(Protocol):
    """Keyword and vector indexes over memories and chunks."""

"""``ArchiveStore``: cold data moved out of the hot tables (the archive rows).

The protocol every backend implements; reach it inside a transaction as
``tx.archive`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ArchiveStore"]


class ArchiveStore(Protocol):
    """Cold data moved out of the hot tables (the archive rows)."""

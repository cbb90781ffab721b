"""``TaskStore``: tasks of a session.

The protocol every backend implements; reach it inside a transaction as
``tx.tasks`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["TaskStore"]


class TaskStore(Protocol):
    """Tasks of a session."""

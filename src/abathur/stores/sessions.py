"""``SessionStore``: sessions, their events, and app and user state.

The protocol every backend implements; reach it inside a transaction as
``tx.sessions`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["SessionStore"]


class SessionStore(Protocol):
    """Sessions, their events, and app and user state."""

"""``AuditStore``: the audit log and its hash chain's rows.

The protocol every backend implements; reach it inside a transaction as
``tx.audit`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["AuditStore"]


class AuditStore(Protocol):
    """The audit log and its hash chain's rows."""

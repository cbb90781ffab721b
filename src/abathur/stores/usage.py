"""``UsageLedger``: the usage ledger: one row per embedding or LLM call, with its cost.

The protocol every backend implements; reach it inside a transaction as
``tx.usage`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["UsageLedger"]


class UsageLedger(Protocol):
    """The usage ledger: one row per embedding or LLM call, with its cost."""

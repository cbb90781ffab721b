"""``MetricsStore``: the analytics rows: call metrics and daily counters.

The protocol every backend implements; reach it inside a transaction as
``tx.metrics`` (see :mod:`abathur.stores`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MetricsStore"]


class MetricsStore(Protocol):
    """The analytics rows: call metrics and daily counters."""

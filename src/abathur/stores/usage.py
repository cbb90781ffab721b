"""``UsageLedger``: the usage ledger: one row per embedding or LLM call, with its cost.

The protocol every backend implements; reach it inside a transaction as
``tx.usage`` (see :mod:`abathur.stores`). A row is a :class:`UsageRow`;
the budgets read :meth:`UsageLedger.spend`, the cost report the grouped
:class:`UsageGroup` lines and a few totals.

Example:
    >>> from abathur.stores.usage import UsageRow
    >>> row = UsageRow(at=0.0, provider="bundled", model="all-MiniLM-L6-v2",
    ...                operation="embed", inputs=2, tokens=9, is_estimate=False,
    ...                chars=30, duration_ms=1.5, user="alice")
    >>> row.scope, row.cost_usd
    ((None, 'alice'), 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "ContextUsage",
    "QueryRepeats",
    "Scope",
    "Spend",
    "UsageGroup",
    "UsageLedger",
    "UsageRow",
]

Scope = tuple[str | None, str | None]
"""(app, user) a usage row is charged to; ``None`` where the namespace names none."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One ledger row: one embedder call (or its share for one payer), or served context."""

    at: float
    """When the call ended, epoch seconds."""
    provider: str
    """``bundled``, ``ollama``, ``openai``, ... (``abathur`` for context rows)."""
    model: str
    """The provider's model name."""
    operation: str
    """``embed`` (the worker), ``embed.query`` (a search) or ``context``."""
    inputs: int
    """Texts sent (memories served, for a context row)."""
    tokens: int
    """Tokens counted by the provider, or estimated (``is_estimate``)."""
    is_estimate: bool
    """True when ``tokens`` is an estimate."""
    chars: int
    """Characters sent."""
    duration_ms: float
    """Time the call took."""
    cache_hits: int = 0
    """Texts served from the embedding cache instead of the embedder."""
    app: str | None = None
    """The app charged, if the namespace names one."""
    user: str | None = None
    """The user charged, if the namespace names one."""
    text_hash: str | None = None
    """sha256 of a query's text (repeated queries in the cost report)."""
    price_usd_per_mtok: float | None = None
    """The price in force, USD per million tokens; None if the model has none."""
    cost_usd: float = 0.0
    """What the call cost."""
    call_id: int | None = None
    """Ties the rows of one call split between payers together."""

    @property
    def scope(self) -> Scope:
        """(app, user) the row is charged to."""
        return (self.app, self.user)


class Spend(NamedTuple):
    """Tokens and dollars spent (context rows excluded)."""

    tokens: int
    cost_usd: float


class UsageGroup(NamedTuple):
    """One cost-report line of the ledger: a (group, provider, model, operation) total."""

    key: str
    """The app, user (``-`` for none) or ``provider/model`` grouped by."""
    provider: str
    model: str
    operation: str
    inputs: int
    tokens: int
    is_estimate: bool
    chars: int
    duration_ms: float
    cache_hits: int
    cost_usd: float
    calls: int
    """Embedder calls: whole rows, and each split call once."""


class QueryRepeats(NamedTuple):
    """Search-query embeddings in a period, and how many repeated an earlier text."""

    calls: int
    repeated: int


class ContextUsage(NamedTuple):
    """``memory.context`` calls in a period: calls, tokens and memories served."""

    calls: int
    tokens: int
    memories: int


class UsageLedger(Protocol):
    """The usage ledger: one row per embedding or LLM call, with its cost."""

    def add(self, rows: Sequence[UsageRow]) -> None:
        """Append ``rows`` to the ledger."""
        ...

    def spend(self, since: float, *, app: str | None = None, user: str | None = None) -> Spend:
        """Spend at or after ``since`` of ``app``, else of ``user``, else of everything."""
        ...

    def spenders(self, since: float, *, by: Literal["app", "user"]) -> list[str]:
        """Every app (or user) with a row at or after ``since``."""
        ...

    def groups(
        self, since: float, until: float, *, by: Literal["app", "user", "model"]
    ) -> list[UsageGroup]:
        """Totals in ``[since, until)`` per (``by`` key, provider, model, operation)."""
        ...

    def calls(self, since: float, until: float) -> int:
        """Embedder calls in ``[since, until)``, each split call once."""
        ...

    def tokens_per_text(self) -> dict[tuple[str, str], float]:
        """Average tokens per text of each (provider, model) over the whole ledger."""
        ...

    def query_repeats(self, since: float, until: float) -> QueryRepeats:
        """Query embeddings in ``[since, until)`` and how many repeated a text."""
        ...

    def context_usage(self, since: float, until: float) -> ContextUsage:
        """``memory.context`` totals in ``[since, until)``."""
        ...

    # The cost report's advice also counts a few things outside the ledger.

    def oversized_memories(self, min_chars: int) -> int:
        """Live current memories whose value is longer than ``min_chars``."""
        ...

    def duplicate_memory_values(self, now: float) -> int:
        """Live unexpired current memories whose value another one also holds."""
        ...

    def long_chunks(self, min_tokens: int) -> int | None:
        """Document chunks over ``min_tokens`` tokens; None if the file has no documents."""
        ...

"""What embedding costs: usage rows, the buffer of rows not yet written, the budget gate.

Every embedder call makes one :class:`~abathur.stores.usage.UsageRow`
(:func:`charge` fills in who pays and the price). Rows of the worker's
batches are written in the batch's own transaction; rows made outside one (a
search's query, cache hits of a write, ``memory.context``) wait in the
:class:`UsageBuffer` shared by the embedding and cost services and are
written with the next batch (or by :meth:`UsageBuffer.flush` from any write).

:class:`BudgetGate` is what the embedding pipeline asks before a call: who a
namespace charges, the price of a model and whether a budget lets the call
through. :class:`~abathur.costs.CostService` implements it; the pipeline
receives it at construction and never imports the cost service.

Example:
    >>> from abathur.embeddings.queue.usage import UsageBuffer, charge
    >>> from abathur.stores.usage import UsageRow
    >>> call = UsageRow(at=0.0, provider="openai", model="small", operation="embed",
    ...                 inputs=1, tokens=500, is_estimate=False, chars=2000, duration_ms=3.0)
    >>> row = charge(call, ("helpdesk", None), price=0.02)
    >>> buffer = UsageBuffer()
    >>> buffer.add(row)
    >>> [(r.app, r.cost_usd) for r in buffer.rows]
    [('helpdesk', 1e-05)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from abathur.stores import Transaction
from abathur.stores.usage import Scope, UsageRow

__all__ = ["BudgetGate", "UsageBuffer", "charge"]

# note_cache_hits merges into a buffered cache-only row among the last this many.
_MERGE_WINDOW = 16


class BudgetGate(Protocol):
    """Prices, attribution and budgets, as the embedding pipeline asks for them.

    Implemented by :class:`~abathur.costs.CostService`.
    """

    def attribute(self, namespace: str) -> Scope:
        """The (app, user) ``namespace``'s embeddings are charged to."""
        ...

    def price(self, provider: str, model: str) -> float | None:
        """USD per million tokens of ``provider/model``, or None when it has no price."""
        ...

    async def gate(self, scope: Scope) -> str | None:
        """None to go ahead, or why not (search degrades, jobs wait).

        Raises:
            BudgetExceededError: a ``block`` budget of ``scope`` is used up.
        """
        ...


def charge(
    usage: UsageRow,
    scope: Scope,
    price: float | None,
    *,
    text_hash: str | None = None,
    call_id: int | None = None,
) -> UsageRow:
    """``usage`` charged to ``scope`` at ``price`` (USD per million tokens).

    Example:
        >>> from abathur.stores.usage import UsageRow
        >>> call = UsageRow(at=0.0, provider="p", model="m", operation="embed", inputs=1,
        ...                 tokens=10, is_estimate=True, chars=40, duration_ms=1.0)
        >>> charge(call, (None, "bob"), None).user, charge(call, (None, None), 0.0).cost_usd
        ('bob', 0.0)
    """
    return replace(
        usage,
        app=scope[0],
        user=scope[1],
        text_hash=text_hash,
        price_usd_per_mtok=price,
        cost_usd=usage.tokens * price / 1e6 if price else 0.0,
        call_id=call_id,
    )


class UsageBuffer:
    """Usage rows made outside a write transaction, until the next write takes them.

    A probe's buffer (``Abathur.open(probe=True)``) keeps nothing: a probe's
    calls are not the application's usage.

    Example:
        >>> from abathur.embeddings.queue.usage import UsageBuffer
        >>> from abathur.stores.usage import UsageRow
        >>> hits = UsageRow(at=1.0, provider="p", model="m", operation="embed", inputs=0,
        ...                 tokens=0, is_estimate=False, chars=0, duration_ms=0.0, cache_hits=2)
        >>> buffer = UsageBuffer()
        >>> buffer.add_cache_hits(hits)
        >>> buffer.add_cache_hits(hits)
        >>> [r.cache_hits for r in buffer.rows], bool(UsageBuffer(probe=True))
        ([4], False)
    """

    def __init__(self, *, probe: bool = False) -> None:
        self.is_probe = probe
        self._rows: list[UsageRow] = []

    def __bool__(self) -> bool:
        return bool(self._rows)

    @property
    def rows(self) -> Sequence[UsageRow]:
        """The rows waiting, oldest first."""
        return tuple(self._rows)

    def add(self, row: UsageRow) -> None:
        """Keep ``row`` until the next write (a probe's is dropped)."""
        if not self.is_probe:
            self._rows.append(row)

    def add_cache_hits(self, row: UsageRow) -> None:
        """Keep a cache-only row (no text sent), or add its hits to a recent one of its payer.

        Many writes, one row: the hits go on a buffered cache-only row of the
        same provider, model and (app, user) among the last few, if any.
        """
        if self.is_probe:
            return
        rows = self._rows
        for i in range(len(rows) - 1, max(-1, len(rows) - _MERGE_WINDOW - 1), -1):
            old = rows[i]
            if (old.provider, old.model, old.operation, old.inputs) == (
                row.provider,
                row.model,
                "embed",
                0,
            ) and old.scope == row.scope:
                rows[i] = replace(old, at=row.at, cache_hits=old.cache_hits + row.cache_hits)
                return
        rows.append(row)

    def flush(self, tx: Transaction) -> None:
        """Write the waiting rows in ``tx`` (they leave the buffer; back if ``tx`` rolls back)."""
        if self._rows:
            rows, self._rows = self._rows, []
            tx.on_rollback(lambda: self._restore(rows))
            tx.usage.add(rows)

    def _restore(self, rows: list[UsageRow]) -> None:
        # Ahead of rows recorded since: the ledger stays in the order of the calls.
        self._rows[:0] = rows

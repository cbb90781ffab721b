"""CostService: what embedding costs, who pays for it, and the budgets that limit it.

**The ledger.** Every embedder call writes one ``usage_ledger`` row (the
worker's batches, a search's query; :mod:`abathur.embeddings.queue`):
provider, model, texts, tokens (or an estimate, marked ``is_estimate``),
characters, duration, texts served from ``embedding_cache`` instead, and
since migration 005 who it is charged to, the price in force and the cost.
:meth:`MemoryService.context <abathur.memory.MemoryService.context>` adds a
``context`` row for the tokens it served (never a cost).

**Prices** come from ``Settings.prices``: USD per million tokens, keyed
``"provider/model"`` or ``"provider/*"``. Local models (``bundled/*``,
``ollama/*``) cost 0 but their rows still count tokens and time. A model with
no price is counted at 0 and named in the report's ``unpriced`` list.

**Attribution** (:func:`attribute`): a row is charged to the app and user
its namespace names in its first two segments (the vector partition, which is
all the embedding worker knows of an item):

=========================== =================
namespace                   charged to
=========================== =================
``user:<u>[:...]``          user ``<u>``
``app:<a>[:...]``           app ``<a>``
``adk.<a>:<u>[:...]``       app ``<a>``, user ``<u>`` (the ADK integration's layout)
anything else               nobody (only ``scope="all"`` budgets see it)
=========================== =================

A worker batch is embedded with one call per (app, user) it holds, so each
row, and each budget check, is exact. A search's query is charged to the
prefix searched.

**Budgets** (``Settings.budgets``, :class:`~abathur.config.Budget`) limit
the tokens or dollars of one app, one user (or each of them) or of
everything, per UTC day or month. A budget is used up once spend >= its
limit; the call that crosses the limit is made, the next one is not:

* ``warn``: the call goes ahead; ``budget.exceeded`` is logged (once per
  budget and period in a process) and the ``budget.warn`` metric counts calls.
* ``block``: :class:`~abathur.errors.BudgetExceededError` before the call: a
  vector search raises it, ``ab.embeddings.drain()`` raises it after
  embedding everything else. Writes succeed; their jobs wait in the queue.
* ``degrade``: vector and hybrid search fall back to keyword
  (``is_degraded``, with the budget named in ``degraded_reason``); writes
  succeed; their jobs wait in the queue.

Jobs held back are looked at again every minute, so raising a limit (or the
next period) lets them through without anyone re-writing anything.

Example:
    >>> from abathur.costs import attribute, estimate_tokens
    >>> attribute("user:alice:preferences"), attribute("adk.helpdesk:bob")
    ((None, 'alice'), ('helpdesk', 'bob'))
    >>> estimate_tokens("twelve chars")
    3
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple, Protocol, get_args
from urllib.parse import unquote

import structlog

from abathur.config import Budget
from abathur.embeddings.queue.usage import UsageBuffer
from abathur.errors import BudgetExceededError, InvalidInputError
from abathur.models import BudgetStatus, CostAdvice, CostLine, CostReport
from abathur.stores import Backend, Transaction
from abathur.stores.usage import (
    ContextUsage,
    QueryRepeats,
    Scope,
    UsageGroup,
    UsageLedger,
    UsageRow,
)
from abathur.values import check_since

__all__ = [
    "CONTEXT_OPERATION",
    "BudgetCounter",
    "CostService",
    "Scope",
    "attribute",
    "estimate_tokens",
    "period_start",
]

log = structlog.get_logger(__name__)

ReportBy = Literal["app", "user", "model"]

CONTEXT_OPERATION = "context"
# Texts longer than this many characters per text (about 256 tokens) are cut
# by the bundled MiniLM and by most embedders: their ends are not in the vector.
OVERSIZED_CHARS = 1024
OVERSIZED_TOKENS = 256
LOW_HIT_RATE = 0.10
LOW_HIT_RATE_MIN_TEXTS = 200
BUDGET_NEAR = 0.8
_ACTION_RANK = {"warn": 0, "degrade": 1, "block": 2}


class BudgetCounter(Protocol):
    """Where the cost service counts ``budget.warn`` calls (an analytics ``CallRecorder``)."""

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        ...


# ---------------------------------------------------------------------------
# Plain functions
# ---------------------------------------------------------------------------


def attribute(namespace: str) -> Scope:
    """The (app, user) a namespace's embeddings are charged to (see the module docs).

    Example:
        >>> from abathur.costs import attribute
        >>> attribute("app:helpdesk:faq"), attribute("docs:runbooks")
        (('helpdesk', None), (None, None))
    """
    parts = namespace.split(":", 2)
    first = parts[0]
    if len(parts) < 2 or not parts[1]:
        return (None, None)
    if first == "user":
        return (None, parts[1])
    if first == "app":
        return (parts[1], None)
    if first.startswith("adk.") and len(first) > 4:
        return (unquote(first[4:]), unquote(parts[1]))
    return (None, None)


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` for a language model, estimated at four characters a token.

    Example:
        >>> from abathur.costs import estimate_tokens
        >>> estimate_tokens(""), estimate_tokens("abcde")
        (0, 2)
    """
    return math.ceil(len(text) / 4)


def period_start(period: Literal["day", "month"], now: float) -> float:
    """Start of the UTC day or month ``now`` falls in, as epoch seconds.

    Example:
        >>> from abathur.costs import period_start
        >>> period_start("day", 86400 * 3 + 5), period_start("month", 86400 * 40)
        (259200.0, 2678400.0)
    """
    if period == "day":
        return float(math.floor(now / 86400) * 86400)
    at = datetime.fromtimestamp(now, UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC).timestamp()


def _budget_applies(budget: Budget, scope: Scope) -> str | None:
    """The app or user a budget limits for this scope, '' for 'all', None if it does not."""
    if budget.scope == "all":
        return ""
    who = scope[0] if budget.scope == "app" else scope[1]
    if who is None or (budget.name is not None and budget.name != who):
        return None
    return who


class _Ledger(NamedTuple):
    """What the cost report reads from the ledger (and the tables its advice counts)."""

    groups: list[UsageGroup]
    calls: int
    per_text: dict[tuple[str, str], float]
    queries: QueryRepeats
    context: ContextUsage
    oversized: int
    duplicates: int
    long_chunks: int | None


class _Line:
    """Running totals of one report group."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.calls = self.texts = self.tokens = self.cache_hits = 0
        self.estimates = False
        self.cost = self.duration = self.saved_tokens = self.saved_usd = 0.0
        self.embed_texts = 0  # worker texts, for the hit rate

    def add(self, group: UsageGroup, saved_tokens: float, price: float | None) -> None:
        self.calls += group.calls
        self.texts += group.inputs
        self.tokens += group.tokens
        self.estimates = self.estimates or group.is_estimate
        self.duration += group.duration_ms
        self.cache_hits += group.cache_hits
        self.cost += group.cost_usd
        self.saved_tokens += saved_tokens
        self.saved_usd += saved_tokens * (price or 0.0) / 1e6
        if group.operation == "embed":
            self.embed_texts += group.inputs

    def line(self) -> CostLine:
        seen = self.embed_texts + self.cache_hits
        return CostLine(
            key=self.key,
            calls=self.calls,
            texts=self.texts,
            tokens=self.tokens,
            has_estimates=self.estimates,
            cost_usd=round(self.cost, 6),
            cache_hits=self.cache_hits,
            cache_hit_rate=round(self.cache_hits / seen, 4) if seen else None,
            saved_tokens=round(self.saved_tokens),
            saved_usd=round(self.saved_usd, 6),
            duration_ms=round(self.duration, 3),
        )


class CostService:
    """Prices, attribution, budgets and the cost report: ``ab.costs``.

    It is the embedding pipeline's
    :class:`~abathur.embeddings.queue.usage.BudgetGate`. ``usage`` is the
    buffer of usage rows not yet written, shared with the embedding service:
    budgets count them and reports write them first. ``recorder`` counts
    ``budget.warn`` calls (None: not counted).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "c.db", embed_worker=False) as ab:
        ...             await ab.memory.put("user:alice", "lang", "Alice speaks French")
        ...             await ab.embeddings.drain()
        ...             report = await ab.costs.report(since="1d", by="user")
        ...             return [(g.key, g.calls, g.texts, g.cost_usd) for g in report.groups]
        >>> asyncio.run(demo())
        [('alice', 1, 1, 0.0)]
    """

    def __init__(
        self,
        db: Backend,
        usage: UsageBuffer,
        recorder: BudgetCounter | None = None,
    ) -> None:
        self._db = db
        self._usage = usage
        self._recorder = recorder
        self._warned: set[tuple[str, str, float]] = set()

    # -- the budget gate the embedding pipeline calls (BudgetGate) -----------

    def attribute(self, namespace: str) -> Scope:
        """The (app, user) ``namespace`` is charged to: :func:`attribute`."""
        return attribute(namespace)

    def price(self, provider: str, model: str) -> float | None:
        """USD per million tokens of ``provider/model`` (``provider/*`` as fallback), or None.

        Example:
            >>> from abathur.config import Settings
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "c.db"
            ...         prices = {"openai/text-embedding-3-small": 0.02, "bundled/*": 0.0}
            ...         async with Abathur.open(path, embedder="none", prices=prices) as ab:
            ...             return (ab.costs.price("openai", "text-embedding-3-small"),
            ...                     ab.costs.price("bundled", "all-MiniLM-L6-v2"),
            ...                     ab.costs.price("openai", "text-embedding-3-large"))
            >>> asyncio.run(demo())
            (0.02, 0.0, None)
        """
        prices = self._db.settings.prices
        found = prices.get(f"{provider}/{model}")
        return prices.get(f"{provider}/*") if found is None else found

    async def gate(self, scope: Scope) -> str | None:
        """Check the budgets of ``scope`` before an embedder call.

        Args:
            scope: the (app, user) the call is charged to.

        Returns:
            ``None`` to go ahead (also under a used-up ``warn`` budget, which
            is logged and counted), or why not (a used-up ``degrade`` budget):
            search then falls back to keyword and jobs wait.

        Raises:
            BudgetExceededError: a ``block`` budget of the scope is used up.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         budgets = [{"scope": "user", "max_tokens": 0, "action": "degrade"}]
            ...         async with Abathur.open(pathlib.Path(tmp) / "c.db", embedder="none",
            ...                                 budgets=budgets) as ab:
            ...             return (await ab.costs.gate(("helpdesk", "alice")),
            ...                     await ab.costs.gate((None, None)))
            >>> why, ok = asyncio.run(demo())
            >>> why.startswith("budget user:alice/day is used up"), ok
            (True, None)
        """
        budgets = self._db.settings.budgets
        if not budgets:
            return None
        statuses = await self._db.read(
            lambda tx: self._statuses(tx.usage, budgets, scope, time.time())
        )
        worst: tuple[Budget, BudgetStatus] | None = None
        for budget, status in statuses:
            if status.is_exceeded and (
                worst is None or _ACTION_RANK[budget.action] > _ACTION_RANK[worst[0].action]
            ):
                worst = (budget, status)
        if worst is None:
            return None
        budget, status = worst
        if budget.action == "block":
            raise BudgetExceededError(
                _who(status),
                period=status.period,
                unit=status.unit,
                spent=status.spent,
                limit=status.limit,
            )
        if budget.action == "degrade":
            return (
                f"budget {_who(status)} is used up ({status.spent:g} of {status.limit:g} "
                f"{status.unit} this {status.period}): vector search degrades to keyword"
            )
        key = (budget.label, status.name or "", period_start(budget.period, time.time()))
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "budget.exceeded",
                budget=_who(status),
                action="warn",
                unit=status.unit,
                spent=status.spent,
                limit=status.limit,
                period=status.period,
            )
        if self._recorder is not None:
            self._recorder.count("budget.warn")
        return None

    def note_context(
        self, prefix: str, *, memories: int, tokens: int, chars: int, duration_ms: float
    ) -> None:
        """Record tokens served by ``memory.context`` (written with the next usage rows)."""
        app, user = attribute(prefix)
        # A probe's buffer keeps nothing: its calls are not the application's usage.
        self._usage.add(
            UsageRow(
                at=time.time(),
                provider="abathur",
                model="context",
                operation=CONTEXT_OPERATION,
                inputs=memories,
                tokens=tokens,
                is_estimate=True,
                chars=chars,
                duration_ms=round(duration_ms, 3),
                app=app,
                user=user,
                call_id=0,
            )
        )

    # -- budgets -------------------------------------------------------------

    def _spend(
        self, ledger: UsageLedger, budget: Budget, who: str, since: float
    ) -> tuple[int, float]:
        if budget.scope == "all":
            tokens, usd = ledger.spend(since)
        elif budget.scope == "app":
            tokens, usd = ledger.spend(since, app=who)
        else:
            tokens, usd = ledger.spend(since, user=who)
        # Query usage this process has not written yet counts too.
        for row in self._usage.rows:
            payer = row.app if budget.scope == "app" else row.user
            if (
                row.at >= since
                and row.operation != CONTEXT_OPERATION
                and (budget.scope == "all" or payer == who)
            ):
                tokens += row.tokens
                usd += row.cost_usd
        return int(tokens), float(usd)

    def _status(self, ledger: UsageLedger, budget: Budget, who: str, now: float) -> BudgetStatus:
        tokens, usd = self._spend(ledger, budget, who, period_start(budget.period, now))
        # Both limits may be set: the one closest to used up speaks for the budget.
        options: list[tuple[Literal["usd", "tokens"], float, float]] = []
        if budget.max_tokens is not None:
            options.append(("tokens", float(tokens), float(budget.max_tokens)))
        if budget.max_usd is not None:
            options.append(("usd", usd, budget.max_usd))
        unit, spent, limit = max(
            options, key=lambda o: (o[1] >= o[2], o[1] / o[2] if o[2] else math.inf)
        )
        return BudgetStatus(
            budget=budget.label,
            scope=budget.scope,
            name=who or None,
            period=budget.period,
            action=budget.action,
            unit=unit,
            spent=round(spent, 9),
            limit=limit,
            used_share=round(spent / limit, 4) if limit else (1.0 if spent >= limit else 0.0),
            is_exceeded=spent >= limit,
        )

    def _statuses(
        self, ledger: UsageLedger, budgets: Sequence[Budget], scope: Scope, now: float
    ) -> list[tuple[Budget, BudgetStatus]]:
        found = []
        for budget in budgets:
            who = _budget_applies(budget, scope)
            if who is not None:
                found.append((budget, self._status(ledger, budget, who, now)))
        return found

    async def budgets(self) -> list[BudgetStatus]:
        """Where every budget stands now; a budget with no name, once per app or user spending.

        Returns:
            One :class:`~abathur.models.BudgetStatus` per (budget, app or user).

        Raises:
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         budgets = [{"max_tokens": 1000, "period": "month"}]
            ...         async with Abathur.open(pathlib.Path(tmp) / "c.db", embedder="none",
            ...                                 budgets=budgets) as ab:
            ...             (status,) = await ab.costs.budgets()
            ...             return status.budget, status.spent, status.is_exceeded
            >>> asyncio.run(demo())
            ('all/month', 0.0, False)
        """
        budgets = self._db.settings.budgets
        if budgets and self._usage and not self._db.is_closed:
            await self._db.write(self._usage.flush)

        def read(tx: Transaction) -> list[BudgetStatus]:
            ledger = tx.usage
            now = time.time()
            out = []
            for budget in budgets:
                scope = budget.scope
                if scope == "all" or budget.name is not None:
                    out.append(self._status(ledger, budget, budget.name or "", now))
                    continue
                since = period_start(budget.period, now)
                names = sorted(ledger.spenders(since, by=scope))
                out += [self._status(ledger, budget, name, now) for name in names]
            return out

        return await self._db.read(read)

    # -- the report ------------------------------------------------------------

    async def report(
        self,
        *,
        since: str | float | timedelta = "7d",
        by: ReportBy = "model",
    ) -> CostReport:
        """Spend, calls, tokens, cache savings, budgets and advice since ``since``.

        Savings: each cache hit is a text not sent to the embedder; it is
        valued at the model's average tokens per text over the whole ledger,
        at the model's price.

        Args:
            since: how far back: a duration (``"7d"``, ``"24h"``, ``"30m"``,
                ``"2w"``), a number of seconds or a :class:`datetime.timedelta`.
            by: group the lines by ``"app"``, ``"user"`` or ``"model"``
                (``provider/model``); ``"-"`` is the unattributed group.

        Returns:
            A :class:`~abathur.models.CostReport`.

        Raises:
            InvalidInputError: ``since`` or ``by`` is not one of the forms above.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "c.db"
            ...         async with Abathur.open(path, embed_worker=False) as ab:
            ...             await ab.memory.put("user:alice", "note", "the same text")
            ...             await ab.embeddings.drain()
            ...             await ab.memory.put("user:bob", "note", "the same text")
            ...             await ab.embeddings.drain()  # from the cache: no call
            ...             report = await ab.costs.report(since="1h")
            ...             return report.total.texts, report.total.cache_hits, report.groups[0].key
            >>> asyncio.run(demo())
            (1, 1, 'bundled/all-MiniLM-L6-v2')
        """
        seconds = check_since(since)
        if by not in get_args(ReportBy):
            raise InvalidInputError(f"by {by!r} is not one of app, user, model")
        if self._usage and not self._db.is_closed:
            await self._db.write(self._usage.flush)
        until = time.time()
        start = until - seconds

        def read(tx: Transaction) -> _Ledger:
            ledger = tx.usage
            return _Ledger(
                groups=ledger.groups(start, until, by=by),
                calls=ledger.calls(start, until),
                per_text=ledger.tokens_per_text(),
                queries=ledger.query_repeats(start, until),
                context=ledger.context_usage(start, until),
                oversized=ledger.oversized_memories(OVERSIZED_CHARS),
                duplicates=ledger.duplicate_memory_values(until),
                long_chunks=ledger.long_chunks(OVERSIZED_TOKENS),
            )

        data = await self._db.read(read)
        budgets = await self.budgets()
        total = _Line("total")
        groups: dict[str, _Line] = {}
        unpriced: set[str] = set()
        for group in data.groups:
            if group.operation == CONTEXT_OPERATION:
                continue
            price = self.price(group.provider, group.model)
            if price is None and group.inputs:
                unpriced.add(f"{group.provider}/{group.model}")
            saved = group.cache_hits * (data.per_text.get((group.provider, group.model)) or 0.0)
            total.add(group, saved, price)
            groups.setdefault(group.key, _Line(group.key)).add(group, saved, price)
        # A call split between payers counts once in each group, once in the total.
        total.calls = data.calls
        query_calls, repeated = data.queries
        context_calls, context_tokens, context_memories = data.context
        lines = sorted((g.line() for g in groups.values()), key=lambda g: (-g.cost_usd, -g.tokens))
        report = CostReport(
            since=start,
            until=until,
            by=by,
            total=total.line(),
            groups=lines,
            query_calls=query_calls,
            repeated_queries=repeated,
            context_calls=context_calls,
            context_tokens=context_tokens,
            context_memories=context_memories,
            budgets=budgets,
            unpriced=sorted(unpriced),
            advice=[],
        )
        return report.model_copy(update={"advice": _advise(report, data)})


def _who(status: BudgetStatus) -> str:
    return status.budget if status.name is None else status.budget.replace("*", status.name)


def _advise(report: CostReport, data: _Ledger) -> list[CostAdvice]:
    """Concrete suggestions, each computed from the ledger or the tables."""
    advice = []
    if report.repeated_queries:
        share = report.repeated_queries / report.query_calls
        advice.append(
            CostAdvice(
                code="repeated_queries",
                message=f"{report.repeated_queries} of {report.query_calls} search queries "
                f"({share:.0%}) repeated a query embedded before: each process caches 512 query "
                "vectors, so keep one long-lived Abathur per worker rather than one per request",
            )
        )
    if data.duplicates:
        advice.append(
            CostAdvice(
                code="duplicate_memories",
                message=f"{data.duplicates} live memories hold the same value as another one: "
                "they are embedded once (the cache), but they crowd search results and storage; "
                "run ab.memory.consolidate(prefix) to supersede the duplicates",
            )
        )
    if data.oversized:
        advice.append(
            CostAdvice(
                code="oversized_texts",
                message=f"{data.oversized} live memories have values over "
                f"{OVERSIZED_CHARS} characters (~{OVERSIZED_TOKENS} tokens): the bundled model "
                "reads 256 word pieces and cuts the rest, so you pay for words the vector "
                "never sees; split them into smaller memories",
            )
        )
    if data.long_chunks:
        advice.append(
            CostAdvice(
                code="oversized_chunks",
                message=f"{data.long_chunks} document chunks are over {OVERSIZED_TOKENS} tokens "
                "and are truncated when embedded: lower the chunk size of documents.sync",
            )
        )
    total = report.total
    seen = total.cache_hits + (total.texts - report.query_calls)
    if (
        total.cache_hit_rate is not None
        and seen >= LOW_HIT_RATE_MIN_TEXTS
        and total.cache_hit_rate < LOW_HIT_RATE
    ):
        advice.append(
            CostAdvice(
                code="low_cache_hit_rate",
                message=f"only {total.cache_hit_rate:.0%} of {seen} texts came from the embedding "
                "cache: a value re-written with a timestamp or counter in it is a new text every "
                "time; keep volatile fields in metadata (not embedded) so unchanged text hits "
                "the cache",
            )
        )
    if report.unpriced:
        advice.append(
            CostAdvice(
                code="unpriced_models",
                message=f"no price for {', '.join(report.unpriced)}: counted at $0; add "
                "'provider/model': USD per million tokens to Settings.prices",
            )
        )
    for status in report.budgets:
        if status.is_exceeded or status.used_share >= BUDGET_NEAR:
            state = "is used up" if status.is_exceeded else f"is at {status.used_share:.0%}"
            advice.append(
                CostAdvice(
                    code="budget_near" if not status.is_exceeded else "budget_exceeded",
                    message=f"budget {_who(status)} {state} ({status.spent:g} of {status.limit:g} "
                    f"{status.unit}; action {status.action})",
                )
            )
    return advice

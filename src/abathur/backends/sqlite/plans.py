"""Query plans: does a query that ships use the index that exists for it?

A :class:`HotQuery` names one SQL constant of the SQLite backend and a step its
``EXPLAIN QUERY PLAN`` must show. The list of them is
:data:`abathur.backends.sqlite.inspection.HOT_QUERIES`: ``abathur smoke`` checks it on a live
file and ``tests/unit/test_query_plans.py`` on a fresh one, both with
:func:`plan_problems`.

Every parameter is bound to NULL (:func:`apsw.ext.query_info`), positional or
named alike, so a query's entry does not change when its SQL moves to named
parameters, and the plan is the one the schema and the file's statistics
choose, not one example value's.

Example:
    >>> import apsw
    >>> from abathur.backends.sqlite.plans import HotQuery, plan_problems, query_plan
    >>> conn = apsw.Connection(":memory:")
    >>> _ = conn.execute("CREATE TABLE t (a, b); CREATE INDEX t_by_a ON t (a)")
    >>> query_plan(conn, "SELECT b FROM t WHERE a = :a")
    ['SEARCH t USING INDEX t_by_a (a=?)']
    >>> plan_problems(conn, [HotQuery("b of an a", "SELECT b FROM t WHERE a = ?", "t_by_a")])
    []
    >>> plan_problems(conn, [HotQuery("every b", "SELECT b FROM t WHERE b = ?", "t_by_a")])
    ['every b: SCAN t']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import apsw
import apsw.ext

__all__ = ["HotQuery", "plan_problems", "query_plan", "scans"]


@dataclass(frozen=True)
class HotQuery:
    """A query that must use an index: the SQL that ships and a step of its plan.

    Example:
        >>> from abathur.backends.sqlite.plans import HotQuery
        >>> HotQuery("session by id", "SELECT * FROM sessions WHERE id = ?", "(id=?)").uses
        '(id=?)'
    """

    #: What the query is for, as a test id and in a problem report.
    name: str
    #: The SQL text, the very constant the code runs (imported, never copied).
    sql: str
    #: Text one step of the plan must contain, e.g. ``USING INDEX events_by_time``.
    uses: str


def query_plan(conn: apsw.Connection, sql: str) -> list[str]:
    """The steps of ``sql``'s ``EXPLAIN QUERY PLAN``, depth first, every parameter NULL.

    Raises:
        apsw.Error: ``sql`` does not prepare (a missing table or column).
    """
    found = apsw.ext.query_info(conn, sql, explain_query_plan=True).query_plan
    steps: list[str] = []
    stack = list(reversed(found.sub or [])) if found is not None else []
    while stack:
        step = stack.pop()
        steps.append(step.detail)
        stack.extend(reversed(step.sub or []))
    return steps


def scans(plan: Iterable[str]) -> list[str]:
    """The steps of ``plan`` that read a whole table.

    A MATCH on an FTS5 table is reported as a SCAN of the virtual table with a
    match index (``:M``): that is an index look-up, not a table scan. Nor is a
    ``SCAN CONSTANT ROW`` (a SELECT without FROM).
    """
    return [
        step
        for step in plan
        if step.startswith("SCAN ")
        and step != "SCAN CONSTANT ROW"
        and not (" VIRTUAL TABLE INDEX " in step and ":M" in step)
    ]


def plan_problems(conn: apsw.Connection, queries: Iterable[HotQuery]) -> list[str]:
    """One line per query that does not prepare, misses its step or scans a table."""
    problems: list[str] = []
    for query in queries:
        try:
            plan = query_plan(conn, query.sql)
        except apsw.Error as exc:
            problems.append(f"{query.name}: {exc}")
            continue
        if not any(query.uses in step for step in plan) or scans(plan):
            problems.append(f"{query.name}: {' | '.join(plan)}")
    return problems

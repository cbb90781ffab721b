"""``abathur check``: a list of small, independent checks over one consistent snapshot.

Each check is a plain function ``fn(conn, quick) -> (findings, summary)`` in
:data:`CHECKS`; a check that does not apply to the file raises
:class:`CheckSkipped` with the reason, so "skipped" is never mistaken for
"passed". All checks run on one isolated read-only connection inside one read
transaction: a live application can keep writing, and every check sees the
same snapshot. Nothing here writes; :func:`rebuild_derived_indexes` (``--fix``)
is the one exception, it rebuilds indexes that are derived from tables (FTS5),
and only after a verified backup.

The checks that read SQLite itself (pragmas, JSON columns, search indexes)
and the rebuild live in :mod:`abathur.backends.sqlite.checks`; the audit chain
and the archive payloads are verified by their owners, :mod:`abathur.audit` and
:mod:`abathur.archival`, on the same snapshot.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.integrity import run_checks
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none") as ab:
    ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
    >>> asyncio.run(create())
    >>> report = run_checks(path)
    >>> report.is_ok, [r.status for r in report.results][:5]
    (True, ['ok', 'ok', 'ok', 'ok', 'ok'])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from abathur.archival import verify_archive
from abathur.audit import verify as verify_audit
from abathur.backends.sqlite import checks
from abathur.backends.sqlite.checks import Rebuilder
from abathur.backends.sqlite.connection import table_exists, translate_errors
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.transaction import SqliteTransaction
from abathur.config import Settings
from abathur.errors import InvalidInputError
from abathur.ops.backup import backup_dir_for
from abathur.ops.schema import VECTOR_TABLES
from abathur.ops.tempfiles import remove_stale_temps
from abathur.stores.ops import CheckSkipped

__all__ = [
    "CHECKS",
    "FIXABLE_CHECKS",
    "Check",
    "CheckReport",
    "CheckResult",
    "CheckSkipped",
    "Rebuilder",
    "rebuild_derived_indexes",
    "run_checks",
]

log = structlog.get_logger(__name__)

CheckStatus = Literal["ok", "findings", "skipped", "error"]

@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    status: CheckStatus
    summary: str
    findings: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as ``abathur check --json`` prints it."""
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "findings": list(self.findings),
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class CheckReport:
    """Every check's result for one file."""

    path: Path
    quick: bool
    results: tuple[CheckResult, ...]
    removed_temps: tuple[Path, ...] = ()

    @property
    def is_ok(self) -> bool:
        """True when no check found a problem or failed to complete."""
        return all(r.status in ("ok", "skipped") for r in self.results)

    @property
    def finding_count(self) -> int:
        """Findings over all checks; a check that could not complete counts as one."""
        return sum(len(r.findings) or 1 for r in self.results if r.status in ("findings", "error"))

    def to_dict(self) -> dict[str, Any]:
        """The report as ``abathur check --json`` prints it."""
        return {
            "path": str(self.path.absolute()),
            "quick": self.quick,
            "is_ok": self.is_ok,
            "finding_count": self.finding_count,
            "checks": [r.to_dict() for r in self.results],
            "removed_temps": [str(p) for p in self.removed_temps],
        }


CheckFn = Callable[[checks.Connection, bool], tuple[list[str], str]]


@dataclass(frozen=True)
class Check:
    """One named check: ``run(conn, quick)`` returns ``(findings, summary)``."""

    name: str
    description: str
    run: CheckFn


# -- the checks ---------------------------------------------------------------------


def _audit_chain(conn: checks.Connection, quick: bool) -> tuple[list[str], str]:
    if not table_exists(conn, "audit_log"):
        raise CheckSkipped("skipped: no audit log in this file")
    # abathur.audit owns the chain's rules and which rows it covers; we only
    # run its verification: the records, then each covered row against the
    # record that wrote it (an edited memory, event, task or session is found).
    # This check runs on its own read-only connection: seen as a transaction.
    tx = SqliteTransaction(conn, SqliteContext(Path(conn.filename), Settings()))
    report = verify_audit(tx)
    summary = f"{report.records} record(s) verified; {report.rows_verified} row(s) match them"
    if report.rows_uncovered:
        summary += f"; {report.rows_uncovered} row(s) predate content hashing"
    return list(report.problems), summary


def _archive_payloads(conn: checks.Connection, quick: bool) -> tuple[list[str], str]:
    if not table_exists(conn, "archive"):
        raise CheckSkipped("skipped: no archive in this file")
    # abathur.archival owns the payload format and its checksums; we only run its verification.
    tx = SqliteTransaction(conn, SqliteContext(Path(conn.filename), Settings()))
    return verify_archive(tx, quick=quick)


def _schema(conn: checks.Connection, quick: bool) -> tuple[list[str], str]:
    return checks.schema_matches(conn, quick, VECTOR_TABLES)


def _vectors(conn: checks.Connection, quick: bool) -> tuple[list[str], str]:
    return checks.memory_vectors(conn, quick, VECTOR_TABLES)


def _chunk_vectors(conn: checks.Connection, quick: bool) -> tuple[list[str], str]:
    return checks.chunk_vectors(conn, quick, VECTOR_TABLES)


CHECKS: tuple[Check, ...] = (
    Check("integrity", "PRAGMA integrity_check (quick_check with --quick)", checks.integrity),
    Check(
        "foreign_keys",
        "no row points at a missing parent (foreign_key_check)",
        checks.foreign_keys,
    ),
    Check(
        "schema", "tables, columns, indexes, triggers, user_version match the migrations", _schema
    ),
    Check("audit_chain", "the audit log's hash chain and head verify", _audit_chain),
    Check("json_columns", "every JSON column holds valid JSON", checks.json_columns),
    # Derived search indexes: they are compared with the tables they derive from.
    Check("fts_index", "the FTS5 index agrees with the memories it indexes", checks.fts_index),
    Check("vectors", "every live memory has a vector or a queued job; none orphaned", _vectors),
    Check(
        "chunk_vectors",
        "every document chunk has a vector or a queued job; none orphaned",
        _chunk_vectors,
    ),
    Check(
        "archive_payloads",
        "every archive row and dictionary matches its checksum and decompresses within bounds",
        _archive_payloads,
    ),
)

# Checks whose findings rebuild_derived_indexes (``--fix``) can repair. The
# vec0 index joins them once vectors can be re-derived without the embedder.
FIXABLE_CHECKS = frozenset({"fts_index"})


def _run_one(check: Check, conn: checks.Connection, quick: bool) -> CheckResult:
    started = time.perf_counter()
    try:
        with translate_errors(f"running check {check.name}"):
            findings, summary = check.run(conn, quick)
    except CheckSkipped as skipped:
        return CheckResult(check.name, "skipped", str(skipped), (), time.perf_counter() - started)
    except Exception as exc:
        # A check that cannot complete on this file (a corrupt page, say) is a
        # finding about the file, not a reason to stop the other checks.
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return CheckResult(
            check.name, "error", "could not complete", (message,), time.perf_counter() - started
        )
    status: CheckStatus = "findings" if findings else "ok"
    return CheckResult(check.name, status, summary, tuple(findings), time.perf_counter() - started)


def run_checks(
    path: str | Path,
    *,
    quick: bool = False,
    settings: Settings | None = None,
    only: Sequence[str] | None = None,
) -> CheckReport:
    """Run :data:`CHECKS` (or the ``only`` ones) on the file at ``path``; never writes.

    Args:
        path: the database file.
        quick: ``PRAGMA quick_check`` instead of the full ``integrity_check``.
        settings: pragmas for the connection; default :class:`~abathur.config.Settings`.
        only: names of the checks to run, in :data:`CHECKS` order.

    Returns:
        A :class:`CheckReport`; ``is_ok`` is false when any check has findings
        or could not complete.

    Raises:
        InvalidInputError: ``only`` names an unknown check.
        DatabaseError: the file does not exist or cannot be opened as a database
            (the checks could not run at all).

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.integrity import run_checks
        >>> run_checks(pathlib.Path(tempfile.mkdtemp()) / "missing.db")
        Traceback (most recent call last):
        ...
        abathur.errors.DatabaseError: no database at '...missing.db'
    """
    path = Path(path)
    selected = _select(only)
    removed = _sweep_temps(path, settings)
    with checks.read_snapshot(path, settings) as conn:
        results = tuple(_run_one(check, conn, quick) for check in selected)
    report = CheckReport(path, quick, results, removed)
    log.info(
        "check.finished",
        path=str(path),
        is_ok=report.is_ok,
        findings=report.finding_count,
        statuses={r.name: r.status for r in results},
    )
    return report


def _sweep_temps(path: Path, settings: Settings | None) -> tuple[Path, ...]:
    """Remove what killed backups and restores left beside the file and in its backup directory.

    Only abathur's own temp names whose owner no longer holds their lock
    (see :mod:`abathur.ops.tempfiles`); the file itself is never touched.
    """
    removed: list[Path] = []
    for directory in dict.fromkeys((path.absolute().parent, backup_dir_for(path, settings))):
        if directory.is_dir():
            removed.extend(remove_stale_temps(directory))
    return tuple(removed)


def _select(only: Sequence[str] | None) -> tuple[Check, ...]:
    if only is None:
        return CHECKS
    known = {c.name for c in CHECKS}
    unknown = sorted(set(only) - known)
    if unknown:
        raise InvalidInputError(
            f"unknown check(s) {', '.join(map(repr, unknown))}: the checks are "
            + ", ".join(c.name for c in CHECKS)
        )
    return tuple(c for c in CHECKS if c.name in set(only))




def rebuild_derived_indexes(
    path: str | Path,
    *,
    rebuilders: Mapping[str, Rebuilder] | None = None,
    settings: Settings | None = None,
) -> dict[str, int | None]:
    """Rebuild the FTS5 indexes of ``path`` from their tables; return what was rebuilt.

    Only indexes derived from other tables are touched, all in one write
    transaction: no row of any table is changed, deleted or truncated. The
    caller (``abathur check --fix``) takes a verified backup first.

    Args:
        path: the database file.
        rebuilders: for an index only its owner can refill (a contentless FTS5
            table such as ``memories_fts``, whose text abathur.memory computes),
            the function that does it in the caller's transaction, by table
            name (e.g. ``{"memories_fts": abathur.memory.rebuild_keyword_index}``).
            Other FTS5 tables are rebuilt with FTS5's own ``'rebuild'``.
        settings: pragmas for the connection.

    Returns:
        Each rebuilt table with the rows it now indexes (``None`` when FTS5's
        ``'rebuild'`` does not say).

    Raises:
        InvalidInputError: a contentless FTS5 table has no rebuilder; nothing changed.
        DatabaseError: the file cannot be opened or written.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.memory import rebuild_keyword_index
        >>> from abathur.ops.integrity import rebuild_derived_indexes
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
        >>> async def create():
        ...     async with Abathur.open(path, embedder="none") as ab:
        ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
        >>> asyncio.run(create())
        >>> rebuild_derived_indexes(path, rebuilders={"memories_fts": rebuild_keyword_index})
        {'chunks_fts': None, 'memories_fts': 1}
    """
    path = Path(path)
    rebuilt = checks.rebuild_fts(path, settings, dict(rebuilders or {}))
    log.info("check.rebuilt", path=str(path), indexes=rebuilt)
    return rebuilt

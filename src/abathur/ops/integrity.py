"""``abathur check``: a list of small, independent checks over one consistent snapshot.

Each check is a plain function ``fn(conn, quick) -> (findings, summary)`` in
:data:`CHECKS`; a check that does not apply to the file raises
:class:`CheckSkipped` with the reason, so "skipped" is never mistaken for
"passed". All checks run on one isolated read-only connection inside one read
transaction: a live application can keep writing, and every check sees the
same snapshot. Nothing here writes; :func:`rebuild_derived_indexes` (``--fix``)
is the one exception, it rebuilds indexes that are derived from tables (FTS5),
and only after a verified backup.

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

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import apsw
import structlog

from abathur import search
from abathur.archival import verify_archive
from abathur.audit import verify as verify_audit
from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.connection import scalar_int, translate_errors
from abathur.config import Settings
from abathur.errors import InvalidInputError
from abathur.ops import schema
from abathur.ops.backup import backup_dir_for
from abathur.ops.tempfiles import remove_stale_temps

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

# At most this many examples per finding kind: a corrupt file can have millions.
_EXAMPLES = 5


class CheckSkipped(Exception):
    """Raised by a check that does not apply to this file; the message says why."""


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


CheckFn = Callable[[apsw.Connection, bool], tuple[list[str], str]]


@dataclass(frozen=True)
class Check:
    """One named check: ``run(conn, quick)`` returns ``(findings, summary)``."""

    name: str
    description: str
    run: CheckFn


# -- the checks ---------------------------------------------------------------------


def _integrity(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    pragma = "quick_check" if quick else "integrity_check"
    # integrity_check(N) stops after N problems; enough to diagnose, bounded on a wreck.
    rows = [r[0] for r in conn.execute(f"PRAGMA main.{pragma}(100)")]
    if rows == ["ok"]:
        return [], f"{pragma}: ok"
    return rows, f"{pragma}: {len(rows)} problem(s)"


def _foreign_keys(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    groups: dict[tuple[str, str], list[object]] = {}
    for table, rowid, parent, _fkid in conn.execute("PRAGMA main.foreign_key_check"):
        groups.setdefault((table, parent), []).append(rowid)
    findings = []
    for (table, parent), rowids in sorted(groups.items()):
        # WITHOUT ROWID tables (events) report no rowid: the count is what matters.
        shown = [r for r in rowids if r is not None][:_EXAMPLES]
        more = ", ..." if len(rowids) > len(shown) else ""
        where = f" (rowids {', '.join(map(str, shown))}{more})" if shown else ""
        findings.append(f"{len(rowids)} row(s) of {table} reference a missing {parent} row{where}")
    violations = sum(len(v) for v in groups.values())
    return findings, "no violations" if not findings else f"{violations} violation(s)"


def _schema(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    diff = schema.compare(conn)
    summary = f"user_version {diff.user_version} (latest {diff.latest_version})"
    if diff.runtime_objects:
        summary += f"; created at run time: {', '.join(diff.runtime_objects)}"
    if not diff.problems:
        summary = "matches the migrations, " + summary
    return diff.problems, summary


def _audit_chain(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    if not schema.table_exists(conn, "audit_log"):
        raise CheckSkipped("skipped: no audit log in this file")
    # abathur.audit owns the chain's rules and which rows it covers; we only
    # run its verification: the records, then each covered row against the
    # record that wrote it (an edited memory, event, task or session is found).
    report = verify_audit(conn)
    summary = f"{report.records} record(s) verified; {report.rows_verified} row(s) match them"
    if report.rows_uncovered:
        summary += f"; {report.rows_uncovered} row(s) predate content hashing"
    return list(report.problems), summary


# The TEXT columns that hold JSON, per table, with how a finding names the row.
# Identifiers only, all ours; nothing here comes from a caller.
JSON_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sessions": ("id", ("state",)),
    "events": ("session_id || ' #' || seq", ("content", "state_delta", "metadata")),
    "app_state": ("app || ' ' || key", ("value",)),
    "user_state": ("app || ' ' || user || ' ' || key", ("value",)),
    "memories": ("namespace || '/' || key || ' v' || version", ("value", "metadata")),
    "tasks": ("id", ("result", "metadata")),
    "audit_log": ("'seq ' || seq", ("detail",)),
}


def _json_columns(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    findings, checked = [], 0
    for table, (label, columns) in JSON_COLUMNS.items():
        if not schema.table_exists(conn, table):
            continue  # an older file; the schema check reports what is missing
        for column in columns:
            checked += 1
            # json_valid(x) is RFC 8259 text only (flags default 1): JSONB blobs fail too.
            bad = conn.execute(
                f'SELECT {label} FROM main."{table}" '
                f'WHERE "{column}" IS NOT NULL AND NOT json_valid("{column}") LIMIT ?',
                (_EXAMPLES + 1,),
            ).fetchall()
            if bad:
                total = scalar_int(
                    conn,
                    f'SELECT count(*) FROM main."{table}" '
                    f'WHERE "{column}" IS NOT NULL AND NOT json_valid("{column}")',
                )
                rows = ", ".join(repr(r[0]) for r in bad[:_EXAMPLES])
                more = ", ..." if total > _EXAMPLES else ""
                findings.append(
                    f"{table}.{column}: {total} row(s) are not valid JSON: {rows}{more}"
                )
    return findings, f"{checked} column(s) parse" if not findings else "invalid JSON found"


# -- search indexes (issue 3: memories_fts, memories_vec, embedding_queue) -----------
# These compare the derived indexes with the table they are derived from. What
# they hold is decided in abathur.memory: exactly the current live version of
# each memory (expired ones too, until swept). A file without them says so;
# it never passes silently.

_NO_SEARCH_INDEX = "skipped: no search index in this file"
_NO_EMBEDDER = "skipped: no embedder recorded in this file (it keeps no vectors)"

# Current live versions: what memories_fts holds, and what a vector may belong to.
_SQL_LIVE_IDS = "SELECT id FROM main.memories WHERE is_current = 1 AND status = 'live'"


def _examples(rows: list[tuple[object, ...]], total: int) -> str:
    shown = ", ".join(str(r[0]) for r in rows[:_EXAMPLES])
    return shown + (", ..." if total > _EXAMPLES else "")


def _set_difference(
    conn: apsw.Connection, sql: str, params: tuple[object, ...] = ()
) -> tuple[int, list[tuple[object, ...]]]:
    """(how many rows ``sql`` selects, the first few) without fetching them all."""
    total = scalar_int(conn, f"SELECT count(*) FROM ({sql})", params)
    return total, conn.execute(f"{sql} LIMIT ?", (*params, _EXAMPLES)).fetchall()


def _fts_index(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    if not schema.table_exists(conn, "memories_fts"):
        raise CheckSkipped(_NO_SEARCH_INDEX)
    findings = []
    built = conn.execute("SELECT value FROM main.meta WHERE key = 'search.memories_fts'").fetchall()
    if built != [("built",)]:
        findings.append(
            "memories_fts has not been built yet for the memories written before it existed "
            "(abathur builds it when the file is next opened; or run 'abathur check --fix')"
        )
    missing, some = _set_difference(
        conn,
        "SELECT m.id FROM main.memories AS m WHERE m.is_current = 1 AND m.status = 'live' "
        "AND m.id NOT IN (SELECT rowid FROM main.memories_fts) ORDER BY m.id",
    )
    if missing and not findings:
        findings.append(
            f"{missing} live memory version(s) are missing from memories_fts "
            f"(memories.id {_examples(some, missing)})"
        )
    extra, some = _set_difference(
        conn,
        f"SELECT rowid FROM main.memories_fts WHERE rowid NOT IN ({_SQL_LIVE_IDS}) ORDER BY rowid",
    )
    if extra:
        findings.append(
            f"{extra} memories_fts row(s) index no current live memory "
            f"(rowid {_examples(some, extra)})"
        )
    indexed = conn.execute("SELECT count(*) FROM main.memories_fts").fetchall()[0][0]
    # Token-level agreement cannot be read back from a contentless index;
    # integrity_check runs FTS5's own structural check of it.
    return findings, f"{indexed} row(s) indexed, one per current live memory"


@dataclass(frozen=True)
class _Indexed:
    """One kind of item the vector index holds, as the vector checks see it."""

    kind: str  # embedding_queue.kind and vector_tables.kind
    owners: str  # SQL: the ids a vector or a job may belong to (a WHERE clause included)
    expires: bool  # owners past expires_at need no vector (the worker drops their jobs)
    noun: str  # how a finding names the items, plural-capable
    owner: str  # what an orphan belongs to none of
    id_column: str  # where the ids of a finding live


_MEMORIES = _Indexed(
    kind="memory",
    owners=_SQL_LIVE_IDS,
    expires=True,
    noun="live memory version(s)",
    owner="current live memory",
    id_column="memories.id",
)
_CHUNKS = _Indexed(
    kind="chunk",
    owners="SELECT id FROM main.chunks WHERE 1",
    expires=False,
    noun="document chunk(s)",
    owner="document chunk",
    id_column="chunks.id",
)


def _vector_findings(conn: apsw.Connection, indexed: _Indexed) -> tuple[list[str], int, int, int]:
    """Findings about ``indexed``'s vectors and jobs, and (vectors, jobs, failed jobs)."""
    registered = conn.execute(
        "SELECT name FROM main.vector_tables WHERE kind = ?", (indexed.kind,)
    ).fetchall()
    jobs = scalar_int(
        conn, "SELECT count(*) FROM main.embedding_queue WHERE kind = ?", (indexed.kind,)
    )
    failed = scalar_int(
        conn,
        "SELECT count(failed_at) FROM main.embedding_queue WHERE kind = ?",
        (indexed.kind,),
    )
    findings = []
    table = str(registered[0][0]) if registered else None
    if table is not None and table not in search.VECTOR_TABLE_NAMES:
        findings.append(f"vector_tables registers {table!r}, which is not a table abathur makes")
        table = None
    if table is not None and not schema.table_exists(conn, table):
        findings.append(f"vector_tables registers {table!r} but the table does not exist")
        table = None
    # The table name is one of search.VECTOR_TABLE_NAMES (checked above); the SQL from _Indexed.
    has_vector = f'id IN (SELECT item_id FROM main."{table}")' if table else "0"
    unexpired = " AND (expires_at IS NULL OR expires_at > ?)" if indexed.expires else ""
    missing, some = _set_difference(
        conn,
        f"{indexed.owners}{unexpired} "
        "AND id NOT IN (SELECT ref_id FROM main.embedding_queue WHERE kind = ?) "
        f"AND NOT {has_vector} ORDER BY id",
        ((time.time(),) if indexed.expires else ()) + (indexed.kind,),
    )
    if missing:
        findings.append(
            f"{missing} {indexed.noun} have neither a vector nor a queued job "
            f"({indexed.id_column} {_examples(some, missing)})"
        )
    vectors = 0
    if table is not None:
        vectors = scalar_int(conn, f'SELECT count(*) FROM main."{table}"')
        orphans, some = _set_difference(
            conn,
            f'SELECT item_id FROM main."{table}" WHERE item_id NOT IN ({indexed.owners}) '
            # A deferred delete is not an orphan: search skips it already and
            # the worker's next batch removes it (search.defer_vector_delete).
            "AND item_id NOT IN (SELECT item_id FROM main.vector_deletes WHERE vec_table = ?) "
            "ORDER BY item_id",
            (table,),
        )
        if orphans:
            findings.append(
                f"{orphans} vector(s) in {table} belong to no {indexed.owner} "
                f"(item_id {_examples(some, orphans)})"
            )
    stale, some = _set_difference(
        conn,
        "SELECT ref_id FROM main.embedding_queue WHERE kind = ? "
        f"AND ref_id NOT IN ({indexed.owners}) ORDER BY ref_id",
        (indexed.kind,),
    )
    if stale:
        findings.append(
            f"{stale} embedding job(s) are for no {indexed.owner} (ref_id {_examples(some, stale)})"
        )
    return findings, vectors, jobs, failed


def _queue_summary(summary: str, failed: int) -> str:
    if failed:
        summary += f" ({failed} failed; ab.embeddings.retry_failed() queues them again)"
    return summary


def _has_embedder(conn: apsw.Connection) -> bool:
    return bool(conn.execute("SELECT value FROM main.meta WHERE key = 'embedder.name'").fetchall())


def _registered(conn: apsw.Connection, kind: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM main.vector_tables WHERE kind = ?", (kind,)).fetchall())


def _queued(conn: apsw.Connection, kind: str) -> int:
    sql = "SELECT count(*) FROM main.embedding_queue WHERE kind = ?"
    return scalar_int(conn, sql, (kind,))


def _vectors(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    if not (
        schema.table_exists(conn, "embedding_queue") and schema.table_exists(conn, "vector_tables")
    ):
        raise CheckSkipped(_NO_SEARCH_INDEX)
    if not (_has_embedder(conn) or _registered(conn, "memory") or _queued(conn, "memory")):
        raise CheckSkipped(_NO_EMBEDDER)
    findings, vectors, jobs, failed = _vector_findings(conn, _MEMORIES)
    return findings, _queue_summary(f"{vectors} vector(s), {jobs} job(s) queued", failed)


def _chunk_vectors(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    """Document chunks, as _vectors does memories: a vector or a job each, none orphaned."""
    if not (schema.table_exists(conn, "chunks") and schema.table_exists(conn, "vector_tables")):
        raise CheckSkipped("skipped: no document index in this file")
    (chunks,) = conn.execute("SELECT count(*) FROM main.chunks").fetchall()[0]
    if not (chunks or _registered(conn, "chunk") or _queued(conn, "chunk")):
        raise CheckSkipped("skipped: no document chunks in this file")
    if not (_has_embedder(conn) or _registered(conn, "chunk")):
        raise CheckSkipped(_NO_EMBEDDER)
    findings, vectors, jobs, failed = _vector_findings(conn, _CHUNKS)
    summary = f"{chunks} chunk(s), {vectors} vector(s), {jobs} job(s) queued"
    return findings, _queue_summary(summary, failed)


def _archive_payloads(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    if not schema.table_exists(conn, "archive"):
        raise CheckSkipped("skipped: no archive in this file")
    # abathur.archival owns the payload format and its checksums; we only run its verification.
    return verify_archive(conn, quick=quick)


CHECKS: tuple[Check, ...] = (
    Check("integrity", "PRAGMA integrity_check (quick_check with --quick)", _integrity),
    Check("foreign_keys", "no row points at a missing parent (foreign_key_check)", _foreign_keys),
    Check(
        "schema", "tables, columns, indexes, triggers, user_version match the migrations", _schema
    ),
    Check("audit_chain", "the audit log's hash chain and head verify", _audit_chain),
    Check("json_columns", "every JSON column holds valid JSON", _json_columns),
    # Derived search indexes: see the section above.
    Check("fts_index", "the FTS5 index agrees with the memories it indexes", _fts_index),
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


def _run_one(check: Check, conn: apsw.Connection, quick: bool) -> CheckResult:
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
    checks = _select(only)
    removed = _sweep_temps(path, settings)
    conn = schema.open_existing(path, settings)
    try:
        with translate_errors(f"reading {path}"):
            # One read transaction: every check sees the same snapshot.
            conn.execute("BEGIN")
        try:
            results = tuple(_run_one(check, conn, quick) for check in checks)
        finally:
            # Ending a read transaction on a damaged file can fail too; closing
            # the connection ends it either way, and the results already say why.
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")
    finally:
        conn.close()
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


Rebuilder = Callable[[apsw.Connection], int]


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
    rebuilders = dict(rebuilders or {})
    conn = schema.open_existing(path, settings, readonly=False)
    rebuilt: dict[str, int | None] = {}
    try:
        with translate_errors(f"rebuilding the search indexes of {path}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for name, contentless in _fts_tables(conn):
                    if name in rebuilders:
                        rebuilt[name] = rebuilders[name](conn)
                    elif contentless:
                        raise InvalidInputError(
                            f"FTS5 table {name!r} is contentless: only the code that fills it "
                            "can rebuild it, and none was given"
                        )
                    else:
                        # 'rebuild' re-reads the content table; names come from sqlite_schema.
                        conn.execute(f'INSERT INTO main."{name}"("{name}") VALUES (\'rebuild\')')
                        rebuilt[name] = None
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    finally:
        conn.close()
    log.info("check.rebuilt", path=str(path), indexes=rebuilt)
    return rebuilt


def _fts_tables(conn: apsw.Connection) -> list[tuple[str, bool]]:
    """(name, is contentless) of every FTS5 table the migrations make and the file has.

    Names and definitions come from the migrations (:func:`schema.expected`),
    never from the file: an FTS5 table the migrations do not make is a finding
    of the schema check, not something to rebuild.
    """
    present = schema.describe(conn)
    version = min(migrations.current_version(conn), migrations.available()[-1].version)
    ours = schema.expected(version) if version else {}
    return sorted(
        (name, bool(re.search(r"\bcontent\s*=\s*''", obj.sql, re.IGNORECASE)))
        for name, obj in ours.items()
        if obj.module == "fts5" and name in present and present[name].module == "fts5"
    )

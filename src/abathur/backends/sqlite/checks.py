"""The checks of ``abathur check`` that read SQLite itself, and the FTS5 rebuild of ``--fix``.

Each check is ``fn(conn, quick) -> (findings, summary)`` on a connection inside
one read transaction (:func:`read_snapshot`); a check that does not apply to
the file raises :class:`~abathur.stores.ops.CheckSkipped`. The list of checks,
the report and the checks owned by services (audit chain, archive payloads)
are :mod:`abathur.ops.integrity`'s.

Example:
    >>> import apsw
    >>> from abathur.backends.sqlite import checks
    >>> conn = apsw.Connection(":memory:")
    >>> checks.integrity(conn, quick=True)
    ([], 'quick_check: ok')
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import apsw

from abathur.backends.sqlite import migrations, schema
from abathur.backends.sqlite.connection import scalar_int, translate_errors
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.files import Connection, open_existing
from abathur.backends.sqlite.schema import VectorTables
from abathur.backends.sqlite.transaction import SqliteTransaction
from abathur.config import Settings
from abathur.errors import InvalidInputError
from abathur.stores import Transaction
from abathur.stores.ops import CheckSkipped

__all__ = [
    "JSON_COLUMNS",
    "Connection",
    "Rebuilder",
    "chunk_vectors",
    "foreign_keys",
    "fts_index",
    "fts_tables",
    "integrity",
    "json_columns",
    "memory_vectors",
    "read_snapshot",
    "rebuild_fts",
    "schema_matches",
]

#: Refills one contentless FTS5 table in the caller's write transaction; returns its rows.
Rebuilder = Callable[[Transaction], int]

# At most this many examples per finding kind: a corrupt file can have millions.
_EXAMPLES = 5


@contextlib.contextmanager
def read_snapshot(path: Path, settings: Settings | None) -> Iterator[apsw.Connection]:
    """An isolated read-only connection to ``path`` inside one read transaction.

    Every check run on it sees the same snapshot while a live application
    keeps writing. Ending the transaction on a damaged file can fail too:
    closing the connection ends it either way.

    Raises:
        DatabaseError: there is no database at ``path``, or it cannot be read.
    """
    conn = open_existing(path, settings)
    try:
        with translate_errors(f"reading {path}"):
            conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")
    finally:
        conn.close()


def integrity(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    """``PRAGMA integrity_check`` (``quick_check`` when ``quick``)."""
    pragma = "quick_check" if quick else "integrity_check"
    # integrity_check(N) stops after N problems; enough to diagnose, bounded on a wreck.
    rows = [str(r[0]) for r in conn.execute(f"PRAGMA main.{pragma}(100)")]
    if rows == ["ok"]:
        return [], f"{pragma}: ok"
    return rows, f"{pragma}: {len(rows)} problem(s)"


def foreign_keys(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    """No row points at a missing parent (``PRAGMA foreign_key_check``)."""
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


def schema_matches(
    conn: apsw.Connection, quick: bool, vectors: VectorTables
) -> tuple[list[str], str]:
    """The file's schema against its migrations (see :func:`schema.compare`)."""
    diff = schema.compare(conn, vectors)
    summary = f"user_version {diff.user_version} (latest {diff.latest_version})"
    if diff.runtime_objects:
        summary += f"; created at run time: {', '.join(diff.runtime_objects)}"
    if not diff.problems:
        summary = "matches the migrations, " + summary
    return diff.problems, summary


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


def json_columns(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    """Every JSON column holds valid JSON."""
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


def fts_index(conn: apsw.Connection, quick: bool) -> tuple[list[str], str]:
    """``memories_fts`` holds exactly the current live memories."""
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
    indexed = scalar_int(conn, "SELECT count(*) FROM main.memories_fts")
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


def _vector_findings(
    conn: apsw.Connection, indexed: _Indexed, names: frozenset[str]
) -> tuple[list[str], int, int, int]:
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
    if table is not None and table not in names:
        findings.append(f"vector_tables registers {table!r}, which is not a table abathur makes")
        table = None
    if table is not None and not schema.table_exists(conn, table):
        findings.append(f"vector_tables registers {table!r} but the table does not exist")
        table = None
    # The table name is one of ``names``, abathur's own (checked above); the SQL from _Indexed.
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
            # the worker's next batch removes it (tx.search.defer_vector_delete).
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


def memory_vectors(
    conn: apsw.Connection, quick: bool, vectors: VectorTables
) -> tuple[list[str], str]:
    """Every live memory has a vector or a queued job; no vector or job is orphaned."""
    if not (
        schema.table_exists(conn, "embedding_queue") and schema.table_exists(conn, "vector_tables")
    ):
        raise CheckSkipped(_NO_SEARCH_INDEX)
    if not (_has_embedder(conn) or _registered(conn, "memory") or _queued(conn, "memory")):
        raise CheckSkipped(_NO_EMBEDDER)
    findings, count, jobs, failed = _vector_findings(conn, _MEMORIES, vectors.names)
    return findings, _queue_summary(f"{count} vector(s), {jobs} job(s) queued", failed)


def chunk_vectors(
    conn: apsw.Connection, quick: bool, vectors: VectorTables
) -> tuple[list[str], str]:
    """Document chunks, as _vectors does memories: a vector or a job each, none orphaned."""
    if not (schema.table_exists(conn, "chunks") and schema.table_exists(conn, "vector_tables")):
        raise CheckSkipped("skipped: no document index in this file")
    chunks = scalar_int(conn, "SELECT count(*) FROM main.chunks")
    if not (chunks or _registered(conn, "chunk") or _queued(conn, "chunk")):
        raise CheckSkipped("skipped: no document chunks in this file")
    if not (_has_embedder(conn) or _registered(conn, "chunk")):
        raise CheckSkipped(_NO_EMBEDDER)
    findings, count, jobs, failed = _vector_findings(conn, _CHUNKS, vectors.names)
    summary = f"{chunks} chunk(s), {count} vector(s), {jobs} job(s) queued"
    return findings, _queue_summary(summary, failed)


def rebuild_fts(
    path: Path, settings: Settings | None, rebuilders: Mapping[str, Rebuilder]
) -> dict[str, int | None]:
    """Rebuild the FTS5 indexes of ``path`` in one write transaction; see the ops caller.

    Raises:
        InvalidInputError: a contentless FTS5 table has no rebuilder; nothing changed.
        DatabaseError: the file cannot be opened or written.
    """
    conn = open_existing(path, settings, readonly=False)
    rebuilt: dict[str, int | None] = {}
    try:
        with translate_errors(f"rebuilding the search indexes of {path}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for name, contentless in fts_tables(conn):
                    if name in rebuilders:
                        tx = SqliteTransaction(conn, SqliteContext(path, settings or Settings()))
                        rebuilt[name] = rebuilders[name](tx)
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
    return rebuilt


def fts_tables(conn: apsw.Connection) -> list[tuple[str, bool]]:
    """(name, is contentless) of every FTS5 table the migrations make and the file has.

    Names and definitions come from the migrations (:func:`schema.expected_objects`),
    never from the file: an FTS5 table the migrations do not make is a finding
    of the schema check, not something to rebuild.
    """
    present = schema.describe(conn)
    version = min(migrations.current_version(conn), migrations.available()[-1].version)
    ours = schema.expected_objects(version) if version else {}
    return sorted(
        (name, bool(re.search(r"\bcontent\s*=\s*''", obj.sql, re.IGNORECASE)))
        for name, obj in ours.items()
        if obj.module == "fts5" and name in present and present[name].module == "fts5"
    )

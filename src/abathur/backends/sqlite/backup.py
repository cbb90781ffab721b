"""Copying a live SQLite file and reading a copy, for :mod:`abathur.ops.backup`.

:func:`copy_online` takes a consistent snapshot with SQLite's online backup
API while the application keeps writing; :func:`inspect_copy` checks a copy
(integrity, schema) and reads what a manifest records of it, treating it as
hostile (it may be a backup someone handed us).

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.backends.sqlite.backup import copy_online, inspect_copy
    >>> from abathur.config import Settings
    >>> from abathur.ops.schema import VECTOR_TABLES
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none"):
    ...         pass
    >>> asyncio.run(create())
    >>> copy = path.with_name("copy.db")
    >>> copy_online(path, copy, Settings())
    >>> report = inspect_copy(copy, what="the copy", vectors=VECTOR_TABLES)
    >>> report.integrity, report.schema_problems, report.row_counts["memories"]
    (['ok'], [], 0)
"""

from __future__ import annotations

from pathlib import Path

import apsw

from abathur.backends.sqlite import schema
from abathur.backends.sqlite.connection import connect, scalar_int, translate_errors
from abathur.backends.sqlite.files import has_sqlite_header
from abathur.backends.sqlite.schema import VectorTables
from abathur.backends.sqlite.untrusted import open_untrusted
from abathur.config import Settings
from abathur.stores.ops import CopyReport, StorageFullError

__all__ = ["copy_online", "inspect_copy"]

# At most 20 problems: a damaged file can have thousands.
SQL_INTEGRITY_CHECK = "PRAGMA integrity_check(20)"
# The audit chain's head: one row, by its primary key.
SQL_AUDIT_HEAD = "SELECT seq, hash FROM main.audit_head WHERE id = 1"


def copy_online(source: Path, target: Path, settings: Settings) -> None:
    """Copy the database at ``source`` to a new file ``target``: one consistent snapshot.

    Raises:
        StorageFullError: SQLite ran out of space writing ``target``.
        DatabaseError: ``source`` cannot be read.
    """
    conn = connect(source, settings, readonly=True)
    try:
        with translate_errors(f"copying {source}"):
            out = apsw.Connection(str(target))
            try:
                with out.backup("main", conn, "main") as copy:
                    # One step copies every page under one read transaction: a
                    # consistent snapshot. Stepping page by page would restart
                    # after every commit of a busy writer and might never finish.
                    copy.step(-1)
            except apsw.FullError:
                # SQLITE_FULL says "database or disk is full": the caller knows which.
                raise StorageFullError(f"no space left writing {target.name}") from None
            finally:
                out.close()
    finally:
        conn.close()


def inspect_copy(path: Path, *, what: str, vectors: VectorTables) -> CopyReport:
    """Check a copy (integrity, schema) and read what the manifest records of it.

    The copy may be hostile (a backup someone handed us), so it is read through
    :func:`abathur.backends.sqlite.untrusted.open_untrusted`: read-only, no extension, an
    authorizer that denies everything but reads. Rows are counted only in the
    tables our migrations make, under names taken from the migrations; a table,
    index, trigger or view they do not make is a schema problem, never counted.
    A copy that cannot even be opened as a database fails ``integrity`` too.
    """
    if not has_sqlite_header(path):
        return CopyReport([f"{what} is not an SQLite database"], 0, 0, {}, (0, ""))
    conn = open_untrusted(path)
    try:
        with translate_errors(f"checking {what}"):
            try:
                integrity = [str(r[0]) for r in conn.execute(SQL_INTEGRITY_CHECK)]
            except apsw.Error as exc:
                # Damage bad enough that the check itself stops is still its answer.
                integrity = [f"{type(exc).__name__}: {exc}"]
            if integrity != ["ok"]:
                # Counting rows of a damaged file may fail or mislead; stop here.
                return CopyReport(integrity, 0, 0, {}, (0, ""))
            problems = schema.object_problems(conn, vectors)
            if problems:
                # Not the schema we know: nothing in it is read any further.
                return CopyReport(integrity, 0, 0, {}, (0, ""), problems)
            head = (0, "0" * 64)
            if schema.table_exists(conn, "audit_head"):
                rows = conn.execute(SQL_AUDIT_HEAD).fetchall()
                if rows:
                    seq, digest = rows[0]
                    head = (seq if isinstance(seq, int) else 0, str(digest))
            return CopyReport(
                integrity=integrity,
                user_version=scalar_int(conn, "PRAGMA user_version"),
                page_size=scalar_int(conn, "PRAGMA page_size"),
                row_counts=schema.row_counts(conn),
                audit_head=head,
            )
    finally:
        conn.close()

"""Opening a database file abathur did not write: a backup under verification.

Everything in such a file may be hostile: table, index, trigger and column
names, the SQL text of its schema, the rows. SQLite runs every statement in a
string, so a table named ``x"; ATTACH DATABASE '/etc/x' AS p; --`` turns any
``f'SELECT count(*) FROM "{name}"'`` into a write outside the file. The
defences here do not rely on the caller getting every query right:

- the file is opened read-only and ``immutable``: no lock, no ``-wal`` or
  ``-shm`` created, no page ever written;
- no extension is loaded and loading is disabled; ``trusted_schema`` is off
  (functions with side effects cannot run from the schema), defensive mode is
  on, triggers and views are disabled;
- an authorizer denies every action but reading: ``SELECT``, reads of
  columns, a short list of side-effect-free functions and of pragmas that only
  report. ``ATTACH``, writes, DDL, transactions and ``load_extension`` are
  refused when the statement is prepared, before it runs.

A vec0 virtual table in the file stays unreadable (its module is not
loaded); integrity_check still checks its shadow tables' b-trees.

Example:
    >>> import apsw, tempfile, pathlib
    >>> from abathur.backends.sqlite.untrusted import open_untrusted
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.db"
    >>> setup = apsw.Connection(str(path)); _ = setup.execute("CREATE TABLE t(a)"); setup.close()
    >>> conn = open_untrusted(path)
    >>> conn.execute("PRAGMA integrity_check").fetchall()
    [('ok',)]
    >>> conn.execute("ATTACH DATABASE ':memory:' AS p")
    Traceback (most recent call last):
    ...
    apsw.AuthError: not authorized
    >>> conn.close()
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import apsw

from abathur.backends.sqlite.connection import translate_errors

__all__ = ["READ_FUNCTIONS", "READ_PRAGMAS", "open_untrusted"]

# Pragmas that only report. Those in the first set take an argument (the
# most problems to list, or the table to describe); the others must be read
# without one, since ``PRAGMA user_version = 7`` is a write.
_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"integrity_check", "quick_check", "table_info", "table_xinfo", "foreign_key_check"}
)
READ_PRAGMAS = _PRAGMAS_WITH_ARGUMENT | frozenset(
    {
        "user_version",
        "page_size",
        "page_count",
        "freelist_count",
        "schema_version",
        "data_version",
        "application_id",
        "encoding",
    }
)
# Pure functions our verification queries (and FTS5's own integrity check) use.
READ_FUNCTIONS = frozenset({"count", "min", "max", "sum", "length", "typeof", "json_valid"})

_SELECT = apsw.SQLITE_SELECT
_READ = apsw.SQLITE_READ
_FUNCTION = apsw.SQLITE_FUNCTION
_PRAGMA = apsw.SQLITE_PRAGMA


def _only_reads(
    action: int, first: str | None, second: str | None, _db: str | None, _trigger: str | None
) -> int:
    """An apsw authorizer: allow reading, deny everything else."""
    if action in (_SELECT, _READ):
        return apsw.SQLITE_OK
    if action == _FUNCTION and second is not None and second.lower() in READ_FUNCTIONS:
        return apsw.SQLITE_OK
    if action == _PRAGMA and first is not None:
        name = first.lower()
        if name in READ_PRAGMAS and (second is None or name in _PRAGMAS_WITH_ARGUMENT):
            return apsw.SQLITE_OK
    return apsw.SQLITE_DENY


def _uri(path: Path) -> str:
    # Percent-encode the path: '?' or '#' in a directory name must not become URI syntax.
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro&immutable=1"


def open_untrusted(path: Path) -> apsw.Connection:
    """A connection to ``path`` that can only read, whatever the file holds.

    ``immutable`` tells SQLite nobody changes the file while it is open: true
    of a private copy being verified, and never to be used on a live database.

    Raises:
        DatabaseError: the file cannot be opened as a database.
    """
    with translate_errors(f"opening {path} read-only"):
        conn = apsw.Connection(_uri(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            for option, value in (
                (apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0),
                (apsw.SQLITE_DBCONFIG_DEFENSIVE, 1),
                (apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0),
                (apsw.SQLITE_DBCONFIG_ENABLE_VIEW, 0),
                (apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0),
            ):
                conn.config(option, value)
            conn.enable_load_extension(False)
            conn.authorizer = _only_reads
        except BaseException:
            conn.close()
            raise
    return conn

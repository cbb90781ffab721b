"""The database file itself, before any connection pool: is it there, is it SQLite, can it be read.

For the operations kit (:mod:`abathur.ops`), which opens its own isolated
connections beside a live application.

Example:
    >>> import tempfile, pathlib
    >>> from abathur.backends.sqlite.files import check_readable, wal_path
    >>> wal_path(pathlib.Path("agent.db")).name
    'agent.db-wal'
    >>> missing = pathlib.Path(tempfile.mkdtemp()) / "missing.db"
    >>> check_readable(missing)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    abathur.errors.DatabaseError: no database at '...missing.db'
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import apsw

from abathur.backends.sqlite.connection import connect, translate_errors
from abathur.config import Settings
from abathur.errors import DatabaseError

__all__ = ["Connection", "check_readable", "has_sqlite_header", "open_existing", "wal_path"]

#: An open connection to a database file, as the operations kit holds one: it
#: passes it, unopened, to backend functions and to services' own verifications.
Connection: TypeAlias = apsw.Connection

_SQLITE_HEADER = b"SQLite format 3\x00"

# Reads the schema table: fails on a file that is not a database (or is encrypted, truncated...).
SQL_READ_SCHEMA = "SELECT count(*) FROM main.sqlite_schema"


def wal_path(path: Path) -> Path:
    """The ``-wal`` file beside a database file."""
    return path.with_name(path.name + "-wal")


def has_sqlite_header(path: Path) -> bool:
    """True when the file starts with SQLite's magic string."""
    with open(path, "rb") as f:
        return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def open_existing(
    path: Path, settings: Settings | None = None, *, readonly: bool = True
) -> Connection:
    """Open an isolated, prepared connection to a file that must already exist.

    Raises:
        DatabaseError: there is no file at ``path``, or it is not a database.
    """
    if not path.is_file():
        raise DatabaseError(f"no database at {str(path)!r}")
    # An empty file is a database SQLite has not written yet; anything else must say so.
    if path.stat().st_size and not has_sqlite_header(path):
        raise DatabaseError(f"{str(path)!r} is not an SQLite database (its header is wrong)")
    return connect(path, settings or Settings(), readonly=readonly)


def check_readable(path: Path) -> None:
    """Return when a database can be read at ``path``; opens read-only and creates nothing.

    Raises:
        DatabaseError: there is no file, or it is not a readable database.
    """
    conn = open_existing(path)
    try:
        with translate_errors(f"reading {path}"):
            conn.execute(SQL_READ_SCHEMA).fetchall()
    finally:
        conn.close()

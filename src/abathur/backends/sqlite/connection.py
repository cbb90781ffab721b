"""Opening one SQLite connection the way abathur needs it.

Every connection, writer or reader, is made by :func:`connect` and nothing
else: it asserts the environment (SQLite >= 3.51.3, sqlite-vec loadable),
loads sqlite-vec and applies the pragmas of DESIGN.md §2. Driver (apsw)
errors are translated here, so none reaches a caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import apsw
import sqlite_vec

from abathur.config import Settings
from abathur.errors import (
    AbathurError,
    DatabaseBusyError,
    DatabaseError,
    IncompatibleEnvironmentError,
)

__all__ = [
    "MIN_SQLITE",
    "Versions",
    "check_environment",
    "connect",
    "pragmas_for",
    "scalar_int",
    "table_exists",
    "translate_errors",
]

# SQLite before 3.51.3 can corrupt a WAL database when two connections write or
# checkpoint at the same moment (the WAL-reset bug). We run one writer per
# process but several processes may share a file, so this is a hard floor.
MIN_SQLITE = (3, 51, 3)


@dataclass(frozen=True)
class Versions:
    """Versions of the pieces under the database layer (``abathur info``)."""

    sqlite: str
    sqlite_vec: str
    apsw: str
    aiosqlite: str


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def check_environment() -> Versions:
    """Assert SQLite >= 3.51.3 and a loadable sqlite-vec; return the versions.

    Raises:
        IncompatibleEnvironmentError: if either requirement is not met.

    Example:
        >>> from abathur.backends.sqlite.connection import check_environment
        >>> check_environment().sqlite >= "3.51.3"
        True
    """
    sqlite = apsw.sqlite_lib_version()
    if _parse(sqlite) < MIN_SQLITE:
        raise IncompatibleEnvironmentError(
            f"SQLite {sqlite} is older than {'.'.join(map(str, MIN_SQLITE))}, which has the "
            "WAL-reset corruption bug; install apsw >= 3.51.3.0 (its wheels bundle SQLite)"
        )
    probe = apsw.Connection(":memory:")
    try:
        vec = _load_vec(probe)
    finally:
        probe.close()
    return Versions(
        sqlite=sqlite,
        sqlite_vec=vec,
        apsw=apsw.apsw_version(),
        aiosqlite=package_version("aiosqlite"),
    )


def _load_vec(conn: apsw.Connection) -> str:
    try:
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
        (row,) = conn.execute("SELECT vec_version()").fetchall()
    except apsw.Error as exc:
        raise IncompatibleEnvironmentError(f"sqlite-vec could not be loaded: {exc}") from exc
    return str(row[0]).lstrip("v")


def pragmas_for(settings: Settings) -> dict[str, str | int]:
    """The pragmas every connection gets, in the order they are applied."""
    return {
        "journal_mode": "wal",
        "synchronous": settings.synchronous.lower(),
        "foreign_keys": 1,
        "busy_timeout": settings.busy_timeout_ms,
        "wal_autocheckpoint": settings.wal_autocheckpoint,
        "cache_size": -settings.cache_size_kib,
        "temp_store": "memory",
        "mmap_size": settings.mmap_size,
        # Zero the old bytes of a deleted or rewritten row when that costs no
        # extra I/O: a purge (issue 11) then leaves no stale copy of an erased
        # value in a page's free space; the purge itself runs with ON.
        "secure_delete": "fast",
    }


def connect(path: Path, settings: Settings, *, readonly: bool) -> apsw.Connection:
    """Open and prepare one connection. Runs on the thread that will own it.

    A read-only connection cannot change the journal mode, but asking for WAL
    on a file that is already WAL is a no-op that reports ``wal``; we check it.
    """
    flags = (
        apsw.SQLITE_OPEN_READONLY
        if readonly
        else (apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    )
    with translate_errors(f"opening {path}"):
        conn = apsw.Connection(str(path), flags=flags)
        try:
            # Before the first read: another connection switching the file to
            # WAL, or recovering its WAL, holds a lock for a moment, and without
            # a busy timeout the read below failed at once (two `abathur smoke`
            # runs opening one file together did).
            conn.set_busy_timeout(settings.busy_timeout_ms)
            # Read the header first, so a file that is not a database is reported
            # as such (NotADBError) rather than as sqlite-vec failing to load.
            conn.execute("PRAGMA schema_version").fetchall()
            _load_vec(conn)
            for name, value in pragmas_for(settings).items():
                # Names and values come from Settings (validated), never from a caller.
                row = conn.execute(f"PRAGMA {name} = {value}").fetchall()
                if name == "journal_mode" and row and row[0][0] != "wal":
                    raise DatabaseError(
                        f"{path} could not be put in WAL mode (it reports {row[0][0]!r})"
                    )
        except BaseException:
            conn.close()
            raise
    return conn


_BUSY = (apsw.BusyError, apsw.LockedError)


@contextlib.contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Turn any apsw error raised inside into an :class:`AbathurError`."""
    try:
        yield
    except AbathurError:
        raise
    except _BUSY as exc:
        raise DatabaseBusyError(
            f"database busy while {doing}: another process held the write lock longer than "
            "busy_timeout; retry, or raise ABATHUR_BUSY_TIMEOUT_MS"
        ) from exc
    except apsw.Error as exc:
        raise DatabaseError(f"SQLite error while {doing}: {type(exc).__name__}: {exc}") from exc


def scalar_int(
    conn: apsw.Connection, sql: str, params: apsw.Bindings | None = None
) -> int:
    """The one integer ``sql`` returns (a count, a pragma): the first column of its first row.

    Example:
        >>> scalar_int(apsw.Connection(":memory:"), "SELECT :a + 1", {"a": 41})
        42
    """
    value = conn.execute(sql, params).fetchall()[0][0]
    if not isinstance(value, int):
        raise TypeError(f"{sql!r} returned {type(value).__name__}, not an integer")
    return value


def table_exists(conn: apsw.Connection, name: str) -> bool:
    """True when the main schema has a table (or virtual table) called ``name``.

    The one way abathur asks (older files lack the tables of later migrations).

    Example:
        >>> conn = apsw.Connection(":memory:")
        >>> _ = conn.execute("CREATE TABLE t (x)")
        >>> table_exists(conn, "t"), table_exists(conn, "missing")
        (True, False)
    """
    return bool(
        conn.execute(
            "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = :name",
            {"name": name},
        ).fetchall()
    )

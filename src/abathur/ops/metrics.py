"""``abathur metrics``: numbers about one database in Prometheus text exposition format.

Every sample carries a ``database`` label (the file's absolute path), so one
node-exporter textfile directory can hold the metrics of several databases.
:func:`render` follows the text format 0.0.4: ``# HELP`` and ``# TYPE`` before
each family, names matching ``[a-zA-Z_:][a-zA-Z0-9_:]*``, label values with
backslash, double quote and newline escaped. :func:`write_textfile` replaces
the file atomically, so the collector never reads half of it.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.metrics import collect, render
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none") as ab:
    ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
    >>> asyncio.run(create())
    >>> text = render(collect(path))
    >>> [line for line in text.splitlines() if 'type="semantic"' in line] == [
    ...     f'abathur_memories{{database="{path}",type="semantic"}} 1']
    True
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from abathur import __version__
from abathur.backends.sqlite.connection import check_environment
from abathur.backends.sqlite.files import wal_path
from abathur.config import PostgresUrl, Settings
from abathur.errors import AbathurError, InvalidInputError
from abathur.models import MemoryType, SessionStatus
from abathur.ops.backup import backup_dir_for, backup_label, fsync_dir, list_backups
from abathur.ops.files import ops_kit, server_kit

__all__ = ["Metric", "Sample", "collect", "render", "write_textfile"]

MetricType = Literal["gauge", "counter"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Sample:
    """One value of a metric, with its labels."""

    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A metric family: name, help text, type and samples."""

    name: str
    help: str
    type: MetricType
    samples: list[Sample]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInputError(f"metric name {self.name!r} is not a valid Prometheus name")
        for sample in self.samples:
            for label in sample.labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise InvalidInputError(f"label name {label!r} is not valid in {self.name}")

    def to_dict(self) -> dict[str, Any]:
        """The family as ``abathur metrics --json`` prints it."""
        return {
            "name": self.name,
            "help": self.help,
            "type": self.type,
            "samples": [{"labels": s.labels, "value": s.value} for s in self.samples],
        }


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The metrics in Prometheus text exposition format (ends with a newline).

    Example:
        >>> from abathur.ops.metrics import Metric, Sample, render
        >>> print(render([Metric("x_total", "Things.", "counter",
        ...                      [Sample(3, {"path": 'a"b'})])]), end="")
        # HELP x_total Things.
        # TYPE x_total counter
        x_total{path="a\\"b"} 3
    """
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for sample in metric.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels.items())
            lines.append(
                f"{metric.name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{metric.name} {_number(sample.value)}"
            )
    return "\n".join(lines) + "\n"


def collect(
    path: str | Path | PostgresUrl,
    *,
    settings: Settings | None = None,
    backup_dir: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Metric]:
    """Read the metrics of the database at ``path`` (read-only, one snapshot).

    A file that cannot be opened still yields ``abathur_up 0`` and its sizes,
    so an alert can fire on it; nothing is raised for that.

    On PostgreSQL (``path`` a :class:`~abathur.config.PostgresUrl`; the
    ``database`` label is the URL without its password) the sizes are the
    database's, tables' and indexes' (``abathur_table_size_bytes``,
    ``abathur_index_size_bytes``), ``abathur_table_rows`` are the statistics'
    estimates (``pg_stat_user_tables.n_live_tup``), and it adds
    ``abathur_connections{state}``, ``abathur_server_connections``,
    ``abathur_max_connections``, ``abathur_replication_lag_seconds{standby}``
    (only where there is a standby), ``abathur_replication_slot_retained_bytes{slot}``
    and ``abathur_wal_size_bytes`` (pg_wal, when the role may list it).

    Args:
        path: the database file, or a PostgreSQL URL.
        settings: pragmas and ``backup_dir``.
        backup_dir: where backups are; default :func:`~abathur.ops.backup.backup_dir_for`.
        clock: the current time (tests pass a fixed one).

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.metrics import collect
        >>> missing = pathlib.Path(tempfile.mkdtemp()) / "x.db"
        >>> [(m.name, m.samples[0].value) for m in collect(missing)][:1]
        [('abathur_up', 0)]
    """
    settings = settings or Settings()
    if isinstance(path, PostgresUrl):
        return _collect_server(path, settings, backup_dir, clock())
    path = Path(path)
    db = {"database": str(path.absolute())}
    now = clock()

    def one(name: str, help_: str, value: float, type_: MetricType = "gauge") -> Metric:
        return Metric(name, help_, type_, [Sample(value, dict(db))])

    def by(name: str, help_: str, label: str, values: dict[str, int]) -> Metric:
        return Metric(
            name, help_, "gauge", [Sample(v, {**db, label: k}) for k, v in sorted(values.items())]
        )

    wal = wal_path(path)
    sizes = [
        one(
            "abathur_database_size_bytes",
            "Size of the database file.",
            path.stat().st_size if path.is_file() else 0,
        ),
        one(
            "abathur_wal_size_bytes",
            "Size of the database's -wal file.",
            wal.stat().st_size if wal.exists() else 0,
        ),
    ]
    try:
        data = _read(path, settings, now)
    except AbathurError:
        return [one("abathur_up", "1 if the database could be opened and read.", 0), *sizes]

    env = check_environment()
    info = Metric(
        "abathur_info",
        "Versions in use; the value is always 1.",
        "gauge",
        [
            Sample(
                1,
                {
                    **db,
                    "version": __version__,
                    "sqlite_version": env.sqlite,
                    "sqlite_vec_version": env.sqlite_vec,
                },
            )
        ],
    )
    metrics = [
        one("abathur_up", "1 if the database could be opened and read.", 1),
        info,
        one(
            "abathur_schema_version",
            "The file's schema version (PRAGMA user_version).",
            data["user_version"],
        ),
        *sizes,
        by("abathur_table_rows", "Rows in each table.", "table", data["rows"]),
        by("abathur_sessions", "Sessions by status.", "status", data["sessions"]),
        by(
            "abathur_memories",
            "Live, unexpired current memories by type.",
            "type",
            data["memories"],
        ),
        one("abathur_audit_records", "Records in the audit log.", data["audit"]),
    ]
    if data["queue"] is not None:
        depth, age = data["queue"]
        metrics += [
            one("abathur_embedding_queue_depth", "Embedding jobs waiting.", depth),
            one(
                "abathur_embedding_queue_oldest_age_seconds",
                "Age of the oldest waiting embedding job (0 when none).",
                age,
            ),
        ]
    directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(path, settings)
    backups = [b for b in list_backups(directory, database=path.name) if b.problem is None]
    metrics += [
        one(
            "abathur_last_backup_timestamp_seconds",
            "Unix time of the newest readable backup (0: none).",
            backups[0].created_at.timestamp() if backups else 0,
        ),
        one("abathur_backups", "Readable backups in the backup directory.", len(backups)),
    ]
    return metrics


def _collect_server(
    url: PostgresUrl, settings: Settings, backup_dir: str | Path | None, now: float
) -> list[Metric]:
    """:func:`collect` of a PostgreSQL database (see there)."""
    db = {"database": str(url)}

    def one(name: str, help_: str, value: float) -> Metric:
        return Metric(name, help_, "gauge", [Sample(value, dict(db))])

    def by(name: str, help_: str, label: str, values: Mapping[str, float]) -> Metric:
        return Metric(
            name, help_, "gauge", [Sample(v, {**db, label: k}) for k, v in sorted(values.items())]
        )

    try:
        probe = server_kit().metrics_probe(url, settings, now)
    except AbathurError:
        return [one("abathur_up", "1 if the database could be opened and read.", 0)]
    stats = probe.server
    assert stats is not None  # a server probe always has them
    sessions = dict.fromkeys(get_args(SessionStatus), 0) | dict(probe.sessions)
    memories = dict.fromkeys(get_args(MemoryType), 0) | dict(probe.memories)
    tables = [r for r in stats.relations if r.kind == "table"]
    indexes = [r for r in stats.relations if r.kind == "index"]
    metrics = [
        one("abathur_up", "1 if the database could be opened and read.", 1),
        Metric(
            "abathur_info",
            "Versions in use; the value is always 1.",
            "gauge",
            [
                Sample(
                    1,
                    {
                        **db,
                        "version": __version__,
                        "postgres_version": stats.server_version,
                        "pgvector_version": stats.pgvector_version,
                    },
                )
            ],
        ),
        one(
            "abathur_schema_version",
            "The database's schema version (schema_migrations).",
            probe.schema_version,
        ),
        one("abathur_database_size_bytes", "Size of the database.", stats.database_bytes),
        by(
            "abathur_table_rows",
            "Rows in each table (PostgreSQL: the statistics' estimate).",
            "table",
            dict(probe.rows),
        ),
        by(
            "abathur_table_size_bytes",
            "Size of each table with its TOAST, without indexes.",
            "table",
            {r.name: r.bytes for r in tables},
        ),
        Metric(
            "abathur_index_size_bytes",
            "Size of each index.",
            "gauge",
            [Sample(r.bytes, {**db, "index": r.name, "table": r.table}) for r in indexes],
        ),
        by(
            "abathur_connections",
            "Client connections to this database by state (pg_stat_activity).",
            "state",
            dict(stats.connections),
        ),
        one(
            "abathur_server_connections",
            "Client connections to the whole server.",
            stats.server_connections,
        ),
        one("abathur_max_connections", "The server's max_connections.", stats.max_connections),
        by("abathur_sessions", "Sessions by status.", "status", sessions),
        by("abathur_memories", "Live, unexpired current memories by type.", "type", memories),
        one(
            "abathur_audit_records",
            "Records in the audit log (PostgreSQL: the statistics' estimate).",
            probe.rows.get("audit_log", 0),
        ),
    ]
    if stats.replication_lag_s is not None:
        metrics.append(
            by(
                "abathur_replication_lag_seconds",
                "Replay lag of each standby (on a standby: its own, as 'self').",
                "standby",
                dict(stats.replication_lag_s),
            )
        )
    if stats.slot_retained_bytes:
        metrics.append(
            by(
                "abathur_replication_slot_retained_bytes",
                "WAL each replication slot holds back.",
                "slot",
                dict(stats.slot_retained_bytes),
            )
        )
    if stats.wal_bytes is not None:
        metrics.append(one("abathur_wal_size_bytes", "Size of pg_wal.", stats.wal_bytes))
    if probe.queue is not None:
        metrics += [
            one("abathur_embedding_queue_depth", "Embedding jobs waiting.", probe.queue.depth),
            one(
                "abathur_embedding_queue_oldest_age_seconds",
                "Age of the oldest waiting embedding job (0 when none).",
                probe.queue.oldest_age_s,
            ),
        ]
    directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(url, settings)
    backups = [b for b in list_backups(directory, database=backup_label(url)) if b.problem is None]
    newest = max(backups[0].created_at.timestamp() if backups else 0.0, stats.last_backup_at or 0.0)
    metrics += [
        one(
            "abathur_last_backup_timestamp_seconds",
            "Unix time of the newest backup (PostgreSQL: also as recorded in the database; "
            "0: none).",
            newest,
        ),
        one("abathur_backups", "Readable backups in the backup directory.", len(backups)),
    ]
    return metrics


def _read(path: Path, settings: Settings, now: float) -> dict[str, Any]:
    probe = ops_kit(path).metrics_probe(path, settings, now)
    sessions = dict.fromkeys(get_args(SessionStatus), 0)
    sessions.update(probe.sessions)
    memories = dict.fromkeys(get_args(MemoryType), 0)
    memories.update(probe.memories)
    queue = probe.queue
    return {
        "user_version": probe.schema_version,
        "rows": dict(probe.rows),
        "sessions": sessions,
        "memories": memories,
        "audit": probe.rows.get("audit_log", 0),
        "queue": (queue.depth, queue.oldest_age_s) if queue is not None else None,
    }


def write_textfile(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename), for node-exporter.

    node-exporter's textfile collector reads ``*.prom`` files; a reader sees
    either the old file or the new one, never a partial write.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.metrics import write_textfile
        >>> out = write_textfile(pathlib.Path(tempfile.mkdtemp()) / "abathur.prom", "x 1\\n")
        >>> out.read_text()
        'x 1\\n'
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"textfile path {str(path)!r} is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"cannot write metrics to {str(path)!r}: {exc}") from exc
    fsync_dir(path.parent)
    return path

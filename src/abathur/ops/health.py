"""``abathur health``: is this database fine right now? ok, warn or fail, with reasons.

Cheap enough to run every minute: it opens the file read-only, reads a few
numbers and looks at the backup directory and the disk. It does not run
``integrity_check`` (that is ``abathur check``). Each item compares one number
with :class:`Thresholds`; the overall status is the worst item's.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.health import health
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none"):
    ...         pass
    >>> asyncio.run(create())
    >>> report = health(path)
    >>> [(i.name, i.status) for i in report.items][:3]
    [('database', 'ok'), ('wal', 'ok'), ('backup', 'ok')]
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from abathur import __version__
from abathur.backends.sqlite.connection import check_environment
from abathur.backends.sqlite.files import wal_path
from abathur.config import PostgresUrl, Settings
from abathur.errors import AbathurError
from abathur.ops.backup import backup_dir_for, backup_label, list_backups
from abathur.ops.files import Target, ops_kit, server_kit
from abathur.stores.ops import HealthProbe, ServerStats

__all__ = ["HealthItem", "HealthReport", "Status", "Thresholds", "health"]

Status = Literal["ok", "warn", "fail"]
_RANK = {"ok": 0, "warn": 1, "fail": 2}

_MIB = 1 << 20
_HOUR = 3600.0


@dataclass(frozen=True)
class Thresholds:
    """Where ok turns to warn and warn to fail. The runbooks' alert rules use the same values."""

    # wal_autocheckpoint keeps a healthy WAL near 4 MiB; growth means a reader
    # is pinning an old snapshot or checkpoints keep failing.
    wal_warn_bytes: int = 64 * _MIB
    wal_fail_bytes: int = 1024 * _MIB
    # Nightly backups plus two hours' slack, then three missed nights.
    backup_warn_age_s: float = 26 * _HOUR
    backup_fail_age_s: float = 72 * _HOUR
    queue_warn_depth: int = 10_000
    queue_fail_depth: int = 100_000
    queue_warn_age_s: float = 1 * _HOUR
    queue_fail_age_s: float = 24 * _HOUR
    # Fraction of the filesystem free; also fail when a copy of the file no longer fits.
    disk_warn_free_ratio: float = 0.10
    disk_fail_free_ratio: float = 0.03
    # PostgreSQL: client connections over max_connections (a pool that cannot
    # grow waits, then fails with PoolExhaustedError).
    connections_warn_ratio: float = 0.80
    connections_fail_ratio: float = 0.95
    # PostgreSQL: how far the slowest standby's replay is behind.
    replication_warn_lag_s: float = 60.0
    replication_fail_lag_s: float = 600.0
    # PostgreSQL: WAL a replication slot holds back (pg_wal grows until its
    # consumer catches up or the slot is dropped).
    slot_warn_bytes: int = 1024 * _MIB
    slot_fail_bytes: int = 10 * 1024 * _MIB


@dataclass(frozen=True)
class HealthItem:
    """One thing looked at: its status, its number and a sentence about it."""

    name: str
    status: Status
    value: float | int | str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The item as ``abathur health --json`` prints it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HealthReport:
    """Every item, the worst status, and the versions in use."""

    path: Target
    status: Status
    items: tuple[HealthItem, ...]
    versions: dict[str, str]

    @property
    def is_ok(self) -> bool:
        """True when every item is ok."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The report as ``abathur health --json`` prints it."""
        return {
            "path": _shown(self.path),
            "status": self.status,
            "items": [i.to_dict() for i in self.items],
            "versions": self.versions,
        }


def _shown(db: Target) -> str:
    """A file's absolute path, or a server URL without its password."""
    return str(db) if isinstance(db, PostgresUrl) else str(db.absolute())


def _grade(value: float, warn: float, fail: float) -> Status:
    return "fail" if value >= fail else "warn" if value >= warn else "ok"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * _HOUR:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * _HOUR:
        return f"{seconds / _HOUR:.1f} h"
    return f"{seconds / (24 * _HOUR):.1f} days"


def _database_items(
    path: Target, settings: Settings, t: Thresholds, now: float
) -> tuple[list[HealthItem], HealthProbe | None]:
    """The items that need the database open; also the probe (first write, server numbers)."""
    started = time.perf_counter()
    try:
        if isinstance(path, PostgresUrl):
            probe = server_kit().health_probe(path, settings, now)
        else:
            probe = ops_kit(path).health_probe(path, settings, now)
    except AbathurError as exc:
        return [HealthItem("database", "fail", None, exc.message)], None
    ms = (time.perf_counter() - started) * 1000
    version, latest = probe.schema_version, probe.latest_schema_version
    items: list[HealthItem] = []
    if version == latest:
        items.append(
            HealthItem(
                "database", "ok", version, f"reachable in {ms:.1f} ms, schema version {version}"
            )
        )
    else:
        items.append(
            HealthItem(
                "database",
                "warn",
                version,
                f"reachable, but schema version "
                f"{version} is not this abathur's {latest} (run 'abathur migrate')",
            )
        )
    queue = probe.queue
    if queue is not None:
        depth, age = queue.depth, queue.oldest_age_s
        status = max(
            _grade(depth, t.queue_warn_depth, t.queue_fail_depth),
            _grade(age, t.queue_warn_age_s, t.queue_fail_age_s),
            key=_RANK.__getitem__,
        )
        detail = f"{depth} job(s) waiting" + (f", oldest {_age(age)} old" if depth else "")
        items.append(HealthItem("queue", status, depth, detail))
    return items, probe


def _wal_item(path: Path, t: Thresholds) -> HealthItem:
    wal = wal_path(path)
    size = wal.stat().st_size if wal.exists() else 0
    return HealthItem(
        "wal", _grade(size, t.wal_warn_bytes, t.wal_fail_bytes), size, f"{size / _MIB:.1f} MiB"
    )


def _backup_item(
    path: Target,
    backup_dir: Path,
    t: Thresholds,
    now: float,
    first_write: float | None,
    recorded: float | None = None,
) -> HealthItem:
    found = list_backups(backup_dir, database=backup_label(path))
    broken = [b.name for b in found if b.problem is not None]
    newest = next((b for b in found if b.problem is None), None)
    note = f"; {len(broken)} unreadable backup(s) in {backup_dir}" if broken else ""
    if recorded is not None and (newest is None or newest.created_at.timestamp() < recorded):
        # A server records its last backup itself: whichever host took it.
        age = max(0.0, now - recorded)
        status = _grade(age, t.backup_warn_age_s, t.backup_fail_age_s)
        if broken and status == "ok":
            status = "warn"
        return HealthItem(
            "backup",
            status,
            round(age, 3),
            f"last backup {_age(age)} ago (recorded in the database){note}",
        )
    if newest is None:
        if first_write is None:
            return HealthItem(
                "backup",
                "warn" if broken else "ok",
                None,
                f"no backup yet, and no data written yet{note}",
            )
        # Data has been at risk since it was first written: grade that time.
        age = max(0.0, now - first_write)
        status = _grade(age, t.backup_warn_age_s, t.backup_fail_age_s)
        return HealthItem(
            "backup",
            status,
            None,
            f"no backup in {backup_dir}; data first written {_age(age)} ago{note}",
        )
    age = max(0.0, now - newest.created_at.timestamp())
    status = _grade(age, t.backup_warn_age_s, t.backup_fail_age_s)
    if broken and status == "ok":
        status = "warn"
    return HealthItem(
        "backup", status, round(age, 3), f"newest {newest.name}, {_age(age)} old{note}"
    )


def _disk_item(path: Path, t: Thresholds) -> HealthItem:
    directory = path.absolute().parent
    try:
        usage = shutil.disk_usage(directory)
        size = path.stat().st_size if path.exists() else 0
    except OSError as exc:  # the directory is missing or unreadable: report, never raise
        return HealthItem(
            "disk", "fail", None, f"cannot read the disk of {str(directory)!r}: {exc.strerror}"
        )
    ratio = usage.free / usage.total if usage.total else 0.0
    if ratio < t.disk_fail_free_ratio or usage.free < size:
        status: Status = "fail"
    elif ratio < t.disk_warn_free_ratio:
        status = "warn"
    else:
        status = "ok"
    return HealthItem(
        "disk",
        status,
        usage.free,
        f"{usage.free / (1 << 30):.1f} GiB free ({ratio:.0%}); the database is "
        f"{size / _MIB:.1f} MiB",
    )


def health(
    path: str | Path | PostgresUrl,
    *,
    settings: Settings | None = None,
    backup_dir: str | Path | None = None,
    thresholds: Thresholds | None = None,
    clock: Callable[[], float] = time.time,
) -> HealthReport:
    """Look at the database, its WAL, its newest backup, its queue and its disk.

    Args:
        path: the database file, or a PostgreSQL URL (then: connections,
            replication and WAL held by slots instead of the WAL file and the disk).
        settings: pragmas and ``backup_dir``.
        backup_dir: where backups are; default :func:`~abathur.ops.backup.backup_dir_for`.
        thresholds: where ok turns to warn and fail.
        clock: the current time (tests pass a fixed one).

    Returns:
        A :class:`HealthReport`. A missing or unreadable file is a ``fail``
        item, not an exception: health reports, it does not raise.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.health import health
        >>> report = health(pathlib.Path(tempfile.mkdtemp()) / "missing.db")
        >>> report.status, report.items[0].detail
        ('fail', "no database at '...missing.db'")
    """
    settings = settings or Settings()
    t = thresholds or Thresholds()
    now = clock()
    if isinstance(path, PostgresUrl):
        return _server_health(path, settings, backup_dir, t, now)
    path = Path(path)
    directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(path, settings)
    db_items, probe = _database_items(path, settings, t, now)
    first_write = probe.first_write if probe is not None else None
    items = [
        db_items[0],
        _wal_item(path, t),
        _backup_item(path, directory, t, now, first_write),
        *db_items[1:],
        _disk_item(path, t),
    ]
    env = check_environment()
    versions = {
        "abathur": __version__,
        "sqlite": env.sqlite,
        "sqlite_vec": env.sqlite_vec,
        "apsw": env.apsw,
        "aiosqlite": env.aiosqlite,
    }
    worst = max((i.status for i in items), key=_RANK.__getitem__)
    return HealthReport(path, worst, tuple(items), versions)


def _server_items(stats: ServerStats, t: Thresholds) -> list[HealthItem]:
    """What only a server has: connections, replication lag, WAL held back by slots."""
    used = stats.server_connections
    ratio = used / stats.max_connections if stats.max_connections else 0.0
    here = ", ".join(f"{n} {state}" for state, n in sorted(stats.connections.items())) or "none"
    items = [
        HealthItem(
            "connections",
            _grade(ratio, t.connections_warn_ratio, t.connections_fail_ratio),
            used,
            f"{used} of max_connections {stats.max_connections} in use ({ratio:.0%}); "
            f"this database: {here}",
        )
    ]
    if stats.replication_lag_s is not None:
        worst = max(stats.replication_lag_s.values(), default=0.0)
        who = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(stats.replication_lag_s.items()))
        what = "this standby replays" if stats.in_recovery else "standby replay lag"
        items.append(
            HealthItem(
                "replication",
                _grade(worst, t.replication_warn_lag_s, t.replication_fail_lag_s),
                round(worst, 3),
                f"{what}: {who}",
            )
        )
    held = max(stats.slot_retained_bytes.values(), default=0)
    wal = (
        f"pg_wal {stats.wal_bytes / _MIB:.1f} MiB"
        if stats.wal_bytes is not None
        else "pg_wal size not readable by this role (pg_monitor can)"
    )
    slots = (
        ", ".join(
            f"{n} holds {b / _MIB:.1f} MiB" for n, b in sorted(stats.slot_retained_bytes.items())
        )
        or "no replication slot holds WAL back"
    )
    items.append(
        HealthItem(
            "wal", _grade(held, t.slot_warn_bytes, t.slot_fail_bytes), held, f"{wal}; {slots}"
        )
    )
    return items


def _server_health(
    url: PostgresUrl,
    settings: Settings,
    backup_dir: str | Path | None,
    t: Thresholds,
    now: float,
) -> HealthReport:
    """:func:`health` of a PostgreSQL database: no file, WAL file or disk of ours to look at."""
    directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(url, settings)
    db_items, probe = _database_items(url, settings, t, now)
    stats = probe.server if probe is not None else None
    items = [db_items[0]]
    if stats is not None:
        items += _server_items(stats, t)
    items.append(
        _backup_item(
            url,
            directory,
            t,
            now,
            probe.first_write if probe is not None else None,
            stats.last_backup_at if stats is not None else None,
        )
    )
    items += db_items[1:]
    versions = {"abathur": __version__}
    if stats is not None:
        versions |= {"postgres": stats.server_version, "pgvector": stats.pgvector_version}
    try:
        from abathur.backends.postgres.connection import driver_versions

        versions["psycopg"], versions["psycopg_pool"] = driver_versions()
    except ImportError:  # the postgres extra is missing: the database item said so
        pass
    worst = max((i.status for i in items), key=_RANK.__getitem__)
    return HealthReport(url, worst, tuple(items), versions)

"""Restore a backup over a database file: verify first, swap atomically, check after.

The order is what makes it safe:

1. A symlinked target is resolved: the file the link points to is restored,
   and the link stays a link.
2. The target is locked before anything is written beside it: a connection in
   ``locking_mode=EXCLUSIVE`` takes an exclusive lock, which only reads. In WAL
   mode every open connection keeps a SHARED lock on the database file from
   its first read until it closes, so this is refused exactly when another
   connection (in this process or another) has the file open:
   :class:`~abathur.errors.DatabaseInUseError`, unless ``force``. The lock is
   held until after the rename, so nothing opens the file in between.
3. The backup is verified completely (checksum, bounded decompression,
   integrity, schema, contents against the manifest) while it is decompressed
   *beside* the target, so the final rename stays on one filesystem. Any
   failure removes the copy and leaves the target byte for byte as it was.
4. Under the lock, the target switches to ``journal_mode=DELETE``, which
   checkpoints the WAL into the file and removes ``-wal`` and ``-shm``, so the
   file kept aside is complete on its own and no stale WAL is left to be
   mistaken for the new file's.
5. The old file is kept aside (``FILE.replaced-<time>``, a hard link to the
   real file, else a copy) and the verified copy is renamed over the target,
   then the directory is fsynced.
6. ``check`` (quick) runs on the restored file.

Stop the application before restoring: a process that opens the file during
the few milliseconds of the swap is not something a file lock can prevent.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.backup import create_backup
    >>> from abathur.ops.restore import restore_backup
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none") as ab:
    ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
    >>> asyncio.run(create())
    >>> made = create_backup(path)
    >>> restored = restore_backup(made.data_path, target=path.parent / "restored.db")
    >>> restored.check.is_ok, restored.replaced
    (True, None)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from abathur.backends.sqlite.files import wal_path
from abathur.config import PostgresUrl, Settings
from abathur.errors import DatabaseError, DatabaseInUseError, InvalidInputError
from abathur.ops.backup import (
    Backup,
    Manifest,
    fsync_dir,
    verified_copy,
    verified_server_copy,
)
from abathur.ops.files import ops_kit
from abathur.ops.integrity import CheckReport, run_checks
from abathur.ops.tempfiles import remove_stale_temps
from abathur.stores.ops import StorageLock

__all__ = ["RestoreResult", "is_in_use", "restore_backup"]

log = structlog.get_logger(__name__)

# Long enough to ride out another connection's short transaction (a read,
# a commit); an application that simply has the file open holds its lock for
# as long as it runs, so waiting longer would not help.
LOCK_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did."""

    target: Path | PostgresUrl
    backup: Backup
    manifest: Manifest
    replaced: Path | str | None  # the old file, or (PostgreSQL) the old database's new name
    forced: bool
    check: CheckReport
    seconds: float
    removed_temps: tuple[Path, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The result as ``abathur restore --json`` prints it."""
        return {
            "target": str(self.target)
            if isinstance(self.target, PostgresUrl)
            else str(self.target.absolute()),
            "backup": str(self.backup.data_path.absolute()),
            "replaced": None if self.replaced is None else str(self.replaced),
            "forced": self.forced,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.model_dump(mode="json"),
            "check": self.check.to_dict(),
            "removed_temps": [str(p) for p in self.removed_temps],
        }


def is_in_use(path: str | Path, *, timeout_ms: int = 0) -> bool:
    """True when another connection has the database at ``path`` open.

    The probe changes nothing in the file; it is the lock :func:`restore_backup`
    takes before it writes anything.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.ops.restore import is_in_use
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
        >>> async def probe():
        ...     async with Abathur.open(path, embedder="none"):
        ...         return await asyncio.to_thread(is_in_use, path)
        >>> asyncio.run(probe()), is_in_use(path)
        (True, False)
    """
    try:
        ops_kit(Path(path)).lock_exclusive(Path(path), timeout_ms).close()
    except DatabaseInUseError:
        return True
    return False


def _real_target(target: Path) -> Path:
    """The file a restore must replace: the end of ``target``'s symlinks, if it is one.

    Renaming over a symlink would replace the link with a regular file and
    leave the real database, which the application opens, with the old data.
    """
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if real.is_symlink():
        # realpath stops where links go round in a circle.
        raise InvalidInputError(f"restore target {str(target)!r} is a symlink loop")
    log.info("restore.symlink", link=str(target), target=str(real))
    return real


def _set_aside(target: Path, replaced: Path) -> None:
    try:
        # A hard link keeps the old inode under a new name without copying it.
        os.link(target, replaced)
    except OSError:
        shutil.copy2(target, replaced)
        with open(replaced, "rb+") as f:
            os.fsync(f.fileno())


def _move_sidecars(target: Path, replaced: Path) -> None:
    """Move a stale (or forced-over) ``-wal`` aside with the old file; drop its ``-shm``."""
    wal, shm = wal_path(target), target.with_name(target.name + "-shm")
    if wal.exists():
        os.replace(wal, wal_path(replaced))
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()


def restore_backup(
    file: str | Path,
    *,
    target: str | Path | PostgresUrl,
    settings: Settings | None = None,
    force: bool = False,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
) -> RestoreResult:
    """Verify a backup, then atomically replace ``target`` with it, keeping the old file aside.

    Args:
        file: the backup's ``.db.zst`` (or ``.manifest.json``) file.
        target: the database file to create or replace, or a PostgreSQL URL: then
            the backup (of a PostgreSQL database) is restored into a new database
            on that server, checked, and renamed to the URL's database, the old
            one renamed aside (``<name>_replaced_<time>``); nothing connected to
            it may stay connected unless ``force``, which ends those connections.
        settings: pragmas for the connections that check the files.
        force: replace ``target`` even when another connection has it open (its
            ``-wal`` is moved aside with it), or when it is not a database.
        lock_timeout_ms: how long to wait for other connections' locks to clear.

    Returns:
        A :class:`RestoreResult`; ``replaced`` is where the old file was kept
        (``None`` when there was none) and ``check`` the report of a quick
        ``abathur check`` of the restored file.

    Raises:
        CorruptBackupError: the backup failed verification; nothing was changed.
        DatabaseInUseError: ``target`` is open elsewhere and ``force`` is false;
            nothing was changed.
        InvalidInputError: ``target`` is a directory.
        DatabaseError: ``target``'s directory is missing, or a file operation failed.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.restore import restore_backup
        >>> restore_backup("nightly.txt", target=pathlib.Path(tempfile.mkdtemp()) / "x.db")
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: 'nightly.txt' is not a backup: ...
    """
    settings = settings or Settings()
    if isinstance(target, PostgresUrl):
        return _restore_server(Path(file), target, settings, force)
    file, target = Path(file), _real_target(Path(target))
    started = time.perf_counter()
    if target.is_dir():
        raise InvalidInputError(f"restore target {str(target)!r} is a directory, not a file")
    if not target.parent.is_dir():
        raise DatabaseError(f"cannot restore to {str(target)!r}: its directory does not exist")
    # What killed restores left beside the target (their owner is gone).
    removed = tuple(remove_stale_temps(target.parent))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    tmp = target.with_name(f".{target.name}.restore-{stamp}.tmp")
    replaced: Path | None = None
    forced = False
    lock: StorageLock | None = None
    # Lock first, before a single byte is written beside the target: a database
    # in use is refused without decompressing anything, and no process can open
    # it between the verification and the swap.
    if target.exists():
        try:
            lock = ops_kit(target).lock_exclusive(target, lock_timeout_ms)
        except DatabaseError:
            if not force:
                raise
            forced = True
    try:
        with verified_copy(file, tmp, settings) as (backup, manifest, _checks):
            try:
                if target.exists():
                    if lock is not None:
                        lock.settle()
                    replaced = target.with_name(f"{target.name}.replaced-{stamp}")
                    _set_aside(target, replaced)
                    # Under the lock the switch to DELETE mode removed them; with
                    # --force they may belong to a live process: keep them with the old file.
                    _move_sidecars(target, replaced)
                os.replace(tmp, target)
                fsync_dir(target.parent)
            except OSError as exc:
                raise DatabaseError(f"restoring {file} to {target} failed: {exc}") from exc
    finally:
        if lock is not None:
            lock.close()
    # verify_backup already ran the full integrity_check on these very bytes.
    report = run_checks(target, quick=True, settings=settings)
    result = RestoreResult(
        target,
        backup,
        manifest,
        replaced,
        forced,
        report,
        time.perf_counter() - started,
        removed + report.removed_temps,
    )
    log.info(
        "backup.restored",
        backup=str(backup.data_path),
        target=str(target),
        replaced=str(replaced) if replaced else None,
        forced=forced,
        check_ok=report.is_ok,
        seconds=round(result.seconds, 3),
    )
    return result


def _restore_server(file: Path, url: PostgresUrl, settings: Settings, force: bool) -> RestoreResult:
    """:func:`restore_backup` to a PostgreSQL database (see there)."""
    from abathur.backends.postgres import ops as pg

    started = time.perf_counter()
    target = pg.database_name(url)
    # In use: refused before anything is decompressed or created, as for a file.
    others = pg.other_connections(url, settings, target)
    if others and not force:
        raise DatabaseInUseError(
            f"database {target!r} has {others} other connection(s): stop the application "
            "first, or pass --force to end them and replace it anyway"
        )
    directory = file.absolute().parent
    removed = tuple(remove_stale_temps(directory))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = directory / f".{file.name}.verify-{os.getpid()}-{time.monotonic_ns()}.tmp"
    with verified_server_copy(file, out_path, settings, url, tag=f"restore_{stamp}") as (
        backup,
        manifest,
        _checks,
        scratch,
    ):
        assert scratch is not None  # a server was given
        replaced = pg.swap_databases(
            url, settings, new=scratch, target=target, tag=f"replaced_{stamp}", force=force
        )
    report = run_checks(url, quick=True, settings=settings)
    result = RestoreResult(
        url,
        backup,
        manifest,
        replaced,
        bool(others),
        report,
        time.perf_counter() - started,
        removed,
    )
    log.info(
        "backup.restored",
        backup=str(backup.data_path),
        target=str(url),
        replaced=replaced,
        forced=bool(others),
        check_ok=report.is_ok,
        seconds=round(result.seconds, 3),
    )
    return result

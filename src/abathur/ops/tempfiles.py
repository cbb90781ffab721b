"""Temporary files of backups, verifies and restores, and removing the ones left by the dead.

A backup writes ``.NAME.db.tmp`` (the raw copy, plus SQLite's ``-journal``),
``.NAME.db.zst.tmp`` and ``.NAME.manifest.json.tmp``; a verify
``.FILE.verify-PID-NS.tmp``; a restore ``.TARGET.restore-STAMP.tmp`` beside the
target. A process killed mid-way leaves them behind, hidden and as large as
the database.

Liveness is an ``flock``: the owner holds ``LOCK_EX`` on each temp from the
moment it exists until it is removed, and the kernel drops the lock when the
process dies however it dies (``kill -9``, OOM, power loss). So
:func:`remove_stale_temps` removes exactly the temps it can lock: their owner
is gone. To close the gap between a temp's creation and its lock, creating a
temp holds a shared ``flock`` on the directory and the sweep an exclusive one.
A temp of an older abathur (which took no lock) counts as stale.

Linux only: there ``flock`` and the POSIX locks SQLite takes on the same file
are independent. On the BSDs and macOS they can conflict, so a lock on a temp
that SQLite writes would make SQLite's own locking fail; there, temps are not
locked and the sweep removes nothing (never a live temp).

Example:
    >>> import tempfile, pathlib
    >>> from abathur.ops.tempfiles import owned_temp, remove_stale_temps
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with owned_temp(d / ".agent-20260315T020000.000000Z.db.tmp") as tmp:
    ...     remove_stale_temps(d)  # its owner (this process) is alive
    []
    >>> _ = (d / ".agent-20260315T020000.000000Z.db.zst.tmp").write_bytes(b"left by kill -9")
    >>> [p.name for p in remove_stale_temps(d)]
    ['.agent-20260315T020000.000000Z.db.zst.tmp']
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

if sys.platform.startswith("linux"):
    import fcntl
else:  # pragma: no cover - see the module doc: no flock, so no sweeping either
    fcntl = None  # type: ignore[assignment]

__all__ = ["SIDECAR_SUFFIXES", "TEMP_NAME", "is_temp_name", "owned_temp", "remove_stale_temps"]

log = structlog.get_logger(__name__)

SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm")

_STAMP = r"\d{8}T\d{6}\.\d{6}Z"
# Only names abathur itself makes, so a sweep never touches a stranger's file.
TEMP_NAME = re.compile(
    r"^\..+(?:"
    rf"-{_STAMP}\.(?:db\.tmp|db\.zst\.tmp|manifest\.json\.tmp)"  # create_backup
    r"|\.(?:db\.zst|manifest\.json)\.verify-\d+-\d+\.tmp"  # verify_backup
    rf"|\.restore-{_STAMP}\.tmp"  # restore_backup
    r")$"
)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of abathur's temporary files (or one's SQLite sidecar)."""
    for suffix in SIDECAR_SUFFIXES:
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    return TEMP_NAME.match(name) is not None


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in SIDECAR_SUFFIXES]


@contextlib.contextmanager
def _directory_lock(directory: Path, operation: int) -> Iterator[bool]:
    """Hold ``flock(operation)`` on the directory itself; yield False when it cannot be had."""
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, operation)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def owned_temp(path: Path) -> Iterator[Path]:
    """Create ``path`` (empty) and hold an ``flock`` on it until the block ends, then remove it.

    Its mode is what ``open(path, "wb")`` would give (0666 less the umask),
    so backups keep the permissions they had before temps were locked.
    Write to it by name (``open(path, "wb")``, SQLite): the lock is on the file,
    not on this descriptor's offset. If the block renamed it into place, the
    rename stands; otherwise it is removed with its SQLite sidecars, before
    the lock is released, so no sweep ever sees it unlocked.

    Raises:
        FileExistsError: ``path`` exists already.
        OSError: it cannot be created.
    """
    if fcntl is None:  # pragma: no cover
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    else:
        with _directory_lock(path.parent, fcntl.LOCK_SH):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        for p in (path, *_sidecars(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        os.close(fd)


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Remove abathur's temporary files in ``directory`` whose owner process is dead.

    A temp is stale when no process holds its ``flock`` (see the module doc);
    SQLite sidecars (``-journal``, ``-wal``, ``-shm``) go with their temp, or
    alone when their temp is gone. Temps of live backups, verifies and
    restores, in this process or any other, are left alone. Only names that
    abathur makes are considered (:data:`TEMP_NAME`). Returns what was
    removed (nothing when the directory is missing or cannot be locked, or
    where ``flock`` does not exist).

    Example:
        >>> import tempfile
        >>> from abathur.ops.tempfiles import remove_stale_temps
        >>> remove_stale_temps(tempfile.mkdtemp())
        []
    """
    directory = Path(directory)
    if fcntl is None or not directory.is_dir():
        return []
    removed: list[Path] = []
    freed = 0
    with _directory_lock(directory, fcntl.LOCK_EX) as locked:
        if not locked:
            return []
        try:
            names = sorted(n for n in os.listdir(directory) if is_temp_name(n))
        except OSError:
            return []
        bases = [n for n in names if TEMP_NAME.match(n)]
        for name in bases:
            path = directory / name
            try:
                # O_NOFOLLOW: a symlink named like a temp is not ours to follow.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # held: its owner is alive
                for p in (path, *_sidecars(path)):
                    freed += _unlink(p, removed)
            finally:
                os.close(fd)
        for name in names:
            if name in bases:
                continue
            base = directory / re.sub(r"-(?:journal|wal|shm)$", "", name)
            if not base.exists():
                freed += _unlink(directory / name, removed)
    if removed:
        log.warning(
            "temps.removed_stale",
            directory=str(directory),
            files=[p.name for p in removed],
            bytes=freed,
        )
    return removed


def _unlink(path: Path, removed: list[Path]) -> int:
    try:
        size = path.lstat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("temps.cannot_remove", path=str(path), error=str(exc))
        return 0
    removed.append(path)
    return size

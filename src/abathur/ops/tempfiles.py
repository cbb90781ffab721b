"""Temporary files of backups, verifies and restores, and removing the ones left by the dead.

A backup writes ``.NAME.db.tmp`` (the raw copy, plus SQLite's ``-journal``),
``.NAME.db.zst.tmp`` and ``.NAME.manifest.json.tmp``; a verify
``.FILE.verify-PID-NS.tmp``; a restore ``.TARGET.restore-STAMP.tmp`` beside the
target. A process killed mid-way leaves them behind, hidden and as large as
the database.

Liveness is an ``flock``: the owner holds ``LOCK_EX`` on a companion file,
``TEMP-lock``, from before the temp exists until after it is removed, and the
kernel drops the lock when the process dies however it dies (``kill -9``,
OOM). So :func:`remove_stale_temps` removes exactly the temps whose lock it
can take: their owner is gone. The lock is on a file of its own, never on the
temp, because SQLite writes some temps and its POSIX locks may conflict with
an ``flock`` on the same file (BSD, macOS, NFS). To close the gap between
creating a lock file and locking it, creating holds a shared ``flock`` on the
directory and the sweep an exclusive one. A temp without a lock file (from an
older abathur) counts as stale; where the directory cannot be locked, the
sweep removes nothing rather than guess.

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
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no flock, so no sweeping either
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_SUFFIX",
    "SIDECAR_SUFFIXES",
    "TEMP_NAME",
    "is_temp_name",
    "owned_temp",
    "remove_stale_temps",
]

log = structlog.get_logger(__name__)

SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm")
LOCK_SUFFIX = "-lock"

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
    """Whether ``name`` is one of abathur's temporary files, a SQLite sidecar or a lock of one."""
    for suffix in (*SIDECAR_SUFFIXES, LOCK_SUFFIX):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    return TEMP_NAME.match(name) is not None


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in SIDECAR_SUFFIXES]


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


# The directory lock is only ever held for microseconds (a create) or
# milliseconds (a sweep), so a longer wait means its holder is stopped or hung:
# then a creator goes on without it and a sweep is skipped, never blocked.
_DIRECTORY_LOCK_WAIT_S = 2.0


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
        deadline = time.monotonic() + _DIRECTORY_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("temps.directory_lock_busy", directory=str(directory))
                    yield False
                    return
                time.sleep(0.005)
            except OSError:
                yield False
                return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def owned_temp(path: Path) -> Iterator[Path]:
    """Create ``path`` (empty), locked as alive until the block ends, then remove it.

    Write to it by name (``open(path, "wb")``, SQLite). Its mode is what
    ``open(path, "wb")`` would give (0666 less the umask), so backups keep
    the permissions they had. If the block renamed it into place, the rename
    stands; otherwise it is removed with its SQLite sidecars. Its lock file
    goes last, so no sweep ever sees the temp without a held lock.

    Raises:
        FileExistsError: ``path`` exists already.
        OSError: it cannot be created.
    """
    lock = _lock_path(path)
    lock_fd: int | None = None
    with _directory_lock(path.parent, fcntl.LOCK_SH if fcntl else 0):
        if fcntl is not None:
            lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666))
        except BaseException:
            _release(lock, lock_fd)
            raise
    try:
        yield path
    finally:
        for p in (path, *_sidecars(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        _release(lock, lock_fd)


def _release(lock: Path, lock_fd: int | None) -> None:
    if lock_fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    os.close(lock_fd)


def _take_lock(lock: Path) -> int | None:
    """An fd holding ``lock``'s flock when its owner is gone; None while it lives (or unsure)."""
    assert fcntl is not None
    try:
        # O_NOFOLLOW: a symlink named like ours is not ours to follow.
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
    except OSError:
        pass  # held: its owner is alive
    os.close(fd)
    return None


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Remove abathur's temporary files in ``directory`` whose owner process is dead.

    A temp is stale when no process holds its lock (see the module doc); its
    SQLite sidecars (``-journal``, ``-wal``, ``-shm``) and its lock file go
    with it, or alone when the temp is gone. Temps of live backups, verifies
    and restores, in this process or any other, are left alone. Only names
    that abathur makes are considered (:data:`TEMP_NAME`); symlinks and
    directories never. Returns what was removed (nothing when the directory
    is missing or cannot be locked).

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
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue
            lock = _lock_path(path)
            lock_fd = None
            if lock.name in names:
                lock_fd = _take_lock(lock)
                if lock_fd is None:
                    continue
            try:
                for p in (path, *_sidecars(path), lock):
                    freed += _unlink(p, removed)
            finally:
                if lock_fd is not None:
                    os.close(lock_fd)
        for name in names:
            path = directory / name
            base = directory / re.sub(r"-(?:journal|wal|shm|lock)$", "", name)
            if name in bases or not os.path.lexists(path) or os.path.lexists(base):
                continue  # a temp (done above), removed with one, or one's that lives
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue
            # A sidecar without its temp (renamed, or removed first) is stale
            # only when the temp's lock is gone or free.
            lock = _lock_path(base)
            lock_fd = _take_lock(lock) if os.path.lexists(lock) else None
            if os.path.lexists(lock) and lock_fd is None:
                continue
            try:
                freed += _unlink(path, removed)
            finally:
                if lock_fd is not None:
                    os.close(lock_fd)
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

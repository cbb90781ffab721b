"""Online backups: one consistent copy, verified, compressed, with a manifest.

:func:`create_backup` copies the live file with SQLite's online backup API in
one step (``step(-1)``): the copy is a single snapshot taken under one read
transaction, so a busy writer can neither corrupt it nor make it restart
forever, as incremental stepping would. The copy is checked
(``integrity_check`` with sqlite-vec loaded), compressed with zstandard, and
described by a manifest (checksums, sizes, versions, ``user_version``, row
counts, the audit chain's head). Both files are written under temporary names,
fsynced and renamed into place; the manifest is renamed last, so a backup
exists exactly when its manifest does.

With a backup key configured (:mod:`abathur.ops.backup_key`) the manifest is
``abathur-backup/2`` and carries an HMAC-SHA256 over its fields, so a backup
edited after the fact is rejected even when its checksums were recomputed;
without one it is ``abathur-backup/1``, only checksummed, as before. Every
temporary file is held with an ``flock`` while in use, and each backup or
verify first removes the temporary files of killed runs
(:func:`abathur.ops.tempfiles.remove_stale_temps`). Free space is checked up
front, and running out is :class:`~abathur.errors.BackupSpaceError`
(``backup.no_space``) with nothing left behind.

A backup ``NAME`` is two files in the backup directory::

    agent-20260315T020000.123456Z.db.zst          the compressed database
    agent-20260315T020000.123456Z.manifest.json   what it holds and its checksums

:func:`verify_backup` re-checks everything a restore relies on;
:func:`plan_retention` and :func:`prune_backups` keep N daily, weekly and
monthly backups (grandfather-father-son).

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> from abathur.ops.backup import create_backup, verify_backup
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
    >>> async def create():
    ...     async with Abathur.open(path, embedder="none") as ab:
    ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
    >>> asyncio.run(create())
    >>> made = create_backup(path)
    >>> made.data_path.parent == path.parent / "backups", made.manifest.row_counts["memories"]
    (True, 1)
    >>> verify_backup(made.data_path).manifest.sha256 == made.manifest.sha256
    True
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, Literal, cast

import structlog
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from abathur import __version__
from abathur.backends.sqlite.connection import check_environment
from abathur.backends.sqlite.files import wal_path
from abathur.config import PostgresUrl, Settings
from abathur.errors import (
    BackupKeyError,
    BackupSpaceError,
    CorruptBackupError,
    DatabaseError,
    InvalidInputError,
)
from abathur.ops.backup_key import BackupKey, hmac_matches, load_backup_key, manifest_hmac
from abathur.ops.files import ops_kit
from abathur.ops.tempfiles import owned_temp, remove_stale_temps
from abathur.stores.ops import CopyReport, StorageFullError

__all__ = [
    "DATA_SUFFIX",
    "FORMAT",
    "FORMAT_AUTHENTICATED",
    "MANIFEST_SUFFIX",
    "PIN_SUFFIX",
    "Backup",
    "Manifest",
    "Retention",
    "RetentionPlan",
    "VerifiedBackup",
    "backup_dir_for",
    "backup_label",
    "check_backup_label",
    "create_backup",
    "fsync_dir",
    "latest_backup",
    "list_backups",
    "pin_backup",
    "plan_retention",
    "prune_backups",
    "remove_stale_temps",
    "unpin_backup",
    "verified_copy",
    "verified_server_copy",
    "verify_backup",
]

log = structlog.get_logger(__name__)

FORMAT: Final = "abathur-backup/1"
# Written only with a key, so an older abathur refuses what it cannot authenticate
# instead of restoring it unchecked; /1 manifests are still read.
FORMAT_AUTHENTICATED: Final = "abathur-backup/2"
DATA_SUFFIX = ".db.zst"
MANIFEST_SUFFIX = ".manifest.json"
# A pin (issue 12): a sidecar, not a manifest field, so pinning and unpinning
# never rewrite a manifest or its HMAC. It only decides what retention keeps.
PIN_SUFFIX = ".pin.json"
MAX_LABEL_CHARS = 200

# Level 3 is zstd's default: most of the ratio of level 19 at a fraction of the
# time; the frame carries its own checksum and the content size.
_LEVEL = 3
_CHUNK = 1 << 20


class Manifest(BaseModel):
    """What a backup holds, written beside it as JSON; every field is checked on verify."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["abathur-backup/1", "abathur-backup/2"] = FORMAT
    file: str = Field(description="Name of the compressed database file, in the same directory.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the compressed file.")
    compressed_bytes: int = Field(ge=0)
    raw_bytes: int = Field(ge=0)
    raw_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the database itself.")
    created_at: datetime
    source: str = Field(
        description="Absolute path of the database that was backed up (PostgreSQL: its URL, "
        "without the password)."
    )
    abathur_version: str
    # A SQLite backup's manifest never has the keys below whose value is None,
    # nor "backend": it is byte for byte what it was before PostgreSQL (issue 14).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    sqlite_version: str | None = None
    sqlite_vec_version: str | None = None
    postgres_version: str | None = None
    pgvector_version: str | None = None
    database: str | None = Field(
        default=None, description="PostgreSQL: the name of the database that was dumped."
    )
    user_version: int = Field(description="The schema version (PostgreSQL: schema_migrations).")
    page_size: int | None = None
    row_counts: dict[str, int]
    audit_head_seq: int
    audit_head_hash: str
    integrity_check: Literal["ok"] = "ok"
    key_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{8}$",
        description="abathur-backup/2: which key made the HMAC (sha256 of the key, 8 hex).",
    )
    hmac: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="abathur-backup/2: HMAC-SHA256 of every other field, as canonical JSON.",
    )

    @model_validator(mode="after")
    def _fields_of_its_backend(self) -> Manifest:
        sqlite = (self.sqlite_version, self.sqlite_vec_version, self.page_size)
        postgres = (self.postgres_version, self.pgvector_version, self.database)
        if self.backend == "sqlite" and (None in sqlite or postgres != (None, None, None)):
            raise ValueError(
                "a SQLite backup's manifest has sqlite_version, sqlite_vec_version and "
                "page_size, and no PostgreSQL fields"
            )
        if self.backend == "postgres" and (None in postgres or sqlite != (None, None, None)):
            raise ValueError(
                "a PostgreSQL backup's manifest has postgres_version, pgvector_version and "
                "database, and no SQLite fields"
            )
        return self

    @model_validator(mode="after")
    def _authenticated_exactly_when_v2(self) -> Manifest:
        signed = self.key_id is not None and self.hmac is not None
        if self.format == FORMAT_AUTHENTICATED and not signed:
            raise ValueError(f"a {FORMAT_AUTHENTICATED} manifest needs key_id and hmac")
        if self.format == FORMAT and (self.key_id is not None or self.hmac is not None):
            raise ValueError(f"a {FORMAT} manifest has no key_id or hmac")
        return self

    @property
    def is_authenticated(self) -> bool:
        """Whether the manifest carries an HMAC (``abathur-backup/2``)."""
        return self.hmac is not None


@dataclass(frozen=True)
class Backup:
    """A backup on disk: its two files and its manifest (``None`` when unreadable)."""

    manifest_path: Path
    data_path: Path
    manifest: Manifest | None
    problem: str | None = None
    # Stale temporary files of killed runs that create_backup removed first.
    removed_temps: tuple[Path, ...] = field(default=(), compare=False)
    # Set when the backup is pinned (NAME.pin.json): {"label": str | None, "pinned_at": str}.
    pin: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The common name of the two files, without suffixes."""
        return self.manifest_path.name.removesuffix(MANIFEST_SUFFIX)

    @property
    def created_at(self) -> datetime:
        """When the backup was taken (UTC)."""
        if self.manifest is None:
            raise InvalidInputError(f"backup {self.name!r} has no readable manifest")
        return self.manifest.created_at

    def to_dict(self) -> dict[str, Any]:
        """The backup as ``abathur backup list --json`` prints it."""
        return {
            "name": self.name,
            "file": str(self.data_path.absolute()),
            "manifest_file": str(self.manifest_path.absolute()),
            "problem": self.problem,
            "pin": self.pin,
            "manifest": None if self.manifest is None else self.manifest.model_dump(mode="json"),
        }

    @property
    def pin_path(self) -> Path:
        """Where the pin sidecar of this backup is (whether or not it is pinned)."""
        return self.manifest_path.with_name(self.name + PIN_SUFFIX)


def backup_dir_for(db_path: Path | PostgresUrl, settings: Settings | None = None) -> Path:
    """The default backup directory: ``Settings.backup_dir``, else ``backups/`` beside the file
    (a PostgreSQL database: ``backups/`` in the current directory)."""
    configured = (settings or Settings()).backup_dir
    if configured is not None:
        return configured
    if isinstance(db_path, PostgresUrl):
        return Path.cwd() / "backups"
    return db_path.absolute().parent / "backups"


def backup_label(db: Path | PostgresUrl) -> str:
    """What :func:`list_backups`'s ``database`` matches: a file's name, a server database's name."""
    if isinstance(db, PostgresUrl):
        from abathur.backends.postgres.ops import database_name

        return database_name(db)
    return db.name


def _label_of(manifest: Manifest) -> str:
    if manifest.backend == "postgres" and manifest.database is not None:
        return manifest.database
    return Path(manifest.source).name


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Hashing:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _sidecars(path: Path) -> tuple[Path, Path]:
    return wal_path(path), path.with_name(path.name + "-shm")


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def _write_atomically(path: Path, data: bytes) -> None:
    with owned_temp(path.with_name(f".{path.name}.tmp")) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


# ENOSPC: the disk is full; EDQUOT: the user's quota is. Either way, no space.
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, StorageFullError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None  # a missing directory: the write that follows says so


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _require_space(directory: Path, needed: int, what: str) -> None:
    """Fail early, before writing anything, when ``directory`` has less than ``needed`` free."""
    free = _free_bytes(directory)
    if free is not None and free < needed:
        raise BackupSpaceError(
            f"not enough space in {str(directory)!r} for {what}: it needs at least "
            f"{_mib(needed)} ({needed} bytes) and {_mib(free)} ({free} bytes) are free; "
            "free some space there or use another directory",
            directory=str(directory),
            needed=needed,
            free=free,
        )


def create_backup(
    db_path: str | Path | PostgresUrl,
    *,
    dest: str | Path | None = None,
    settings: Settings | None = None,
) -> Backup:
    """Take a verified, compressed backup of a (possibly live) database.

    On PostgreSQL (``db_path`` a :class:`~abathur.config.PostgresUrl`) the
    copy is ``pg_dump --format=custom`` of one exported snapshot, whose table
    of contents is checked, compressed and described by the same manifest
    (``"backend": "postgres"``, the server's versions and the database's
    name instead of SQLite's); the time of the backup is recorded in the
    database's ``meta`` table for ``abathur health``.

    Args:
        db_path: the database file, or a PostgreSQL URL; others may be writing to it.
        dest: the backup directory (created if missing); default
            :func:`backup_dir_for`.
        settings: pragmas for the isolated connections.

    Returns:
        The new :class:`Backup`. It holds every transaction committed before
        the copy started.

    Raises:
        DatabaseError: the file is missing or cannot be read, or the copy
            fails ``integrity_check`` (run ``abathur check`` on the source).
        IncompatibleEnvironmentError: SQLite < 3.51.3 or no sqlite-vec.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.ops.backup import create_backup, list_backups
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
        >>> async def create():
        ...     async with Abathur.open(path, embedder="none"):
        ...         pass
        >>> asyncio.run(create())
        >>> made = create_backup(path, dest=path.parent / "nightly")
        >>> [b.name for b in list_backups(path.parent / "nightly")] == [made.name]
        True
    """
    settings = settings or Settings()
    if isinstance(db_path, PostgresUrl):
        return _create_server_backup(db_path, dest, settings)
    db_path = Path(db_path)
    if not db_path.is_file():
        raise DatabaseError(f"no database at {str(db_path)!r}: nothing to back up")
    versions = check_environment()
    key, directory = _key_and_directory(db_path, dest, settings)
    # The backup directory holds temps of killed backups and verifies; the
    # database's own, those of killed restores.
    removed = tuple(remove_stale_temps(directory))
    if db_path.absolute().parent != directory.absolute():
        removed += tuple(remove_stale_temps(db_path.absolute().parent))
    # The raw copy is as large as the file and its WAL; the compressed file
    # comes on top, but how much smaller it is cannot be known before.
    source_bytes = _file_size(db_path) + _file_size(wal_path(db_path))
    _require_space(directory, source_bytes, f"a copy of {db_path.name}")

    kit = ops_kit(db_path)
    started = time.perf_counter()
    now = datetime.now(UTC)
    name = f"{db_path.stem}-{_stamp(now)}"
    data_path = directory / (name + DATA_SUFFIX)
    manifest_path = directory / (name + MANIFEST_SUFFIX)
    if data_path.exists() or manifest_path.exists():
        raise DatabaseError(f"backup {name!r} already exists in {str(directory)!r}")
    written = 0
    try:
        with (
            owned_temp(directory / f".{name}.db.tmp") as raw,
            owned_temp(directory / f".{name}{DATA_SUFFIX}.tmp") as data_tmp,
        ):
            try:
                kit.copy_online(db_path, raw, settings)
                contents = kit.inspect_copy(raw, what=f"the copy of {db_path}")
                if contents.integrity != ["ok"]:
                    raise DatabaseError(
                        f"the backup copy of {db_path} fails integrity_check, so the database "
                        f"itself is damaged (run 'abathur check'): {'; '.join(contents.integrity)}"
                    )
                if contents.schema_problems:
                    # verify would reject this backup: better a loud failure now than a
                    # backup that cannot be restored.
                    raise DatabaseError(
                        f"{db_path} holds schema objects its migrations do not make, so its "
                        "backup would not verify (run 'abathur check'): "
                        + "; ".join(contents.schema_problems)
                    )
                raw_sha, raw_size, sha, size = _compress(raw, data_tmp)
            except (OSError, StorageFullError) as exc:
                if _is_no_space(exc):
                    written = _file_size(raw) + _file_size(data_tmp)
                raise
            os.replace(data_tmp, data_path)
        fsync_dir(directory)
        manifest = _sign(
            Manifest(
                file=data_path.name,
                sha256=sha,
                compressed_bytes=size,
                raw_bytes=raw_size,
                raw_sha256=raw_sha,
                created_at=now,
                source=str(db_path.absolute()),
                abathur_version=__version__,
                sqlite_version=versions.sqlite,
                sqlite_vec_version=versions.sqlite_vec,
                user_version=contents.user_version,
                page_size=contents.page_size,
                row_counts=contents.row_counts,
                audit_head_seq=contents.audit_head[0],
                audit_head_hash=contents.audit_head[1],
            ),
            key,
        )
        # The manifest last: a backup exists exactly when its manifest does.
        _write_atomically(manifest_path, _manifest_bytes(manifest))
    except (OSError, StorageFullError) as exc:
        _remove(data_path)
        if _is_no_space(exc):
            free = _free_bytes(directory) or 0
            # It needed more than there was: what was free (now again) and at least the copy.
            needed = max(written, free, source_bytes) + 1
            raise BackupSpaceError(
                f"the disk holding {str(directory)!r} filled up during the backup of "
                f"{db_path.name}: a backup needs room for a copy of the database "
                f"({_mib(source_bytes)}) and its compressed file at once, and ran out after "
                f"{_mib(written)} of temporary files; {_mib(free)} ({free} bytes) are free now "
                "that they are removed. Free some space or use another --dest",
                directory=str(directory),
                needed=needed,
                free=free,
            ) from None
        raise DatabaseError(f"backup of {db_path} to {directory} failed: {exc}") from exc
    except BaseException:
        _remove(data_path)
        raise
    log.info(
        "backup.created",
        path=str(db_path),
        backup=str(data_path),
        raw_bytes=raw_size,
        compressed_bytes=size,
        authenticated=manifest.is_authenticated,
        key_id=manifest.key_id,
        seconds=round(time.perf_counter() - started, 3),
    )
    return Backup(manifest_path, data_path, manifest, removed_temps=removed)


def _file_label(label: str) -> str:
    """A database name as a file name: any character but ``[A-Za-z0-9._-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label)[:100] or "database"


def _key_and_directory(
    target: Path | PostgresUrl, dest: str | Path | None, settings: Settings
) -> tuple[BackupKey | None, Path]:
    """The backup key and the backup directory (made if missing), for either backend.

    A bad key fails the backup before anything is written, never after.
    """
    key = load_backup_key(settings)
    directory = Path(dest) if dest is not None else backup_dir_for(target, settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create backup directory {str(directory)!r}: {exc}") from exc
    if key is not None and settings.backup_key_file is not None:
        _warn_if_key_beside_backups(settings.backup_key_file, directory)
    return key, directory


def _create_server_backup(url: PostgresUrl, dest: str | Path | None, settings: Settings) -> Backup:
    """:func:`create_backup` of a PostgreSQL database (see there)."""
    from abathur.backends.postgres import ops as pg

    key, directory = _key_and_directory(url, dest, settings)
    removed = tuple(remove_stale_temps(directory))
    started = time.perf_counter()
    now = datetime.now(UTC)
    label = backup_label(url)
    name = f"{_file_label(label)}-{_stamp(now)}"
    data_path = directory / (name + DATA_SUFFIX)
    manifest_path = directory / (name + MANIFEST_SUFFIX)
    if data_path.exists() or manifest_path.exists():
        raise DatabaseError(f"backup {name!r} already exists in {str(directory)!r}")
    try:
        with (
            owned_temp(directory / f".{name}.db.tmp") as raw,
            owned_temp(directory / f".{name}{DATA_SUFFIX}.tmp") as data_tmp,
        ):
            dumped = pg.dump(url, raw, settings)
            problems = pg.check_archive(pg.read_archive(raw, what=f"the dump of {url}"))
            if problems:
                raise DatabaseError(
                    f"the dump of {url} holds objects abathur's migrations do not make, so it "
                    "would not verify (run 'abathur check'): " + "; ".join(problems[:10])
                )
            raw_sha, raw_size, sha, size = _compress(raw, data_tmp)
            os.replace(data_tmp, data_path)
        fsync_dir(directory)
        contents = dumped.contents
        manifest = _sign(
            Manifest(
                file=data_path.name,
                sha256=sha,
                compressed_bytes=size,
                raw_bytes=raw_size,
                raw_sha256=raw_sha,
                created_at=now,
                source=str(url),
                abathur_version=__version__,
                backend="postgres",
                postgres_version=dumped.server_version,
                pgvector_version=dumped.pgvector_version,
                database=label,
                user_version=contents.user_version,
                row_counts=contents.row_counts,
                audit_head_seq=contents.audit_head[0],
                audit_head_hash=contents.audit_head[1],
            ),
            key,
        )
        _write_atomically(manifest_path, _manifest_bytes(manifest))
    except OSError as exc:
        _remove(data_path)
        if _is_no_space(exc):
            free = _free_bytes(directory) or 0
            raise BackupSpaceError(
                f"the disk holding {str(directory)!r} filled up during the backup of {url}: "
                f"a backup needs room for the dump and its compressed file at once; "
                f"{_mib(free)} ({free} bytes) are free now that they are removed. Free some "
                "space or use another --dest",
                directory=str(directory),
                needed=free + 1,
                free=free,
            ) from None
        raise DatabaseError(f"backup of {url} to {directory} failed: {exc}") from exc
    except BaseException:
        _remove(data_path)
        raise
    recorded = pg.record_backup(url, settings, now.timestamp())
    log.info(
        "backup.created",
        path=str(url),
        backup=str(data_path),
        raw_bytes=raw_size,
        compressed_bytes=size,
        authenticated=manifest.is_authenticated,
        key_id=manifest.key_id,
        recorded_in_database=recorded,
        seconds=round(time.perf_counter() - started, 3),
    )
    return Backup(manifest_path, data_path, manifest, removed_temps=removed)


def _warn_if_key_beside_backups(key_file: Path, directory: Path) -> None:
    """A key stored with the backups authenticates nothing: whoever edits one can re-sign it."""
    try:
        inside = key_file.resolve().is_relative_to(directory.resolve())
    except OSError:
        return
    if inside:
        log.warning(
            "backup.key_beside_backups",
            key_file=str(key_file),
            backup_dir=str(directory),
            advice="keep the backup key where the backups are not (another host or volume)",
        )


def _sign(manifest: Manifest, key: BackupKey | None) -> Manifest:
    """The manifest as written: /1 without a key, /2 with ``key_id`` and ``hmac`` with one."""
    if key is None:
        return manifest
    fields = {
        **_manifest_fields(manifest),
        "format": FORMAT_AUTHENTICATED,
        "key_id": key.key_id,
    }
    return Manifest.model_validate({**fields, "hmac": manifest_hmac(key, fields)})


def _compress(raw: Path, out_path: Path) -> tuple[str, int, str, int]:
    raw_sha = hashlib.sha256()
    raw_size = raw.stat().st_size
    compressor = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=True, threads=-1)
    with open(raw, "rb") as src, open(out_path, "wb") as out:
        # _Hashing has the write/flush that stream_writer uses, not all of IO.
        hashing = _Hashing(out)
        sink = cast(IO[bytes], hashing)
        with compressor.stream_writer(sink, size=raw_size, closefd=False) as writer:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                raw_sha.update(chunk)
                writer.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return raw_sha.hexdigest(), raw_size, hashing.sha.hexdigest(), hashing.size


_OPTIONAL_FIELDS = (
    "key_id",
    "hmac",
    "sqlite_version",
    "sqlite_vec_version",
    "page_size",
    "postgres_version",
    "pgvector_version",
    "database",
)


def _manifest_fields(manifest: Manifest) -> dict[str, Any]:
    """The manifest as JSON fields; a /1 manifest has no ``key_id``/``hmac`` keys at all,
    and a SQLite one no ``backend`` nor PostgreSQL keys (nor the reverse)."""
    fields = manifest.model_dump(mode="json")
    for name in _OPTIONAL_FIELDS:
        if fields[name] is None:
            del fields[name]
    if fields["backend"] == "sqlite":
        del fields["backend"]
    return fields


def _manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(_manifest_fields(manifest), indent=2, sort_keys=True) + "\n").encode()


# -- finding and reading backups ------------------------------------------------------


def _paths_for(file: Path) -> tuple[Path, Path]:
    """(manifest, data) for either file of a backup."""
    name = file.name
    if name.endswith(MANIFEST_SUFFIX):
        return file, file.with_name(name.removesuffix(MANIFEST_SUFFIX) + DATA_SUFFIX)
    if name.endswith(DATA_SUFFIX):
        return file.with_name(name.removesuffix(DATA_SUFFIX) + MANIFEST_SUFFIX), file
    raise InvalidInputError(
        f"{str(file)!r} is not a backup: expected a *{DATA_SUFFIX} or *{MANIFEST_SUFFIX} file"
    )


def _read_manifest(manifest_path: Path) -> Manifest:
    return _read_manifest_document(manifest_path)[0]


def _read_manifest_document(manifest_path: Path) -> tuple[Manifest, dict[str, Any]]:
    """The manifest, and the JSON fields exactly as read: what its HMAC covers."""
    try:
        data = json.loads(manifest_path.read_text("utf-8"))
        return Manifest.model_validate(data), data
    except FileNotFoundError:
        raise CorruptBackupError(
            f"backup manifest {str(manifest_path)!r} is missing: without its checksums the "
            "backup cannot be trusted",
            reason="missing",
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise CorruptBackupError(
            f"backup manifest {str(manifest_path)!r} is invalid: "
            f"{'.'.join(map(str, first['loc'])) or 'document'}: {first['msg']}",
            reason="manifest",
        ) from None
    except (OSError, ValueError) as exc:
        raise CorruptBackupError(
            f"backup manifest {str(manifest_path)!r} is unreadable: {exc}", reason="manifest"
        ) from None


def list_backups(dest: str | Path, *, database: str | None = None) -> list[Backup]:
    """The backups in ``dest``, newest first; an unreadable one has ``problem`` set.

    Args:
        dest: the backup directory (missing: no backups).
        database: only backups of a database file with this name (e.g. ``agent.db``), or
            of a PostgreSQL database of this name (see :func:`backup_label`).

    Example:
        >>> import tempfile
        >>> from abathur.ops.backup import list_backups
        >>> list_backups(tempfile.mkdtemp())
        []
    """
    directory = Path(dest)
    if not directory.is_dir():
        return []
    found = []
    for manifest_path in directory.glob("*" + MANIFEST_SUFFIX):
        if manifest_path.name.startswith("."):
            continue  # a temporary file of a backup still being written
        _, data_path = _paths_for(manifest_path)
        try:
            manifest: Manifest | None = _read_manifest(manifest_path)
            problem = None
        except CorruptBackupError as exc:
            manifest, problem = None, exc.message
        if manifest is not None:
            if database is not None and _label_of(manifest) != database:
                continue
            if not data_path.is_file():
                problem = f"data file {data_path.name} is missing"
            elif data_path.stat().st_size != manifest.compressed_bytes:
                problem = (
                    f"data file is {data_path.stat().st_size} bytes, "
                    f"the manifest says {manifest.compressed_bytes}"
                )
        pin = _read_pin(manifest_path.with_name(_name_of(manifest_path) + PIN_SUFFIX))
        found.append(Backup(manifest_path, data_path, manifest, problem, pin=pin))
    epoch = datetime.fromtimestamp(0, UTC)
    found.sort(key=lambda b: (b.manifest.created_at if b.manifest else epoch, b.name), reverse=True)
    return found


def latest_backup(dest: str | Path, *, database: str | None = None) -> Backup | None:
    """The newest backup in ``dest`` (of ``database``) whose files look whole, or ``None``."""
    usable = [b for b in list_backups(dest, database=database) if b.problem is None]
    return usable[0] if usable else None


# -- pins -----------------------------------------------------------------------------


def _name_of(manifest_path: Path) -> str:
    return manifest_path.name.removesuffix(MANIFEST_SUFFIX)


def _read_pin(pin_path: Path) -> dict[str, Any] | None:
    """The pin of a backup, or None. An unreadable pin file still pins: keeping is safe."""
    try:
        text = pin_path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return {"label": None, "pinned_at": None, "problem": f"unreadable pin file: {exc}"}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"label": None, "pinned_at": None, "problem": "the pin file is not a JSON object"}
    label, pinned_at = data.get("label"), data.get("pinned_at")
    return {
        "label": label if isinstance(label, str) else None,
        "pinned_at": pinned_at if isinstance(pinned_at, str) else None,
    }


def check_backup_label(label: object) -> str | None:
    """``label`` if it is a usable backup label (or None), else :class:`InvalidInputError`.

    Example:
        >>> from abathur.ops.backup import check_backup_label
        >>> check_backup_label("before v2")
        'before v2'
    """
    if label is None:
        return None
    if not isinstance(label, str):
        raise InvalidInputError(f"a backup label must be a string, got {type(label).__name__}")
    if not label or label != label.strip() or len(label) > MAX_LABEL_CHARS:
        raise InvalidInputError(
            f"a backup label must be 1 to {MAX_LABEL_CHARS} characters without leading or "
            f"trailing spaces, got {label!r}"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        raise InvalidInputError(f"a backup label must not hold control characters: {label!r}")
    return label


def _backup_of(file: str | Path) -> Backup:
    """The readable backup ``file`` (its .db.zst or .manifest.json) belongs to."""
    manifest_path, data_path = _paths_for(Path(file))
    if not manifest_path.is_file():
        raise InvalidInputError(f"no backup at {str(file)!r}: {manifest_path.name} is missing")
    manifest = _read_manifest(manifest_path)
    pin = _read_pin(manifest_path.with_name(_name_of(manifest_path) + PIN_SUFFIX))
    return Backup(manifest_path, data_path, manifest, pin=pin)


def pin_backup(file: str | Path, *, label: str | None = None) -> Backup:
    """Pin a backup so retention never deletes it; ``label`` says why (re-pinning relabels).

    The pin is a sidecar, ``NAME.pin.json``, written atomically beside the
    manifest: the manifest (and its HMAC) is never rewritten, so ``backup
    verify`` and ``restore`` are unaffected. Whoever can write the backup
    directory can pin or unpin; that decides only what retention keeps.

    Args:
        file: the backup's ``.db.zst`` or ``.manifest.json``.
        label: a short note (1..200 characters, no control characters).

    Returns:
        The backup, with ``pin`` set.

    Raises:
        InvalidInputError: not a backup file, no such backup, or a bad label.
        CorruptBackupError: the backup's manifest is unreadable.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.ops.backup import create_backup, pin_backup, list_backups
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "agent.db"
        >>> async def make():
        ...     async with Abathur.open(path, embedder="none"):
        ...         pass
        >>> asyncio.run(make())
        >>> made = create_backup(path)
        >>> pin_backup(made.data_path, label="before v2").pin["label"]
        'before v2'
        >>> list_backups(made.data_path.parent)[0].pin["label"]
        'before v2'
    """
    label = check_backup_label(label)
    found = _backup_of(file)
    pin = {"label": label, "pinned_at": datetime.now(UTC).isoformat()}
    _write_atomically(found.pin_path, (json.dumps(pin, indent=2) + "\n").encode("utf-8"))
    log.info("backup.pinned", backup=found.name, label=label)
    return replace(found, pin=pin)


def unpin_backup(file: str | Path) -> Backup:
    """Remove a backup's pin: retention treats it like any other again.

    Raises:
        InvalidInputError: not a backup file, no such backup, or it is not pinned.
        CorruptBackupError: the backup's manifest is unreadable.
    """
    found = _backup_of(file)
    if found.pin is None:
        raise InvalidInputError(f"backup {found.name!r} is not pinned")
    _remove(found.pin_path)
    fsync_dir(found.pin_path.parent)
    log.info("backup.unpinned", backup=found.name)
    return replace(found, pin=None)


# -- verifying ------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBackup:
    """A backup that passed every test of :func:`verify_backup`."""

    backup: Backup
    manifest: Manifest
    seconds: float
    checks: tuple[str, ...] = field(default=())
    authenticated: bool = False
    """True when the manifest's HMAC was checked with the configured key."""
    authentication: str = "none: only checksummed"
    """One line saying what vouches for the backup, as ``backup verify`` prints it."""
    removed_temps: tuple[Path, ...] = ()
    """Stale temporary files of killed runs removed before verifying."""

    def to_dict(self) -> dict[str, Any]:
        """The result as ``abathur backup verify --json`` prints it."""
        return {
            "file": str(self.backup.data_path.absolute()),
            "manifest_file": str(self.backup.manifest_path.absolute()),
            "is_ok": True,
            "authenticated": self.authenticated,
            "key_id": self.manifest.key_id,
            "authentication": self.authentication,
            "checks": list(self.checks),
            "seconds": round(self.seconds, 3),
            "removed_temps": [str(p) for p in self.removed_temps],
            "manifest": self.manifest.model_dump(mode="json"),
        }


def _sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _decompress(data_path: Path, out_path: Path, manifest: Manifest) -> None:
    """Decompress into ``out_path``, never writing more than the manifest's ``raw_bytes``.

    A few kilobytes of zstd can expand to gigabytes (a "zip bomb"). The frame's
    declared size is checked against the manifest's ``raw_bytes`` (and the
    caller checked the free space) before anything is written, and the stream
    stops at the first byte past ``raw_bytes``, so a lying frame costs at most
    one chunk more than promised.
    """
    declared = _frame_content_size(data_path)
    if declared is not None and declared != manifest.raw_bytes:
        raise CorruptBackupError(
            f"backup {data_path.name} declares {declared} decompressed bytes, its manifest "
            f"{manifest.raw_bytes}",
            reason="checksum",
        )
    raw_sha = hashlib.sha256()
    size = 0
    try:
        with open(data_path, "rb") as src, open(out_path, "wb") as out:
            reader = zstandard.ZstdDecompressor().stream_reader(src, closefd=False)
            for chunk in iter(lambda: reader.read(_CHUNK), b""):
                size += len(chunk)
                if size > manifest.raw_bytes:
                    raise CorruptBackupError(
                        f"backup {data_path.name} decompresses to more than the "
                        f"{manifest.raw_bytes} bytes its manifest records: stopped there",
                        reason="checksum",
                    )
                raw_sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except zstandard.ZstdError as exc:
        raise CorruptBackupError(
            f"backup {data_path.name} does not decompress: {exc}", reason="decompress"
        ) from None
    if size != manifest.raw_bytes or raw_sha.hexdigest() != manifest.raw_sha256:
        raise CorruptBackupError(
            f"backup {data_path.name} decompresses to {size} bytes with a different checksum "
            f"than its manifest records ({manifest.raw_bytes} bytes)",
            reason="checksum",
        )


def _frame_content_size(data_path: Path) -> int | None:
    """The decompressed size a zstd frame declares, or ``None`` when it declares none."""
    with open(data_path, "rb") as f:
        head = f.read(18)  # the longest zstd frame header
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None  # not a frame: decompression will say so
    return None if size < 0 else int(size)


def _check_compressed(data_path: Path, manifest: Manifest) -> None:
    if not data_path.is_file():
        raise CorruptBackupError(
            f"backup data file {str(data_path)!r} is missing", reason="missing"
        )
    size = data_path.stat().st_size
    if size < manifest.compressed_bytes:
        raise CorruptBackupError(
            f"backup {data_path.name} is truncated: {size} of {manifest.compressed_bytes} bytes",
            reason="truncated",
        )
    if size != manifest.compressed_bytes:
        raise CorruptBackupError(
            f"backup {data_path.name} is {size} bytes, its manifest says "
            f"{manifest.compressed_bytes}",
            reason="checksum",
        )
    if _sha256_of(data_path) != manifest.sha256:
        raise CorruptBackupError(
            f"backup {data_path.name} does not match its manifest's sha256: the file was "
            "altered or damaged after it was written",
            reason="checksum",
        )


def _check_contents(contents: CopyReport, manifest: Manifest, name: str) -> None:
    differences = []
    if contents.user_version != manifest.user_version:
        differences.append(
            f"user_version {contents.user_version} (manifest {manifest.user_version})"
        )
    for table in sorted(set(contents.row_counts) | set(manifest.row_counts)):
        have, want = contents.row_counts.get(table), manifest.row_counts.get(table)
        if have != want:
            differences.append(f"{table}: {have} rows (manifest {want})")
    if contents.audit_head != (manifest.audit_head_seq, manifest.audit_head_hash):
        differences.append(
            f"audit head at seq {contents.audit_head[0]} (manifest {manifest.audit_head_seq})"
        )
    if differences:
        raise CorruptBackupError(
            f"backup {name} does not hold what its manifest says: " + "; ".join(differences),
            reason="mismatch",
        )


def _authenticate(
    manifest: Manifest, document: dict[str, Any], settings: Settings, name: str
) -> tuple[bool, str]:
    """Check the manifest's HMAC with the configured key: (authenticated, how it was vouched for).

    With a key, a backup without a valid HMAC of that key is refused unless
    ``settings.backup_allow_unauthenticated``; without one, an authenticated
    backup is refused likewise, since it cannot be checked.

    Raises:
        BackupKeyError: the key is unusable, missing, or not the backup's.
        CorruptBackupError: ``reason="authentication"``: the HMAC does not match,
            or there is none although a key is configured.
    """
    key = load_backup_key(settings)
    allow = settings.backup_allow_unauthenticated
    if manifest.is_authenticated:
        if key is not None and key.key_id == manifest.key_id:
            if not hmac_matches(key, document):
                raise CorruptBackupError(
                    f"backup {name} fails authentication: its manifest's HMAC does not match "
                    f"(key {key.key_id}), so the manifest or the backup it describes was altered "
                    "after it was written. Do not restore it",
                    reason="authentication",
                )
            return True, f"hmac-sha256 with key {key.key_id}"
        why = (
            "no backup key is configured"
            if key is None
            else f"the configured key is {key.key_id} (from {key.source})"
        )
        if not allow:
            raise BackupKeyError(
                f"backup {name} is authenticated with key {manifest.key_id} but {why}, so it "
                "cannot be authenticated: configure that key (ABATHUR_BACKUP_KEY_FILE or "
                "ABATHUR_BACKUP_KEY); if the key is lost, --allow-unauthenticated trusts its "
                "checksums only"
            )
        log.warning("backup.authentication_skipped", backup=name, key_id=manifest.key_id)
        return False, (
            f"none: only checksummed (signed with key {manifest.key_id}, not checked: {why}; "
            "--allow-unauthenticated)"
        )
    if key is None:
        return False, "none: only checksummed (no backup key configured)"
    if not allow:
        raise CorruptBackupError(
            f"backup {name} has no HMAC but a backup key is configured (key {key.key_id}): "
            "either it was made before the key was set up, or its authentication was "
            "stripped. Only if you know it is the former, pass --allow-unauthenticated to "
            "trust its checksums only",
            reason="authentication",
        )
    log.warning("backup.unauthenticated_allowed", backup=name, key_id=key.key_id)
    return False, "none: only checksummed (it has no HMAC; --allow-unauthenticated)"


@contextlib.contextmanager
def _decompressed(
    file: Path, out_path: Path, settings: Settings
) -> Iterator[tuple[Path, Path, Manifest, list[str]]]:
    """Authenticate the manifest, check the compressed file and decompress it to ``out_path``.

    Yields (manifest path, data path, manifest, checks passed); ``out_path``
    is held and removed afterwards unless the caller moved it away.
    """
    manifest_path, data_path = _paths_for(file)
    # Environment problems first, so they are never mistaken for a damaged backup.
    check_environment()
    manifest, document = _read_manifest_document(manifest_path)
    if manifest.file != data_path.name:
        raise CorruptBackupError(
            f"manifest {manifest_path.name} describes {manifest.file!r}, not {data_path.name!r}",
            reason="manifest",
        )
    authenticated, _ = _authenticate(manifest, document, settings, data_path.name)
    checks = [f"HMAC-SHA256 of the manifest (key {manifest.key_id})"] if authenticated else []
    _require_space(out_path.parent, manifest.raw_bytes, f"decompressing backup {data_path.name}")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(owned_temp(out_path))
            _check_compressed(data_path, manifest)
            checks.append("sha256 of the compressed file")
            _decompress(data_path, out_path, manifest)
            checks.append("decompressed size and sha256")
        except OSError as exc:
            # Not the backup's fault: a directory we cannot write, a full disk.
            if _is_no_space(exc):
                free = _free_bytes(out_path.parent)
                raise BackupSpaceError(
                    f"the disk holding {str(out_path.parent)!r} filled up while decompressing "
                    f"backup {data_path.name} ({_mib(manifest.raw_bytes)}); "
                    f"{_mib(free or 0)} are free now that the partial copy is removed. Free "
                    "some space there",
                    directory=str(out_path.parent),
                    needed=manifest.raw_bytes,
                    free=free or 0,
                ) from None
            raise DatabaseError(
                f"cannot verify backup {data_path.name} (decompressing into "
                f"{out_path.parent}): {exc}"
            ) from exc
        yield manifest_path, data_path, manifest, checks


def _check_copy(contents: CopyReport, manifest: Manifest, name: str, checks: list[str]) -> None:
    """The checks of a restored or decompressed copy against its manifest."""
    if contents.integrity != ["ok"]:
        raise CorruptBackupError(
            f"backup {name} fails integrity_check: {'; '.join(contents.integrity)}",
            reason="integrity",
        )
    checks.append("integrity_check")
    if contents.schema_problems:
        raise CorruptBackupError(
            f"backup {name} holds a schema abathur's migrations do not make, so "
            f"nothing else in it was read: {'; '.join(contents.schema_problems)}",
            reason="schema",
        )
    checks.append("schema matches the migrations")
    _check_contents(contents, manifest, name)
    checks.append("user_version, row counts and audit head match the manifest")


@contextlib.contextmanager
def verified_copy(
    file: Path, out_path: Path, settings: Settings
) -> Iterator[tuple[Backup, Manifest, list[str]]]:
    """Verify ``file`` by decompressing it to ``out_path``, then yield what was verified.

    The manifest is authenticated first (see :func:`_authenticate`), before a
    byte of the backup is read. ``out_path`` is created and ``flock``-ed here,
    so a concurrent :func:`remove_stale_temps` never takes it for a dead
    run's; it is removed afterwards unless the caller has moved it away, as
    :func:`abathur.ops.restore.restore_backup` does.

    Raises:
        CorruptBackupError: a test failed (see :func:`verify_backup`).
        BackupKeyError: the backup key is unusable or not this backup's.
        BackupSpaceError: ``out_path``'s disk has no room for the database.
        DatabaseError: the copy could not be written (directory, permissions).
        InvalidInputError: the backup is of a PostgreSQL database (see
            :func:`verified_server_copy`).
    """
    with _decompressed(file, out_path, settings) as (manifest_path, data_path, manifest, checks):
        if manifest.backend != "sqlite":
            raise InvalidInputError(
                f"backup {data_path.name} is of a PostgreSQL database: restore it to a "
                "postgresql:// URL, not a file"
            )
        try:
            contents = ops_kit(out_path).inspect_copy(out_path, what=f"backup {data_path.name}")
        except DatabaseError as exc:
            raise CorruptBackupError(
                f"backup {data_path.name} cannot be read as a database: {exc.message}",
                reason="integrity",
            ) from None
        _check_copy(contents, manifest, data_path.name, checks)
        yield Backup(manifest_path, data_path, manifest), manifest, checks


@contextlib.contextmanager
def verified_server_copy(
    file: Path, out_path: Path, settings: Settings, server: PostgresUrl | None, *, tag: str
) -> Iterator[tuple[Backup, Manifest, list[str], str | None]]:
    """Verify a PostgreSQL backup; yield it with the scratch database it was restored into.

    After the checks of the file (:func:`verified_copy`'s), the archive's
    table of contents is read and anything abathur's migrations do not make
    is refused before any of it runs. With a ``server``, the archive is then
    restored into a new scratch database there (named after the server URL's
    database and ``tag``), which is checked as a copy (every table read,
    schema, schema version, row counts and audit head against the manifest)
    and dropped afterwards unless the caller renamed it (a restore does).
    Without one, the scratch restore is left out and the checks say so.

    Raises:
        CorruptBackupError: a test failed; nothing was restored anywhere.
        InvalidInputError: the backup is of a SQLite file.
        DatabaseError: the scratch database could not be created (privileges).
    """
    from abathur.backends.postgres import ops as pg

    with _decompressed(file, out_path, settings) as (manifest_path, data_path, manifest, checks):
        name = data_path.name
        if manifest.backend != "postgres":
            raise InvalidInputError(
                f"backup {name} is of a SQLite file: restore it to a file, not a server"
            )
        try:
            entries = pg.read_archive(out_path, what=f"backup {name}")
        except DatabaseError as exc:
            raise CorruptBackupError(
                f"backup {name} cannot be read as a pg_dump archive: {exc.message}",
                reason="integrity",
            ) from None
        problems = pg.check_archive(entries)
        if problems:
            raise CorruptBackupError(
                f"backup {name} holds objects abathur's migrations do not make, so none of it "
                f"was run: {'; '.join(problems[:10])}",
                reason="schema",
            )
        checks.append("table of contents: only what abathur's migrations make")
        scratch: str | None = None
        if server is None:
            checks.append(
                "not restored, schema not compared with the migrations: no server given "
                "(--db postgresql://...)"
            )
            yield Backup(manifest_path, data_path, manifest), manifest, checks, None
            return
        try:
            checks.append(
                pg.check_schema_matches(
                    out_path,
                    server,
                    settings,
                    version=manifest.user_version,
                    what=f"backup {name}",
                    tag=tag,
                )
            )
            scratch = pg.restore_scratch(out_path, server, settings, tag=tag)
            checks.append(f"restored into scratch database {scratch}")
            contents = pg.inspect_database(server, settings, dbname=scratch)
            _check_copy(contents, manifest, name, checks)
            yield Backup(manifest_path, data_path, manifest), manifest, checks, scratch
        finally:
            if scratch is not None:
                pg.drop_database(server, settings, scratch)  # gone already if renamed


def verify_backup(
    file: str | Path,
    *,
    settings: Settings | None = None,
    work_dir: str | Path | None = None,
    server: PostgresUrl | None = None,
) -> VerifiedBackup:
    """Check a backup as a restore would: checksum, decompress, integrity, contents.

    Args:
        file: the backup's ``.db.zst`` or ``.manifest.json`` file.
        settings: pragmas for the connection that checks the copy.
        work_dir: where the database is decompressed while it is checked
            (then removed); default the backup's own directory.
        server: for a PostgreSQL backup, the server (a URL whose database
            names the scratch databases) to restore it into a scratch
            database there, check it and drop it; without one a PostgreSQL
            backup gets every check but that restore.

    Returns:
        A :class:`VerifiedBackup`.

    Raises:
        InvalidInputError: ``file`` is not named like a backup.
        CorruptBackupError: a test failed; ``reason`` is ``missing``,
            ``manifest``, ``authentication``, ``truncated``, ``checksum``,
            ``decompress``, ``integrity`` or ``mismatch``.
        BackupKeyError: the backup is authenticated but no key, or another
            key, is configured (or the key is unusable).
        BackupSpaceError: ``work_dir`` has no room for the decompressed copy.
        DatabaseError: the copy could not be written in ``work_dir``.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.backup import verify_backup
        >>> broken = pathlib.Path(tempfile.mkdtemp()) / "x-1.db.zst"
        >>> _ = broken.write_bytes(b"not zstd")
        >>> verify_backup(broken)
        Traceback (most recent call last):
        ...
        abathur.errors.CorruptBackupError: backup manifest '...x-1.manifest.json' is missing: ...
    """
    settings = settings or Settings()
    file = Path(file)
    started = time.perf_counter()
    directory = Path(work_dir) if work_dir is not None else file.absolute().parent
    removed = tuple(remove_stale_temps(directory))
    out_path = directory / f".{file.name}.verify-{os.getpid()}-{time.monotonic_ns()}.tmp"
    try:
        with contextlib.ExitStack() as stack:
            if _read_backend(file) == "postgres":
                tag = f"verify_{os.getpid()}_{time.monotonic_ns() % 10**9}"
                backup, manifest, checks, _ = stack.enter_context(
                    verified_server_copy(file, out_path, settings, server, tag=tag)
                )
            else:
                backup, manifest, checks = stack.enter_context(
                    verified_copy(file, out_path, settings)
                )
            # Passed inside verified_copy already; asked again for the words to report.
            authenticated, how = _authenticate(
                manifest, _read_manifest_document(backup.manifest_path)[1], settings, file.name
            )
            result = VerifiedBackup(
                backup,
                manifest,
                time.perf_counter() - started,
                tuple(checks),
                authenticated=authenticated,
                authentication=how,
                removed_temps=removed,
            )
    except CorruptBackupError as exc:
        log.warning("backup.rejected", file=str(file), reason=exc.reason, error=exc.message)
        raise
    log.info(
        "backup.verified",
        file=str(file),
        authenticated=result.authenticated,
        key_id=manifest.key_id,
        seconds=round(result.seconds, 3),
    )
    return result


def _read_backend(file: Path) -> str:
    """Which backend a backup is of, as its manifest says ("sqlite" when it cannot be read:
    then the verification itself reports why)."""
    try:
        manifest_path, _ = _paths_for(file)
        return _read_manifest(manifest_path).backend
    except (CorruptBackupError, InvalidInputError):
        return "sqlite"


# -- retention ------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """What retention keeps: the newest of each of the last N days, ISO weeks and months.

    As in restic's ``forget``: the periods counted are those that have a
    backup, so a machine that was off for a week still keeps N daily backups.
    Whatever those rules say, three more keep a backup (issue 12): it is one
    of the ``newest`` backups, it is younger than ``min_age_days``, or it is
    pinned (:func:`pin_backup`). So a manual backup taken before a risky
    change survives the nightly one the same day.
    """

    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    newest: int = 2
    min_age_days: float = 1.0

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly", "newest"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"keep {name} must be an integer >= 0, not {value!r}")
        age = self.min_age_days
        if (
            isinstance(age, bool)
            or not isinstance(age, int | float)
            or not math.isfinite(age)
            or age < 0
        ):
            raise InvalidInputError(f"min_age_days must be a number >= 0, not {age!r}")


@dataclass(frozen=True)
class RetentionPlan:
    """What retention keeps (with the rules that keep each) and what it deletes."""

    keep: list[tuple[Backup, list[str]]]
    delete: list[Backup]

    def to_dict(self) -> dict[str, Any]:
        """The plan as ``abathur backup --json`` prints it."""
        return {
            "keep": [{"name": b.name, "because": why} for b, why in self.keep],
            "delete": [b.name for b in self.delete],
        }


def plan_retention(
    backups: Iterable[Backup],
    keep: Retention,
    *,
    protect: Sequence[Path] = (),
    now: datetime | None = None,
) -> RetentionPlan:
    """Decide which backups grandfather-father-son retention keeps.

    Only readable backups take part; ones with a ``problem`` are neither kept
    nor deleted (an operator should look at them). A backup whose manifest is
    in ``protect`` (the one just made) is always kept, and so is each of the
    ``keep.newest`` newest (``newest``), each younger than
    ``keep.min_age_days`` at ``now`` (``young``) and each pinned one (``pinned``).

    Example:
        >>> from datetime import datetime, timedelta, UTC
        >>> from pathlib import Path
        >>> from abathur.ops.backup import Backup, Manifest, Retention, plan_retention
        >>> def at(day):
        ...     m = Manifest.model_construct(created_at=datetime(2026, 3, day, 2, tzinfo=UTC))
        ...     return Backup(Path(f"b{day}.manifest.json"), Path(f"b{day}.db.zst"), m)
        >>> plan = plan_retention([at(d) for d in range(1, 11)], Retention(3, 0, 0))
        >>> [(b.name, why) for b, why in plan.keep][:2], len(plan.delete)
        ([('b10', ['newest', 'daily']), ('b9', ['newest', 'daily'])], 7)
    """
    now = datetime.now(UTC) if now is None else now
    young_after = now - timedelta(days=keep.min_age_days)
    usable = sorted(
        (b for b in backups if b.manifest is not None and b.problem is None),
        key=lambda b: b.created_at,
        reverse=True,
    )
    reasons: dict[Path, list[str]] = {}
    protected = {p.absolute() for p in protect}
    for b in usable:
        if b.manifest_path.absolute() in protected:
            reasons.setdefault(b.manifest_path, []).append("new")
    for i, b in enumerate(usable):
        # The safety rules first: whatever the period rules say, these stay.
        why = reasons.setdefault(b.manifest_path, [])
        if b.pin is not None:
            why.append("pinned")
        if i < keep.newest:
            why.append("newest")
        if b.created_at > young_after:
            why.append("young")
        if not why:
            del reasons[b.manifest_path]
    rules = (
        ("daily", keep.daily, lambda t: t.date()),
        ("weekly", keep.weekly, lambda t: t.isocalendar()[:2]),
        ("monthly", keep.monthly, lambda t: (t.year, t.month)),
    )
    for rule, limit, period in rules:
        last, kept = None, 0
        for b in usable:
            if kept >= limit:
                break
            this = period(b.created_at.astimezone(UTC))
            if this != last:
                reasons.setdefault(b.manifest_path, []).append(rule)
                kept += 1
                last = this
    return RetentionPlan(
        keep=[(b, reasons[b.manifest_path]) for b in usable if b.manifest_path in reasons],
        delete=[b for b in usable if b.manifest_path not in reasons],
    )


def prune_backups(
    dest: str | Path,
    keep: Retention,
    *,
    database: str | None = None,
    protect: Sequence[Path] = (),
    dry_run: bool = False,
    assume_new_at: datetime | None = None,
    now: datetime | None = None,
) -> RetentionPlan:
    """Apply :func:`plan_retention` to the backups in ``dest``; with ``dry_run``, delete nothing.

    Each deleted backup loses its manifest first, then its data file, so an
    interrupted prune never leaves a manifest without its data.

    Args:
        dest: the backup directory.
        keep: how many daily, weekly and monthly backups to keep.
        database: only consider backups of a database file with this name.
        protect: manifests never deleted (the backup just made).
        dry_run: return the plan without deleting anything.
        assume_new_at: plan as if a backup taken at this time were there too
            (``abathur backup --dry-run``); it appears in the plan as ``(new)``.
        now: the time the minimum age is measured from (default: now).

    Example:
        >>> import tempfile
        >>> from abathur.ops.backup import Retention, prune_backups
        >>> prune_backups(tempfile.mkdtemp(), Retention(), dry_run=True).delete
        []
    """
    if assume_new_at is not None and not dry_run:
        raise InvalidInputError(
            "assume_new_at plans for a backup not yet taken: use it with dry_run"
        )
    backups = list_backups(dest, database=database)
    if assume_new_at is not None:
        new = Path(dest) / ("(new)" + MANIFEST_SUFFIX)
        placeholder = Manifest.model_construct(created_at=assume_new_at)
        backups.append(Backup(new, new.with_name("(new)" + DATA_SUFFIX), placeholder))
        protect = [*protect, new]
    plan = plan_retention(backups, keep, protect=protect, now=now)
    if not dry_run:
        for b in plan.delete:
            _remove(b.manifest_path)
            _remove(b.data_path)
            _remove(b.pin_path)
            log.info("backup.deleted", backup=b.name, created_at=b.created_at.isoformat())
        if plan.delete:
            fsync_dir(Path(dest))
    return plan

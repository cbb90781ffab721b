"""The backup key: HMAC-SHA256 over a backup's manifest, so a backup is tamper-evident.

A checksum only catches accidents: whoever can edit a backup can recompute its
sha256. With a key configured (``Settings.backup_key_file`` /
``ABATHUR_BACKUP_KEY_FILE``, or the key itself in ``ABATHUR_BACKUP_KEY``),
:func:`abathur.ops.backup.create_backup` writes an ``abathur-backup/2``
manifest carrying ``key_id`` and ``hmac``, and verify and restore reject a
backup whose HMAC does not match.

The HMAC covers every other field of the manifest as canonical JSON (sorted
keys, no whitespace, ASCII), the ``format`` and ``key_id`` included. The
compressed file is covered through its ``sha256`` and the database inside it
through ``raw_sha256``, both among those fields: the manifest is authenticated
first, before a byte of the file is read, then the file must match the
authenticated checksums.

A key is at least 32 random bytes written as hex (64 or more hex digits), for
example ``openssl rand -hex 32``; surrounding whitespace is ignored. The
``key_id`` is the first 8 hex digits of the key's sha256: it tells a backup
made with another key from a tampered one without revealing the key.

Example:
    >>> from abathur.config import Settings
    >>> from abathur.ops.backup_key import load_backup_key, manifest_hmac
    >>> key = load_backup_key(Settings(backup_key=bytes(range(32)).hex()))
    >>> key
    BackupKey(key_id='630dcd29', source='ABATHUR_BACKUP_KEY')
    >>> len(manifest_hmac(key, {"format": "abathur-backup/2", "key_id": key.key_id}))
    64
    >>> load_backup_key(Settings()) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from abathur.config import Settings
from abathur.errors import BackupKeyError

__all__ = [
    "KEY_MIN_BYTES",
    "BackupKey",
    "canonical_json",
    "generate_key_file",
    "hmac_matches",
    "load_backup_key",
    "manifest_hmac",
    "parse_key",
]

log = structlog.get_logger(__name__)

KEY_MIN_BYTES = 32
# 32 random bytes hold ~30 distinct values; fewer than 16 means a pattern
# ("00...", "abab..."), not a random key.
_MIN_DISTINCT_BYTES = 16
_HEX = re.compile(r"[0-9a-fA-F]+")
# A key file is a line of hex: anything much bigger is not a key file.
_MAX_KEY_FILE_BYTES = 4096


@dataclass(frozen=True)
class BackupKey:
    """A validated backup key; ``repr`` shows its id and where it came from, never the key."""

    secret: bytes = field(repr=False)
    key_id: str
    source: str


def parse_key(text: str, *, source: str) -> BackupKey:
    """Validate a key written as hex and return it.

    Args:
        text: the key, 64 or more hex digits; surrounding whitespace is ignored.
        source: where it came from, for messages (never the key itself).

    Raises:
        BackupKeyError: not hex, shorter than 32 bytes, or not random-looking.

    Example:
        >>> from abathur.ops.backup_key import parse_key
        >>> parse_key("00" * 32, source="test")
        Traceback (most recent call last):
        ...
        abathur.errors.BackupKeyError: the backup key from test is not random: ...
    """
    text = text.strip()
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise BackupKeyError(
            f"the backup key from {source} must be written as hex (an even number of "
            "0-9/a-f digits), e.g. the output of 'openssl rand -hex 32'"
        )
    secret = bytes.fromhex(text)
    if len(secret) < KEY_MIN_BYTES:
        raise BackupKeyError(
            f"the backup key from {source} is {len(secret)} bytes: it must be at least "
            f"{KEY_MIN_BYTES} random bytes ({2 * KEY_MIN_BYTES} hex digits); make one with "
            "'openssl rand -hex 32'"
        )
    if len(set(secret)) < _MIN_DISTINCT_BYTES:
        raise BackupKeyError(
            f"the backup key from {source} is not random: it repeats a few byte values; "
            "make one with 'openssl rand -hex 32'"
        )
    return BackupKey(secret=secret, key_id=hashlib.sha256(secret).hexdigest()[:8], source=source)


def load_backup_key(settings: Settings) -> BackupKey | None:
    """The configured backup key, or ``None`` when none is configured.

    A key file readable by group or others is used, with a warning in the log.

    Raises:
        BackupKeyError: both a key and a key file are set, the file cannot be
            read, or the key is invalid (see :func:`parse_key`).
    """
    if settings.backup_key is not None and settings.backup_key_file is not None:
        raise BackupKeyError(
            "both ABATHUR_BACKUP_KEY and a backup key file (ABATHUR_BACKUP_KEY_FILE) are "
            "set: set one of them"
        )
    if settings.backup_key is not None:
        return parse_key(settings.backup_key.get_secret_value(), source="ABATHUR_BACKUP_KEY")
    path = settings.backup_key_file
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise BackupKeyError(
            f"cannot read the backup key file {str(path)!r}: {exc.strerror or exc}"
        ) from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise BackupKeyError(f"the backup key file {str(path)!r} is too large to be a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = "\x00"  # fails the hex test below, with its message
    key = parse_key(text, source=f"the key file {str(path)!r}")
    if mode & 0o077:
        log.warning(
            "backup.key_file_readable_by_others",
            path=str(path),
            mode=oct(mode),
            advice="chmod 600 the key file: whoever reads it can forge backups",
        )
    return key


def generate_key_file(path: str | Path) -> BackupKey:
    """Write a new random key (32 bytes, hex) to a new file readable by its owner only.

    Raises:
        BackupKeyError: the file exists (a key is never overwritten: the
            backups signed with it could no longer be verified), or cannot be
            written.

    Example:
        >>> import tempfile, pathlib
        >>> from abathur.ops.backup_key import generate_key_file, parse_key
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "backup.key"
        >>> key = generate_key_file(path)
        >>> oct(path.stat().st_mode & 0o777)
        '0o600'
        >>> parse_key(path.read_text(), source="f").key_id == key.key_id
        True
    """
    path = Path(path)
    secret = secrets.token_bytes(KEY_MIN_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupKeyError(
            f"{str(path)!r} exists: a key file is never overwritten (the backups signed "
            "with it could no longer be verified); choose another name"
        ) from None
    except OSError as exc:
        raise BackupKeyError(f"cannot create key file {str(path)!r}: {exc.strerror}") from None
    try:
        os.write(fd, (secret.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return parse_key(secret.hex(), source=f"the key file {str(path)!r}")


def canonical_json(fields: Mapping[str, Any]) -> bytes:
    """The bytes the HMAC covers: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def manifest_hmac(key: BackupKey, fields: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of a manifest's fields, without its own ``hmac`` field."""
    covered = {name: value for name, value in fields.items() if name != "hmac"}
    return hmac.new(key.secret, canonical_json(covered), hashlib.sha256).hexdigest()


def hmac_matches(key: BackupKey, fields: Mapping[str, Any]) -> bool:
    """Whether ``fields["hmac"]`` is the HMAC of the other fields (constant-time compare)."""
    claimed = fields.get("hmac")
    if not isinstance(claimed, str):
        return False
    expected = manifest_hmac(key, fields).encode()
    return hmac.compare_digest(expected, claimed.encode("ascii", "replace"))

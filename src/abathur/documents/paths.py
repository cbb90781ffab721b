"""Roots, path prefixes and file names: checked, and made printable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from abathur.errors import InvalidInputError, NotFoundError
from abathur.values import check_text

__all__ = [
    "check_prefix",
    "check_root",
    "check_utf8_root",
    "not_utf8",
    "os_error_reason",
    "printable",
]


def check_root(root: object, *, must_exist: bool = True) -> Path:
    """The root as a resolved absolute path: an existing directory, unless ``must_exist`` is off.

    ``forget`` passes ``must_exist=False``: the directory may be gone, and it
    resolves to the path sync recorded as long as no symlink on the way changed.
    """
    if not isinstance(root, str | os.PathLike):
        raise InvalidInputError(f"root must be a path, got {type(root).__name__}")
    text = os.fspath(root)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise InvalidInputError(f"root {text!r} is not a usable path")
    # Checked before resolving too: resolve() itself fails on a lone surrogate
    # that no byte decodes to, with a UnicodeEncodeError.
    check_utf8_root(text)
    try:
        resolved = Path(text).resolve(strict=must_exist)
    except FileNotFoundError:
        raise NotFoundError(f"root {text!r} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidInputError(f"root {text!r} cannot be resolved: {exc}") from None
    if must_exist and not resolved.is_dir():
        raise InvalidInputError(f"root {text!r} is not a directory")
    check_utf8_root(str(resolved))
    return resolved


def check_utf8_root(path: str) -> None:
    """Refuse a root whose path is not UTF-8 (it could not be stored as text)."""
    bad = not_utf8(path)
    if bad is not None:
        # Paths are stored as UTF-8 text; this one cannot be, so it cannot be a root.
        raise InvalidInputError(
            f"root '{printable(path)}' is not valid UTF-8 ({bad}): rename the directory"
        )


def check_prefix(prefix: object) -> str | None:
    """A search's ``path_prefix`` without its trailing '/', or None; refused if not relative."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise InvalidInputError(f"path_prefix must be a string, got {type(prefix).__name__}")
    check_text(prefix, "path_prefix")
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    if (
        not trimmed
        or trimmed.startswith("/")
        or any(ord(ch) < 32 or ch == "\x7f" for ch in trimmed)
        or any(part in ("", ".", "..") for part in trimmed.split("/"))
    ):
        raise InvalidInputError(
            f"path_prefix {prefix!r} must be a relative path such as 'runbooks' or "
            "'docs/ops', without empty, '.' or '..' segments"
        )
    return trimmed


def not_utf8(name: str) -> str | None:
    """Where a file name from the OS is not UTF-8 ("byte 0xff at offset 3"), or None if it is.

    Python hands such a name over surrogate-escaped; SQLite text, JSON and
    terminals take only real UTF-8, so it can be reported but never stored.
    """
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(name)
        raw.decode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        return "it holds a lone surrogate"
    except UnicodeDecodeError as exc:
        return f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    return "it holds a lone surrogate"  # pragma: no cover - fsencode round-trips


def printable(name: str) -> str:
    """A name as valid UTF-8 for reports and messages: bytes that are not UTF-8 as ``\\xff``."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def os_error_reason(error: OSError) -> str:
    """Why a file could not be read, in the words a sync report uses."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symlink loop"
    return error.strerror or type(error).__name__

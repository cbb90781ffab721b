"""Walking a root and reading its files (on worker threads, no database)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from abathur.documents.chunking import Chunk, chunk_texts
from abathur.documents.globs import GlobReach, may_hold
from abathur.documents.paths import not_utf8, os_error_reason, printable
from abathur.models import SyncFailure
from abathur.stores.documents import DocumentState

__all__ = ["Examined", "Walk", "examine_batch", "walk_root"]

# A stored size and mtime are trusted only when the file was last modified at
# least this long before it was read (file systems with coarse timestamps can
# give a file rewritten in the same tick the same mtime: git's "racy clean").
_RACY_NS = 2_000_000_000


@dataclass
class Walk:
    """What a walk of a root found: the files selected, and what could not be listed."""

    files: list[str] = field(default_factory=list)  # relative paths, sorted
    unlisted: list[str] = field(default_factory=list)  # directories that could not be read
    failed: list[SyncFailure] = field(default_factory=list)


def walk_root(
    root: str,
    patterns: Sequence[re.Pattern[str]],
    reaches: Sequence[GlobReach],
    excludes: Sequence[re.Pattern[str]],
    skip: frozenset[str],
) -> Walk:
    """The files under ``root`` the patterns select. Symlinked directories are not entered."""
    found = Walk()

    def unreadable(error: OSError) -> None:
        where = os.path.relpath(error.filename or root, root).replace(os.sep, "/")
        found.unlisted.append(where)
        found.failed.append(
            SyncFailure(
                path=printable(where), reason=f"cannot list directory: {os_error_reason(error)}"
            )
        )

    def misnamed(rel: str, name: str, what: str) -> bool:
        # Reported, never stored: the rest of the tree syncs (issue 11, item 5).
        bad = not_utf8(name)
        if bad is not None:
            which = "it" if what == "file" else "the files under it"
            reason = f"{what} name is not valid UTF-8 ({bad}): rename it to sync {which}"
            found.failed.append(SyncFailure(path=printable(rel), reason=reason))
        return bad is not None

    def wanted_dir(rel: str) -> bool:
        if any(x.match(rel) or x.match(rel + "/") for x in excludes):
            return False
        return may_hold(rel, reaches)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if wanted_dir(rel_dir + d) and not misnamed(rel_dir + d, d, "directory")
        )
        for name in filenames:
            rel = rel_dir + name
            if os.path.join(dirpath, name) in skip:
                continue
            if (
                any(p.match(rel) for p in patterns)
                and not any(x.match(rel) for x in excludes)
                and not misnamed(rel, name, "file")
            ):
                found.files.append(rel)
    found.files.sort()
    return found


@dataclass
class Examined:
    """One file after the thread looked at it."""

    path: str
    outcome: str  # 'failed' | 'unchanged' | 'touch' | 'content'
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    text: str = ""
    reason: str = ""
    chunks: list[Chunk] = field(default_factory=list)


def _examine(root: str, rel: str, known: DocumentState | None, max_bytes: int) -> Examined:
    """Stat, pre-check, read, hash and decode one file (chunking comes after)."""
    full = os.path.join(root, *rel.split("/"))
    try:
        info = os.lstat(full)
        target = full
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.path.realpath(full, strict=True)
            except OSError as exc:
                reason = "broken symlink" if exc.errno == errno.ENOENT else os_error_reason(exc)
                return Examined(rel, "failed", reason=reason)
            if not target.startswith(root + os.sep):
                return Examined(rel, "failed", reason="symlink points outside the root")
            info = os.stat(target)
        if not stat.S_ISREG(info.st_mode):
            return Examined(rel, "failed", reason="not a regular file")
        if info.st_size > max_bytes:
            return Examined(
                rel,
                "failed",
                size=info.st_size,
                mtime_ns=info.st_mtime_ns,
                reason=f"{info.st_size} bytes, over the {max_bytes}-byte limit",
            )
        if (
            known is not None
            and known.status == "indexed"
            and known.size == info.st_size
            and known.mtime_ns == info.st_mtime_ns
            and info.st_mtime_ns < known.synced_at * 1e9 - _RACY_NS
        ):
            return Examined(rel, "unchanged", size=info.st_size, mtime_ns=info.st_mtime_ns)
        # O_NOFOLLOW: the path checked above is the one read, even if swapped
        # for a link since; O_NONBLOCK: a FIFO swapped in cannot hang us.
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return Examined(rel, "failed", reason="not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(max_bytes + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return Examined(rel, "failed", reason=os_error_reason(exc))
    size, mtime_ns = len(data), info.st_mtime_ns
    if size > max_bytes:
        return Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"over the {max_bytes}-byte limit",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        return Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"binary file (NUL byte at offset {nul})",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"invalid UTF-8 at byte {exc.start}",
        )
    digest = hashlib.sha256(data).hexdigest()
    if known is not None and known.status == "indexed" and known.content_hash == digest:
        return Examined(rel, "touch", size=size, mtime_ns=mtime_ns, content_hash=digest)
    return Examined(
        rel,
        "content",
        size=size,
        mtime_ns=mtime_ns,
        content_hash=digest,
        text=text.removeprefix("\ufeff"),
    )


def examine_batch(
    root: str, paths: list[str], known: dict[str, DocumentState], max_bytes: int
) -> list[Examined]:
    """Examine a batch of files, then chunk the readable ones with one tokenizer call."""
    examined = [_examine(root, rel, known.get(rel), max_bytes) for rel in paths]
    readable = [e for e in examined if e.outcome == "content"]
    for item, chunks in zip(readable, chunk_texts([e.text for e in readable]), strict=True):
        item.chunks, item.text = chunks, ""
    return examined

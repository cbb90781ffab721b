"""ArchivalService: cold data out of the hot tables, compressed, and back exactly on request.

**What moves** is decided by ``Settings.archive_policies``
(:class:`~abathur.config.ArchivePolicy`): terminated sessions with their
events, whole memories (every version) once expired (or idle), deleted
memories, and old versions beyond the newest K of a memory. Each archived
item becomes one row of the ``archive`` table (``abathur archive list``)
holding the item's rows exactly as they were, as JSON compressed with
zstandard; a dictionary trained on the first batch of each kind
(``archive_dicts``) makes small rows compress several times better than
alone. :meth:`ArchivalService.restore` puts the rows back as they were,
field for field, with their original ids where still free, and puts a live
memory back in the keyword index and the embedding queue (or straight into
the vector index when the cache holds its vector), so it is found again.

**Integrity.** Each archive row records the sha256 of its stored bytes and of
its JSON, and each dictionary its own (``006_archive_checksums.sql`` says
which catches what). :meth:`ArchivalService.show`, :meth:`ArchivalService.restore`
and ``abathur check`` (:func:`verify_archive`) verify them, decompress in
chunks and stop past the size the row records, and read a payload's tables
and columns only through this module's own column lists: a damaged or crafted
row is a :class:`~abathur.errors.CorruptArchiveError`, never a wrong row.

**Why a table in the same file**, not an archive database beside it: a move
must be atomic. Deleting hot rows and writing their archive row happen in one
transaction, so a crash leaves each item either hot or archived, never both
nor neither. SQLite makes a transaction across ATTACHed files atomic only in
rollback-journal mode, not in WAL mode, which abathur uses. The cost is that
archived bytes stay in the file, compressed (typically 5-10x smaller than
the rows and indexes they replace).

**A run** (``abathur archive run``) pages through candidates in small
transactions (``Settings.archive_batch_size`` items, then a pause of
``archive_pause_ms`` so other writers get the lock), keyset-paged so each
item is looked at once. Every transaction re-reads what it moves, so agents
writing meanwhile are safe: a memory written again is no longer expired, a
session is moved whole. It is idempotent and resumable: what a killed run
committed is archived, what it did not is still hot, and the next run picks
up the rest (``archive_runs`` shows the interrupted run). Nothing is archived
twice, because what is archived is no longer in the hot tables.

Sessions keep a stub in ``sessions`` (status ``archived``, state emptied):
the id stays taken, tasks keep their session, and ``sessions.get`` says where
it went. Its events leave with it. App and user state are shared and stay.

**Space.** Freed pages go to SQLite's freelist and are reused by new rows,
so the file stops growing. It shrinks only with ``auto_vacuum=INCREMENTAL``:
then each run ends with ``PRAGMA incremental_vacuum``. An existing file
(abathur creates files with the default, ``NONE``) is switched once with
``abathur archive run --vacuum``, a full ``VACUUM`` that rewrites the file and
blocks writers while it runs (minutes for gigabytes: run it in a quiet hour);
later runs then shrink the file without one. A run also applies pending vector
deletes and rebuilds a vector table whose dead slots pass
``Settings.vector_compact_ratio`` of its live rows, then checkpoints the WAL.

**Document chunks of deleted files**: documents.sync deletes a vanished
file's row and its chunks in the same transaction (004_documents.sql), so
none are left to archive; a run says so in its notes. The vec0 slots they
leave dead are reclaimed by the compaction above.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         path = pathlib.Path(tmp) / "a.db"
    ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0) as ab:
    ...             s = await ab.sessions.create(app="helpdesk", user="alice")
    ...             await ab.sessions.terminate(s.id)
    ...             policy = {"kind": "sessions", "after_days": 0}
    ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
    ...                                 archive_policies=[policy]) as ab:
    ...             report = await ab.archival.run()
    ...             (entry,) = await ab.archival.list()
    ...             stub = await ab.sessions.get(s.id)
    ...             await ab.archival.restore(entry.id)
    ...             back = await ab.sessions.get(s.id)
    ...             return report.entries, entry.kind, stub.status, back.status
    >>> asyncio.run(demo())
    (1, 'session', 'archived', 'terminated')
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import apsw
import structlog
import zstandard

from abathur import audit, memory, search
from abathur.backends.sqlite import Database
from abathur.backends.sqlite.connection import connect, translate_errors
from abathur.config import ArchivePolicy
from abathur.errors import (
    AlreadyExistsError,
    ArchiveNotFoundError,
    CorruptArchiveError,
    InvalidInputError,
    MemoryNotFoundError,
)
from abathur.models import (
    ArchivedItem,
    ArchiveEntry,
    ArchiveKind,
    ArchivePolicyResult,
    ArchiveRestoreReport,
    ArchiveRunReport,
    CompactReport,
)
from abathur.values import INT64_MAX, check_text, show_number

if TYPE_CHECKING:
    from abathur.embeddings.queue import EmbeddingService

__all__ = [
    "SQL_ARCHIVE_BY_KIND",
    "SQL_ARCHIVE_BY_REF",
    "SQL_ARCHIVE_LIST",
    "SQL_CURRENT_MEMORIES_AFTER",
    "SQL_TERMINATED_SESSIONS",
    "ArchivalService",
    "verify_archive",
]

log = structlog.get_logger(__name__)

_DAY = 86400.0
_ZSTD_LEVEL = 9
_DICT_SIZE = 16 * 1024
_DICT_MIN_SAMPLES = 32
_DICT_MIN_BYTES = 8 * 1024
# Current memories examined per transaction, at most: a batch stops earlier
# once it has moved archive_batch_size items.
_EXAMINE_PER_BATCH = 2000
_MAX_LIST = 10_000
_POLICY_KINDS = ("sessions", "memories", "tombstones", "versions", "chunks")

# ---------------------------------------------------------------------------
# SQL. Column lists are fixed here; a payload records the columns it holds,
# and a restore checks each name against the table before using it.
# ---------------------------------------------------------------------------

# audit_seq (migration 007) travels with the rows, so restored rows verify
# against the audit records that wrote them (abathur.audit).
_SESSION_COLUMNS = (
    "id",
    "app",
    "user",
    "status",
    "state",
    "revision",
    "created_at",
    "updated_at",
    "audit_seq",
)
_EVENT_COLUMNS = (
    "session_id",
    "seq",
    "id",
    "author",
    "content",
    "state_delta",
    "metadata",
    "timestamp",
    "audit_seq",
)
_MEMORY_COLUMNS = (
    "id",
    "namespace",
    "key",
    "version",
    "type",
    "value",
    "metadata",
    "status",
    "superseded_by_namespace",
    "superseded_by_key",
    "created_at",
    "first_created_at",
    "expires_at",
    "is_current",
    "audit_seq",
)

# Terminated sessions last updated before a cutoff, keyset-paged by
# (updated_at, id) on the partial index sessions_terminated.
# Params: cutoff, last updated_at, last id, limit.
SQL_TERMINATED_SESSIONS = (
    "SELECT id, app, updated_at FROM sessions INDEXED BY sessions_terminated "
    "WHERE status = 'terminated' AND updated_at < ? AND (updated_at, id) > (?, ?) "
    "ORDER BY updated_at, id LIMIT ?"
)
_SQL_SESSION_ROW = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions WHERE id = ?"
_SQL_SESSION_EVENTS = (
    f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events WHERE session_id = ? ORDER BY seq"
)
# The stub left behind: same id, revision and times; status archived, no state.
_SQL_SESSION_STUB = (
    "UPDATE sessions SET status = 'archived', state = '{}' WHERE id = ? AND status = 'terminated'"
)
_SQL_DELETE_EVENTS = "DELETE FROM events WHERE session_id = ?"

# Current versions after an id, in id order (the rowid): every memory once per run.
# Params: last id, limit.
SQL_CURRENT_MEMORIES_AFTER = (
    "SELECT id, namespace, key, version, type, status, created_at, expires_at FROM memories "
    "WHERE id > ? AND is_current = 1 ORDER BY id LIMIT ?"
)
_SQL_MEMORY_ROWS = (
    f"SELECT {', '.join(_MEMORY_COLUMNS)} FROM memories WHERE namespace = ? AND key = ? "
    "ORDER BY version"
)
# Old versions of one memory (the UNIQUE (namespace, key, version) index).
# Params: namespace, key, highest version to move, written before.
_SQL_OLD_VERSIONS = (
    f"SELECT {', '.join(_MEMORY_COLUMNS)} FROM memories WHERE namespace = ? AND key = ? "
    "AND version <= ? AND is_current = 0 AND created_at <= ? ORDER BY version"
)
_SQL_DELETE_MEMORY = "DELETE FROM memories WHERE namespace = ? AND key = ?"
_SQL_DELETE_IDS = "DELETE FROM memories WHERE id IN (SELECT value FROM json_each(?))"

_ENTRY_COLUMNS = (
    "id, kind, ref, policy, app, user, namespace, rows, raw_bytes, stored_bytes, run_id, "
    "archived_at"
)
_SQL_ARCHIVE_INSERT = (
    "INSERT INTO archive (kind, ref, policy, app, user, namespace, rows, raw_bytes, "
    "stored_bytes, dict_id, run_id, archived_at, payload, payload_sha256, raw_sha256) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# archive list: newest first, paged by id. Params: before id, limit.
SQL_ARCHIVE_LIST = f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE id < ? ORDER BY id DESC LIMIT ?"
# archive list --kind K --ref R: index archive_by_ref, whose rowid suffix gives
# the order. Params: kind, ref, before id, limit.
SQL_ARCHIVE_BY_REF = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive WHERE kind = ? AND ref = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
# archive list --kind K: newest first along the primary key, skipping other kinds.
# Params: kind, before id, limit.
SQL_ARCHIVE_BY_KIND = (
    f"SELECT {_ENTRY_COLUMNS} FROM archive NOT INDEXED WHERE kind = ? AND id < ? "
    "ORDER BY id DESC LIMIT ?"
)
# What a restore or check reads of a row to verify it (see _Stored).
_STORED_COLUMNS = (
    "id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, payload_sha256, raw_sha256"
)
_SQL_ARCHIVE_ONE = f"SELECT {_ENTRY_COLUMNS}, {_STORED_COLUMNS} FROM archive WHERE id = ?"
# abathur check: every row, one at a time (payloads are never all in memory).
_SQL_ARCHIVE_ALL = f"SELECT {_STORED_COLUMNS} FROM main.archive ORDER BY id"
# The same on a file migrated before the checksums existed (migration 006).
_SQL_ARCHIVE_ALL_UNCHECKSUMMED = (
    "SELECT id, kind, ref, raw_bytes, stored_bytes, dict_id, payload, NULL, NULL "
    "FROM main.archive ORDER BY id"
)
# 3 on a file with the checksum columns (migration 006), 0 before.
_SQL_HAS_CHECKSUMS = (
    "SELECT (SELECT count(*) FROM pragma_table_info('archive', 'main') "
    "WHERE name IN ('payload_sha256', 'raw_sha256')) + "
    "(SELECT count(*) FROM pragma_table_info('archive_dicts', 'main') WHERE name = 'sha256')"
)
_SQL_LATEST_DICT = (
    "SELECT id, dict, sha256 FROM archive_dicts WHERE kind = ? ORDER BY id DESC LIMIT 1"
)
_SQL_DICT = "SELECT dict, sha256 FROM archive_dicts WHERE id = ?"
_SQL_DICT_UNCHECKSUMMED = "SELECT dict, NULL FROM archive_dicts WHERE id = ?"


# ---------------------------------------------------------------------------
# Payloads: {"v": 1, "tables": {name: {"columns": [...], "rows": [[...]]}}}
# ---------------------------------------------------------------------------


def _encode(tables: dict[str, tuple[Sequence[str], list[tuple[Any, ...]]]]) -> bytes:
    doc = {
        "v": 1,
        "tables": {
            name: {"columns": list(columns), "rows": [list(row) for row in rows]}
            for name, (columns, rows) in tables.items()
        },
    }
    # Python's float repr round-trips exactly, so REAL columns come back equal.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class _Move:
    """One item taken out of the hot tables in this batch, waiting to be compressed."""

    kind: ArchiveKind
    ref: str
    policy: str
    rows: int
    raw: bytes
    app: str | None = None
    user: str | None = None
    namespace: str | None = None


@dataclass
class _Tally:
    items: int = 0
    rows: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0

    def result(self, policy: str) -> ArchivePolicyResult:
        return ArchivePolicyResult(
            policy=policy,
            items=self.items,
            rows=self.rows,
            raw_bytes=self.raw_bytes,
            stored_bytes=self.stored_bytes,
        )


@dataclass
class _Batch:
    moves: list[_Move] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    cursor: Any = None
    is_done: bool = False
    # Items left hot because their rows exceed what one archive row may hold.
    too_big: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------


def _in_scope(namespace: str, scope: str | None) -> bool:
    return scope is None or namespace == scope or namespace.startswith(scope + ":")


def _best(
    policies: Sequence[ArchivePolicy],
    kind: str,
    *,
    namespace: str | None = None,
    app: str | None = None,
    type_: str | None = None,
) -> ArchivePolicy | None:
    """The most specific policy of ``kind`` for an item: longest scope, then a typed one."""
    best: ArchivePolicy | None = None
    best_rank = (-1, False)
    for p in policies:
        if p.kind != kind or (p.type is not None and p.type != type_):
            continue
        if kind == "sessions":
            if p.scope is not None and p.scope != app:
                continue
            rank = (0 if p.scope is None else 1, False)
        else:
            if namespace is None or not _in_scope(namespace, p.scope):
                continue
            depth = 0 if p.scope is None else p.scope.count(":") + 1
            rank = (depth, p.type is not None)
        if rank > best_rank:
            best, best_rank = p, rank
    return best


def _older(at: float | None, policy: ArchivePolicy | None, now: float) -> bool:
    return (
        at is not None
        and policy is not None
        and policy.after_days is not None
        and at <= now - policy.after_days * _DAY
    )


# ---------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------


class _BadDictionaryError(Exception):
    """A dictionary that is missing or fails its checksum; the message says which."""


class _Codecs:
    """zstandard compressors and dictionaries, one per dictionary, kept per process.

    Decompressors are made per call: a read may run on any reader thread, and
    one zstd context must not be used by two threads at once.
    """

    def __init__(self, *, checksummed: bool = True) -> None:
        # False only to read a file not yet migrated to the checksum columns.
        self._sql_dict = _SQL_DICT if checksummed else _SQL_DICT_UNCHECKSUMMED
        self._plain_c = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        # Keyed by (id, sha256 of the bytes): a dictionary row changed since it
        # was cached is never used from the cache.
        self._dicts: dict[tuple[int, str], zstandard.ZstdCompressionDict] = {}
        self._compressors: dict[tuple[int, str], zstandard.ZstdCompressor] = {}

    def _dictionary(self, dict_id: int, data: bytes, digest: str) -> zstandard.ZstdCompressionDict:
        found = self._dicts.get((dict_id, digest))
        if found is None:
            found = self._dicts[(dict_id, digest)] = zstandard.ZstdCompressionDict(data)
        return found

    def compress(
        self, conn: apsw.Connection, kind: str, payloads: Sequence[bytes], *, may_train: bool
    ) -> tuple[int | None, list[bytes]]:
        """Compress with the kind's dictionary, training one first if there is none yet."""
        rows = conn.execute(_SQL_LATEST_DICT, (kind,)).fetchall()
        if not rows and may_train:
            rows = self._train(conn, kind, payloads)
        if rows:
            dict_id, data, recorded = rows[0]
            digest = _sha256(data)
            if recorded is None or recorded == digest:
                compressor = self._compressors.get((dict_id, digest))
                if compressor is None:
                    compressor = zstandard.ZstdCompressor(
                        level=_ZSTD_LEVEL, dict_data=self._dictionary(dict_id, data, digest)
                    )
                    self._compressors[(dict_id, digest)] = compressor
                return dict_id, [compressor.compress(p) for p in payloads]
            # A damaged dictionary: new rows go without one; `abathur check` reports it.
            log.warning("archive.dictionary_corrupt", dict_id=dict_id, kind=kind)
        return None, [self._plain_c.compress(p) for p in payloads]

    def _train(
        self, conn: apsw.Connection, kind: str, payloads: Sequence[bytes]
    ) -> list[tuple[int, bytes, str]]:
        total = sum(map(len, payloads))
        if len(payloads) < _DICT_MIN_SAMPLES or total < _DICT_MIN_BYTES:
            return []
        try:
            trained = zstandard.train_dictionary(min(_DICT_SIZE, total // 4), list(payloads))
        except zstandard.ZstdError:
            return []  # too little variety to learn from: compress each row alone
        data = trained.as_bytes()
        digest = _sha256(data)
        conn.execute(
            "INSERT INTO archive_dicts (kind, created_at, dict, sha256) VALUES (?, ?, ?, ?)",
            (kind, time.time(), data, digest),
        )
        return [(conn.last_insert_rowid(), data, digest)]

    def verified_dictionary(
        self, conn: apsw.Connection, dict_id: int
    ) -> zstandard.ZstdCompressionDict:
        """Dictionary ``dict_id``, once its bytes match their checksum (if it has one)."""
        found = conn.execute(self._sql_dict, (dict_id,)).fetchall()
        if not found:
            raise _BadDictionaryError(f"its dictionary {dict_id} is missing")
        data, recorded = found[0]
        digest = _sha256(data)
        if recorded is not None and recorded != digest:
            raise _BadDictionaryError(f"its dictionary {dict_id} does not match its checksum")
        return self._dictionary(dict_id, data, digest)


def _sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def _bounded_decompress(
    payload: bytes, dictionary: zstandard.ZstdCompressionDict | None, limit: int
) -> bytearray | None:
    """The payload decompressed, or None as soon as it would exceed ``limit`` bytes.

    Streamed in chunks, so a bomb (a few KiB that expand to gigabytes) costs
    at most ``limit`` bytes of memory, whatever size its frame header claims.

    Raises:
        zstandard.ZstdError: the payload is not a valid zstd frame (for this dictionary).
    """
    dctx = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=_MAX_WINDOW)
    out = bytearray()
    with dctx.stream_reader(payload) as reader:
        while len(out) <= limit:
            chunk = reader.read(min(_READ_CHUNK, limit + 1 - len(out)))
            if not chunk:
                return out
            out += chunk
    return None


# ---------------------------------------------------------------------------
# Reading an archive row back: verified, bounded, mapped onto our own columns
# ---------------------------------------------------------------------------

# The most JSON one archive row may hold, whatever its raw_bytes says. A run
# leaves a larger item hot (and says so), so every row it writes restores.
_MAX_RAW_BYTES = 1 << 30
# The zstd window a payload may ask for: level 9 uses at most 4 MiB
# (windowLog 22); zstd's own default limit is 128 MiB.
_MAX_WINDOW = 1 << 24
_READ_CHUNK = 1 << 20
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# The tables each kind of entry holds, and our own column list for each: the
# only names ever formatted into SQL. A payload's names are looked up in these,
# never used themselves. A payload may lack columns a later abathur added (the
# table's default fills them), but never the ones a restore needs.
_TABLES: dict[str, tuple[str, ...]] = {
    "sessions": _SESSION_COLUMNS,
    "events": _EVENT_COLUMNS,
    "memories": _MEMORY_COLUMNS,
}
_KIND_TABLES: dict[str, tuple[str, ...]] = {
    "session": ("sessions", "events"),
    "memory": ("memories",),
    "versions": ("memories",),
}
# The columns a restore reads itself, with the type each must have.
_REQUIRED: dict[str, dict[str, type]] = {
    "sessions": {"id": str},
    "events": {"session_id": str, "seq": int},
    "memories": {"id": int, "namespace": str, "key": str, "version": int, "is_current": int},
}


@dataclass(frozen=True)
class _Rows:
    """One table's rows from a payload, under our own column names in our order."""

    table: str  # a key of _TABLES
    columns: tuple[str, ...]  # strings of _TABLES[table], never the payload's
    rows: list[tuple[Any, ...]]

    def value(self, row: Sequence[Any], column: str) -> Any:
        return row[self.columns.index(column)]

    def without(self, column: str, rows: Iterable[Sequence[Any]]) -> _Rows:
        """``rows`` (of these columns) less ``column``: an insert that lets SQLite pick it."""
        at = self.columns.index(column)
        return _Rows(
            self.table,
            self.columns[:at] + self.columns[at + 1 :],
            [(*row[:at], *row[at + 1 :]) for row in rows],
        )


@dataclass(frozen=True)
class _Stored:
    """An archive row as the table holds it, before anything in it is trusted."""

    id: int
    kind: str
    ref: str
    raw_bytes: int
    stored_bytes: int
    dict_id: int | None
    payload: bytes
    payload_sha256: str | None
    raw_sha256: str | None

    def corrupt(self, problem: str) -> CorruptArchiveError:
        return CorruptArchiveError(
            self.id,
            f"archive entry {self.id} ({_clip(self.kind)} {_clip(self.ref)!r}) is corrupt: "
            f"{problem}{_ADVICE}",
        )


def _clip(text: object, width: int = 80) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


# The end of every CorruptArchiveError message: what to do about it.
_ADVICE = (
    ". Nothing was changed; a backup taken before the damage holds a good copy "
    "(runbooks/05-corruption.md)"
)


def _check_stored(
    conn: apsw.Connection, codecs: _Codecs, stored: _Stored
) -> zstandard.ZstdCompressionDict | None:
    """Check what can be checked without decompressing; return the row's dictionary."""
    if not 0 <= stored.raw_bytes <= _MAX_RAW_BYTES:
        raise stored.corrupt(
            f"it records {stored.raw_bytes} raw bytes, outside 0..{_MAX_RAW_BYTES} "
            "(above the limit an archive row may hold)"
        )
    if stored.payload_sha256 is not None and _sha256(stored.payload) != stored.payload_sha256:
        raise stored.corrupt("its payload does not match its checksum (the stored bytes changed)")
    if stored.dict_id is None:
        return None
    try:
        return codecs.verified_dictionary(conn, stored.dict_id)
    except _BadDictionaryError as exc:
        raise stored.corrupt(str(exc)) from None


def _raw_json(conn: apsw.Connection, codecs: _Codecs, stored: _Stored) -> bytearray:
    """The JSON an archive row holds, checked against its checksums and sizes."""
    dictionary = _check_stored(conn, codecs, stored)
    try:
        raw = _bounded_decompress(stored.payload, dictionary, stored.raw_bytes)
    except zstandard.ZstdError as exc:
        raise stored.corrupt(f"its payload does not decompress ({_clip(exc, 120)})") from None
    if raw is None:
        raise stored.corrupt(
            f"its payload decompresses to more than the {stored.raw_bytes} bytes it records "
            "(refused before going further)"
        )
    if len(raw) != stored.raw_bytes:
        raise stored.corrupt(
            f"its payload decompresses to {len(raw)} bytes, not the {stored.raw_bytes} it records "
            "(a truncated or damaged frame)"
        )
    if stored.raw_sha256 is not None and _sha256(raw) != stored.raw_sha256:
        raise stored.corrupt(
            "what its payload decompresses to does not match its checksum "
            "(a wrong or damaged dictionary)"
        )
    return raw


def _open(conn: apsw.Connection, codecs: _Codecs, stored: _Stored) -> dict[str, _Rows]:
    """An archive row's tables, verified, each under our own column names.

    Raises:
        CorruptArchiveError: any check failed; the message says which.
    """
    if stored.kind not in _KIND_TABLES:
        raise stored.corrupt(f"its kind {_clip(stored.kind)!r} is unknown")
    raw = _raw_json(conn, codecs, stored)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise stored.corrupt(f"its payload is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise stored.corrupt("its payload is not an object")
    if doc.get("v") != 1:
        raise stored.corrupt(f"its payload has format version {_clip(doc.get('v'))!r}, not 1")
    tables = doc.get("tables")
    if not isinstance(tables, dict):
        raise stored.corrupt("its payload has no tables")
    expected = _KIND_TABLES[stored.kind]
    unknown = [_clip(name) for name in tables if name not in expected]
    if unknown:
        raise stored.corrupt(f"its payload holds unknown table(s) {unknown[:5]}")
    found = {name: _rows(stored, name, tables[name]) for name in expected if name in tables}
    missing = [name for name in expected if name not in found]
    if missing:
        raise stored.corrupt(f"its payload lacks table(s) {missing}")
    _check_ref(stored, found)
    return found


def _rows(stored: _Stored, table: str, data: object) -> _Rows:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("columns"), list)
        or not isinstance(data.get("rows"), list)
    ):
        raise stored.corrupt(f"its {table} table is not a list of columns and rows")
    columns: list[Any] = data["columns"]
    ours = _TABLES[table]
    unknown = [_clip(c) for c in columns if not isinstance(c, str) or c not in ours]
    if unknown:
        raise stored.corrupt(f"its {table} rows name unknown column(s) {unknown[:5]}")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise stored.corrupt(f"its {table} rows name column(s) {twice} twice")
    lacking = [c for c in _REQUIRED[table] if c not in columns]
    if lacking:
        raise stored.corrupt(f"its {table} rows lack column(s) {lacking}")
    where = {c: i for i, c in enumerate(columns)}
    kept = tuple(c for c in ours if c in where)
    order = [where[c] for c in kept]
    rows = []
    for n, row in enumerate(data["rows"]):
        if not isinstance(row, list) or len(row) != len(columns):
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise stored.corrupt(
                f"its {table} row {n} has {size} value(s) for {len(columns)} column(s)"
            )
        bad = next((v for v in row if not _storable(v)), None)
        if bad is not None:
            raise stored.corrupt(
                f"its {table} row {n} holds a value SQLite cannot store ({type(bad).__name__})"
            )
        for column, kind in _REQUIRED[table].items():
            value = row[where[column]]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise stored.corrupt(
                    f"its {table} row {n} has a {type(value).__name__} value in {column}, "
                    f"not a {kind.__name__}"
                )
        rows.append(tuple(row[i] for i in order))
    return _Rows(table, kept, rows)


def _storable(value: object) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, float) and math.isfinite(value)


def _check_ref(stored: _Stored, tables: dict[str, _Rows]) -> None:
    """The rows are the item the row's ``ref`` names (a flipped ref or row is caught)."""
    if stored.kind == "session":
        sessions, events = tables["sessions"], tables["events"]
        if len(sessions.rows) != 1:
            raise stored.corrupt(f"it holds {len(sessions.rows)} session rows, not 1")
        session_id = sessions.value(sessions.rows[0], "id")
        if session_id != stored.ref:
            raise stored.corrupt(f"its session is {_clip(session_id)!r}, not its ref")
        if any(events.value(row, "session_id") != session_id for row in events.rows):
            raise stored.corrupt("it holds events of another session")
        return
    memories = tables["memories"]
    if not memories.rows:
        raise stored.corrupt("it holds no memory rows")
    refs = {
        f"{memories.value(row, 'namespace')}/{memories.value(row, 'key')}" for row in memories.rows
    }
    if refs != {stored.ref}:
        raise stored.corrupt(f"its rows are of {sorted(map(_clip, refs))[:3]}, not of its ref")


# Corrupt entries listed by name in a check, at most: the rest are counted.
_MAX_FINDINGS = 20
_SQL_DICTS_ALL = "SELECT id, kind, dict, sha256 FROM main.archive_dicts ORDER BY id"
_SQL_DICTS_ALL_UNCHECKSUMMED = "SELECT id, kind, dict, NULL FROM main.archive_dicts ORDER BY id"


def verify_archive(conn: apsw.Connection, *, quick: bool = False) -> tuple[list[str], str]:
    """Verify every archive row and dictionary, as ``abathur check`` does; never writes.

    Each dictionary and each row's stored payload is checked against its
    checksum; unless ``quick``, each payload is also decompressed (bounded by
    the size its row records), checked against the checksum of its JSON, and
    read exactly as a restore would read it. A row whose dictionary is damaged
    is reported once, under its dictionary. Rows archived before the
    checksums existed are verified as far as they can be, and counted.

    Args:
        conn: a connection to the file, inside a read transaction.
        quick: check stored bytes and dictionaries only; decompress nothing.

    Returns:
        ``(findings, summary)``: one finding per corrupt entry or dictionary.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.archival import verify_archive
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         path = pathlib.Path(tmp) / "a.db"
        ...         policies = [{"kind": "tombstones", "after_days": 0}]
        ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
        ...                                 archive_policies=policies) as ab:
        ...             await ab.memory.put("user:alice", "lang", "fr")
        ...             await ab.memory.delete("user:alice", "lang")
        ...             await ab.archival.run()
        ...             return await ab.db.read(verify_archive)
        >>> asyncio.run(demo())
        ([], '1 archive row(s) and 0 dictionaries verified')
    """
    has_checksums = conn.execute(_SQL_HAS_CHECKSUMS).fetchall()[0][0] == 3
    codecs = _Codecs(checksummed=has_checksums)
    dicts = 0
    bad_dicts: dict[int, str] = {}
    for dict_id, kind, data, recorded in conn.execute(
        _SQL_DICTS_ALL if has_checksums else _SQL_DICTS_ALL_UNCHECKSUMMED
    ):
        dicts += 1
        if recorded is not None and _sha256(data) != recorded:
            bad_dicts[dict_id] = kind
    rows = unchecked = 0
    dependents: dict[int, list[int]] = {d: [] for d in bad_dicts}
    corrupt: list[str] = []
    for row in conn.execute(_SQL_ARCHIVE_ALL if has_checksums else _SQL_ARCHIVE_ALL_UNCHECKSUMMED):
        stored = _Stored(*row)
        rows += 1
        if stored.payload_sha256 is None or stored.raw_sha256 is None:
            unchecked += 1
        if stored.dict_id in dependents:
            dependents[stored.dict_id].append(stored.id)
            continue
        try:
            if quick:
                _check_stored(conn, codecs, stored)
            else:
                _open(conn, codecs, stored)
            # Only the listing reads stored_bytes, so a restore ignores it; a check does not.
            if stored.stored_bytes != len(stored.payload):
                raise stored.corrupt(
                    f"it records {stored.stored_bytes} stored bytes but holds {len(stored.payload)}"
                )
        except CorruptArchiveError as exc:
            corrupt.append(exc.message.removesuffix(_ADVICE))
    findings = [
        f"dictionary {dict_id} ({_clip(bad_dicts[dict_id])}) does not match its checksum: "
        f"{len(ids)} archive entr{'y' if len(ids) == 1 else 'ies'} depend on it "
        f"(ids {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
        for dict_id, ids in dependents.items()
    ]
    findings += corrupt[:_MAX_FINDINGS]
    if len(corrupt) > _MAX_FINDINGS:
        findings.append(f"... and {len(corrupt) - _MAX_FINDINGS} more corrupt archive entries")
    summary = f"{rows} archive row(s) and {dicts} dictionar{'y' if dicts == 1 else 'ies'} verified"
    if quick:
        summary += " (stored bytes only: --quick skips decompression)"
    if findings:
        damaged = len(corrupt) + sum(map(len, dependents.values()))
        summary += f": {damaged} corrupt entr{'y' if damaged == 1 else 'ies'}"
    if unchecked:
        summary += f"; {unchecked} row(s) carry no checksum (archived by an older abathur)"
    return findings, summary


def _insert(conn: apsw.Connection, rows: _Rows) -> None:
    # Table and column names come from _TABLES (see _rows), never from a payload.
    names = ", ".join(f'"{c}"' for c in rows.columns)
    marks = ", ".join("?" * len(rows.columns))
    conn.executemany(f'INSERT INTO "{rows.table}" ({names}) VALUES ({marks})', rows.rows)


def _file_sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return (path.stat().st_size if path.exists() else 0, wal.stat().st_size if wal.exists() else 0)


_AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


def _pragma(conn: apsw.Connection, name: str) -> int:
    # Names are our own constants, never a caller's.
    return int(conn.execute(f"PRAGMA {name}").fetchall()[0][0])


def _maintain(path: Path, settings: Any, *, vacuum: bool) -> tuple[str, int, str | None]:
    """VACUUM (if asked), incremental vacuum and a WAL checkpoint on a connection of their own.

    VACUUM and checkpoints cannot run inside a transaction, which is how the
    writer runs everything; this connection waits on busy_timeout like any writer.
    """
    with translate_errors(f"reclaiming space in {path}"):
        conn = connect(path, settings, readonly=False)
        try:
            if vacuum:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
            mode = _AUTO_VACUUM.get(
                int(conn.execute("PRAGMA auto_vacuum").fetchall()[0][0]), "none"
            )
            vacuumed = 0
            if mode == "incremental":
                free = _pragma(conn, "freelist_count")
                conn.execute("PRAGMA incremental_vacuum").fetchall()
                vacuumed = (free - _pragma(conn, "freelist_count")) * _pragma(conn, "page_size")
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            note = None
            if busy:
                note = (
                    "the WAL checkpoint could not finish (a reader held an old snapshot): "
                    "the WAL shrinks at the next checkpoint"
                )
            return mode, vacuumed, note
        finally:
            conn.close()


class ArchivalService:
    """Archive cold data, list it, show it, and restore it exactly: ``ab.archival``.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             report = await ab.archival.run(dry_run=True)
        ...             return report.is_dry_run, report.entries, await ab.archival.list()
        >>> asyncio.run(demo())
        (True, 0, [])
    """

    def __init__(self, db: Database, embeddings: EmbeddingService | None = None) -> None:
        self._db = db
        self._embeddings = embeddings
        self._codecs = _Codecs()

    # -- a run ---------------------------------------------------------------

    async def run(self, *, dry_run: bool = False, vacuum: bool = False) -> ArchiveRunReport:
        """Move everything the policies select into the archive, then reclaim space.

        Safe while agents write: small transactions with a pause between
        them. Idempotent and resumable (see the module docs): running it
        again after a crash finishes the work, and archives nothing twice.

        Args:
            dry_run: report what would move (sizes estimated) and write nothing.
            vacuum: also VACUUM the file once, switching it to incremental
                auto-vacuum so every later run shrinks it. Rewrites the whole
                file and blocks writers while it runs.

        Returns:
            An :class:`~abathur.models.ArchiveRunReport`: per-policy items,
            rows and bytes, file and WAL sizes before and after, space freed.

        Raises:
            InvalidInputError: dry_run or vacuum is not a bool, or both are set.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "versions", "keep_versions": 2, "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             for v in range(5):
            ...                 await ab.memory.put("user:alice", "lang", f"v{v}")
            ...             report = await ab.archival.run()
            ...             versions = await ab.memory.history("user:alice", "lang")
            ...             return report.rows, [m.version for m in versions]
            >>> asyncio.run(demo())
            (3, [4, 5])
        """
        for value, what in ((dry_run, "dry_run"), (vacuum, "vacuum")):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{what} must be a bool, got {type(value).__name__}")
        if dry_run and vacuum:
            raise InvalidInputError("a dry run cannot vacuum: choose one of dry_run and vacuum")
        started = time.perf_counter()
        settings = self._db.settings
        policies = settings.archive_policies
        size_before, wal_before = _file_sizes(self._db.path)
        run_id: int | None = None
        resumed: int | None = None
        if not dry_run:
            run_id, resumed = await self._db.write(self._start_run)
            if resumed is not None:
                log.warning("archive.resume", run_id=run_id, interrupted_run=resumed)
        tallies = {kind: _Tally() for kind in _POLICY_KINDS}
        batches = 0
        too_big: list[str] = []
        for phase, cursor in ((self._session_batch, (-math.inf, "")), (self._memory_batch, 0)):
            while True:
                fn = partial(
                    phase, cursor=cursor, now=time.time(), policies=policies, run_id=run_id
                )
                batch = await (self._db.read(fn) if dry_run else self._db.write(fn))
                batches += 1
                for move, stored in zip(batch.moves, batch.stored, strict=True):
                    tally = tallies[move.policy]
                    tally.items += 1
                    tally.rows += move.rows
                    tally.raw_bytes += len(move.raw)
                    tally.stored_bytes += stored
                too_big += batch.too_big
                cursor = batch.cursor
                if batch.is_done:
                    break
                if settings.archive_pause_ms:
                    await asyncio.sleep(settings.archive_pause_ms / 1000)
        notes = await self._db.read(_chunk_note)
        if too_big:
            log.warning("archive.too_big", items=too_big[:20], count=len(too_big))
            notes.append(
                f"{len(too_big)} item(s) left hot: their rows exceed the {_MAX_RAW_BYTES} bytes "
                f"one archive row may hold ({', '.join(too_big[:5])})"
            )
        compacted: list[CompactReport] = []
        auto_vacuum = await self._db.read(
            lambda conn: _AUTO_VACUUM.get(
                int(conn.execute("PRAGMA auto_vacuum").fetchall()[0][0]), "none"
            )
        )
        results = [tallies[k].result(k) for k in _POLICY_KINDS]
        entries = sum(t.items for t in tallies.values())
        rows = sum(t.rows for t in tallies.values())
        vacuumed = 0
        if run_id is not None:
            compacted = await self._reclaim_vectors()
            detail = {r.policy: r.model_dump(exclude={"policy"}) for r in results}
            await self._db.write(
                partial(self._finish_run, run_id=run_id, detail=detail, entries=entries, rows=rows)
            )
            # Last, so the checkpoint leaves the WAL empty: nothing is written after it.
            auto_vacuum, vacuumed, note = await asyncio.to_thread(
                _maintain, self._db.path, settings, vacuum=vacuum
            )
            if note:
                notes.append(note)
        if auto_vacuum != "incremental":
            notes.append(
                "auto_vacuum is NONE: freed pages are reused by new rows but the file does not "
                "shrink; 'abathur archive run --vacuum' switches it to incremental once"
            )
        free = await self._db.read(
            lambda conn: (
                conn.execute("PRAGMA freelist_count").fetchall()[0][0]
                * conn.execute("PRAGMA page_size").fetchall()[0][0]
            )
        )
        size_after, wal_after = _file_sizes(self._db.path)
        report = ArchiveRunReport(
            run_id=run_id,
            is_dry_run=dry_run,
            resumed_after=resumed,
            policies=results,
            entries=entries,
            rows=rows,
            batches=batches,
            bytes_before=size_before + wal_before,
            bytes_after=size_after + wal_after,
            wal_bytes_before=wal_before,
            wal_bytes_after=wal_after,
            free_bytes=int(free),
            auto_vacuum=auto_vacuum,  # type: ignore[arg-type]
            vacuumed_bytes=vacuumed,
            compacted=compacted,
            notes=notes,
            seconds=round(time.perf_counter() - started, 3),
        )
        log.info(
            "archive.run",
            run_id=run_id,
            dry_run=dry_run,
            entries=entries,
            rows=rows,
            bytes_before=report.bytes_before,
            bytes_after=report.bytes_after,
            seconds=report.seconds,
        )
        return report

    def _start_run(self, conn: apsw.Connection) -> tuple[int, int | None]:
        now = time.time()
        (interrupted,) = conn.execute(
            "SELECT max(id) FROM archive_runs WHERE status = 'running'"
        ).fetchall()[0]
        conn.execute(
            "UPDATE archive_runs SET status = 'interrupted', finished_at = ? "
            "WHERE status = 'running'",
            (now,),
        )
        conn.execute("INSERT INTO archive_runs (started_at, status) VALUES (?, 'running')", (now,))
        run_id = conn.last_insert_rowid()
        audit.append(
            conn, "archive.start", "archive_run", str(run_id), {"resumes": interrupted}, at=now
        )
        return run_id, interrupted

    def _finish_run(
        self, conn: apsw.Connection, *, run_id: int, detail: dict[str, Any], entries: int, rows: int
    ) -> None:
        now = time.time()
        conn.execute(
            "UPDATE archive_runs SET status = 'done', finished_at = ?, detail = ? WHERE id = ?",
            (now, json.dumps(detail), run_id),
        )
        audit.append(
            conn,
            "archive.finish",
            "archive_run",
            str(run_id),
            {"entries": entries, "rows": rows},
            at=now,
        )

    async def _reclaim_vectors(self) -> list[CompactReport]:
        await self._db.write(lambda conn: search.apply_vector_deletes(conn))
        ratio = self._db.settings.vector_compact_ratio
        stats = await self._db.read(search.vector_table_stats)
        if (
            self._embeddings is None
            or not ratio
            or not any(s.dead_rows and s.dead_rows >= ratio * s.live_rows for s in stats)
        ):
            return []
        return await self._embeddings.compact()

    # -- one batch of each phase (runs inside one transaction) ------------------

    def _record(self, conn: apsw.Connection, batch: _Batch, run_id: int | None) -> _Batch:
        """Compress the batch's moves and write their archive rows (not in a dry run)."""
        by_kind: dict[str, list[int]] = {}
        for i, move in enumerate(batch.moves):
            by_kind.setdefault(move.kind, []).append(i)
        batch.stored = [0] * len(batch.moves)
        now = time.time()
        first = last = None
        for kind, indexes in by_kind.items():
            payloads = [batch.moves[i].raw for i in indexes]
            dict_id, blobs = self._codecs.compress(
                conn, kind, payloads, may_train=run_id is not None
            )
            for i, blob in zip(indexes, blobs, strict=True):
                batch.stored[i] = len(blob)
                if run_id is None:
                    continue
                m = batch.moves[i]
                conn.execute(
                    _SQL_ARCHIVE_INSERT,
                    (
                        m.kind,
                        m.ref,
                        m.policy,
                        m.app,
                        m.user,
                        m.namespace,
                        m.rows,
                        len(m.raw),
                        len(blob),
                        dict_id,
                        run_id,
                        now,
                        blob,
                        _sha256(blob),
                        _sha256(m.raw),
                    ),
                )
                entry = conn.last_insert_rowid()
                first = entry if first is None else min(first, entry)
                last = entry if last is None else max(last, entry)
        if run_id is not None and batch.moves:
            rows = sum(m.rows for m in batch.moves)
            conn.execute(
                "UPDATE archive_runs SET entries = entries + ?, rows = rows + ? WHERE id = ?",
                (len(batch.moves), rows, run_id),
            )
            audit.append(
                conn,
                "archive.batch",
                "archive_run",
                str(run_id),
                {"entries": len(batch.moves), "rows": rows, "first": first, "last": last},
                at=now,
            )
        return batch

    def _session_batch(
        self,
        conn: apsw.Connection,
        *,
        cursor: tuple[float, str],
        now: float,
        policies: Sequence[ArchivePolicy],
        run_id: int | None,
    ) -> _Batch:
        batch = _Batch(cursor=cursor)
        days = [p.after_days for p in policies if p.kind == "sessions" and p.after_days is not None]
        if not days:
            batch.is_done = True
            return batch
        limit = self._db.settings.archive_batch_size
        cutoff = now - min(days) * _DAY
        rows = conn.execute(SQL_TERMINATED_SESSIONS, (cutoff, *cursor, limit)).fetchall()
        for session_id, app, updated_at in rows:
            batch.cursor = (updated_at, session_id)
            if not _older(updated_at, _best(policies, "sessions", app=app), now):
                continue
            session = conn.execute(_SQL_SESSION_ROW, (session_id,)).fetchall()
            events = conn.execute(_SQL_SESSION_EVENTS, (session_id,)).fetchall()
            raw = _encode(
                {"sessions": (_SESSION_COLUMNS, session), "events": (_EVENT_COLUMNS, events)}
            )
            if len(raw) > _MAX_RAW_BYTES:
                batch.too_big.append(f"session {session_id}")
                continue
            if run_id is not None:
                conn.execute(_SQL_SESSION_STUB, (session_id,))
                conn.execute(_SQL_DELETE_EVENTS, (session_id,))
            batch.moves.append(
                _Move(
                    "session",
                    session_id,
                    "sessions",
                    1 + len(events),
                    raw,
                    app=app,
                    user=session[0][2],
                )
            )
        batch.is_done = len(rows) < limit
        return self._record(conn, batch, run_id)

    def _memory_batch(
        self,
        conn: apsw.Connection,
        *,
        cursor: int,
        now: float,
        policies: Sequence[ArchivePolicy],
        run_id: int | None,
    ) -> _Batch:
        batch = _Batch(cursor=cursor)
        if not any(
            p.kind in ("memories", "tombstones", "versions") and p.after_days is not None
            for p in policies
        ):
            batch.is_done = True
            return batch
        limit = self._db.settings.archive_batch_size
        rows = conn.execute(SQL_CURRENT_MEMORIES_AFTER, (cursor, _EXAMINE_PER_BATCH)).fetchall()
        batch.is_done = True
        for item_id, namespace, key, version, type_, status, created_at, expires_at in rows:
            if len(batch.moves) >= limit:
                batch.is_done = False
                break
            batch.cursor = item_id
            ref = f"{namespace}/{key}"
            whole = self._whole_memory_policy(
                policies, namespace, type_, status, created_at, expires_at, now
            )
            if whole is not None:
                versions = conn.execute(_SQL_MEMORY_ROWS, (namespace, key)).fetchall()
                raw = _encode({"memories": (_MEMORY_COLUMNS, versions)})
                if len(raw) > _MAX_RAW_BYTES:
                    batch.too_big.append(f"memory {ref}")
                    continue
                if run_id is not None:
                    if status == "live":
                        memory.unindex(conn, item_id)
                    conn.execute(_SQL_DELETE_MEMORY, (namespace, key))
                batch.moves.append(
                    _Move("memory", ref, whole, len(versions), raw, namespace=namespace)
                )
                continue
            policy = _best(policies, "versions", namespace=namespace, type_=type_)
            if policy is None or policy.after_days is None or version <= policy.keep_versions:
                continue
            old = conn.execute(
                _SQL_OLD_VERSIONS,
                (
                    namespace,
                    key,
                    version - policy.keep_versions,
                    now - policy.after_days * _DAY,
                ),
            ).fetchall()
            if not old:
                continue
            raw = _encode({"memories": (_MEMORY_COLUMNS, old)})
            if len(raw) > _MAX_RAW_BYTES:
                batch.too_big.append(f"old versions of {ref}")
                continue
            if run_id is not None:
                conn.execute(_SQL_DELETE_IDS, (json.dumps([r[0] for r in old]),))
            batch.moves.append(
                _Move("versions", ref, "versions", len(old), raw, namespace=namespace)
            )
        else:
            batch.is_done = len(rows) < _EXAMINE_PER_BATCH
        return self._record(conn, batch, run_id)

    @staticmethod
    def _whole_memory_policy(
        policies: Sequence[ArchivePolicy],
        namespace: str,
        type_: str,
        status: str,
        created_at: float,
        expires_at: float | None,
        now: float,
    ) -> Literal["memories", "tombstones"] | None:
        """Which policy (if any) moves this memory whole, from its current version."""
        if status == "deleted" and _older(
            created_at, _best(policies, "tombstones", namespace=namespace, type_=type_), now
        ):
            return "tombstones"
        policy = _best(policies, "memories", namespace=namespace, type_=type_)
        if policy is None or policy.after_days is None:
            return None
        if expires_at is not None and expires_at <= now:
            return "memories" if _older(expires_at, policy, now) else None
        if (
            status == "live"
            and policy.idle_days is not None
            and created_at <= now - policy.idle_days * _DAY
        ):
            return "memories"
        return None

    # -- reading the archive ---------------------------------------------------

    async def list(
        self,
        *,
        kind: ArchiveKind | None = None,
        ref: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[ArchiveEntry]:
        """Archive entries, newest first.

        Args:
            kind: only ``"session"``, ``"memory"`` or ``"versions"`` entries.
            ref: only entries of this session id or ``namespace/key`` (needs ``kind``).
            limit: at most this many (1..10000).
            before: only entries with an id below this one (the next page).

        Returns:
            The entries (without their rows: see :meth:`show`).

        Raises:
            InvalidInputError: an argument is out of range, or ``ref`` without ``kind``.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             return await ab.archival.list(kind="session", limit=10)
            >>> asyncio.run(demo())
            []
        """
        if kind is not None and kind not in ("session", "memory", "versions"):
            raise InvalidInputError(f"kind {kind!r} is not one of session, memory, versions")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise InvalidInputError(f"ref must be a non-empty string, got {ref!r}")
        if ref is not None:
            check_text(ref, "ref")
        if ref is not None and kind is None:
            raise InvalidInputError("ref needs kind: a session id and a memory can look alike")
        _check_int(limit, "limit", 1, _MAX_LIST)
        if before is not None:
            _check_int(before, "before", 1, None)
        below = math.inf if before is None else before
        if kind is None:
            sql, params = SQL_ARCHIVE_LIST, (below, limit)
        elif ref is None:
            sql, params = SQL_ARCHIVE_BY_KIND, (kind, below, limit)
        else:
            sql, params = SQL_ARCHIVE_BY_REF, (kind, ref, below, limit)
        rows = await self._db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [_entry(row) for row in rows]

    async def show(self, entry_id: int) -> ArchivedItem:
        """One archive entry with its rows, decompressed, as they were in the hot tables.

        Args:
            entry_id: the entry's id (``archive list``).

        Returns:
            An :class:`~abathur.models.ArchivedItem`.

        Raises:
            InvalidInputError: entry_id is not a positive integer.
            ArchiveNotFoundError: no entry has this id (or it was restored).
            CorruptArchiveError: the entry fails verification (see :meth:`restore`).
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "tombstones", "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.delete("user:alice", "lang")
            ...             await ab.archival.run()
            ...             (entry,) = await ab.archival.list()
            ...             item = await ab.archival.show(entry.id)
            ...             return entry.ref, [r["status"] for r in item.tables["memories"]]
            >>> asyncio.run(demo())
            ('user:alice/lang', ['live', 'deleted'])
        """
        _check_int(entry_id, "archive entry id", 1, None)

        def read(conn: apsw.Connection) -> ArchivedItem:
            row = _one(conn, entry_id)
            tables = _open(conn, self._codecs, _Stored(*row[12:]))
            return ArchivedItem(
                entry=_entry(row[:12]),
                tables={
                    name: [dict(zip(t.columns, r, strict=True)) for r in t.rows]
                    for name, t in tables.items()
                },
            )

        return await self._db.read(read)

    # -- restoring -------------------------------------------------------------

    async def restore(self, entry_id: int) -> ArchiveRestoreReport:
        """Put an archive entry's rows back in the hot tables, exactly as they were.

        A session comes back with its status, state, revision, times and
        every event; a memory with every version (ids kept where still free);
        old versions slot back under their memory. A live memory is put back
        in the keyword index and queued for its vector (taken straight from
        the embedding cache when it is there), so search finds it again. The
        archive entry is removed; an audit record says what came back.

        Args:
            entry_id: the entry's id (``archive list``).

        Returns:
            An :class:`~abathur.models.ArchiveRestoreReport`.

        Raises:
            InvalidInputError: entry_id is not a positive integer.
            ArchiveNotFoundError: no entry has this id (or it was restored).
            AlreadyExistsError: the hot tables hold that item again (a session
                with the id, a memory written again at that key, or those
                versions); nothing was restored.
            MemoryNotFoundError: old versions whose memory is not in the hot
                tables (archived whole later: restore that entry first).
            CorruptArchiveError: the entry fails verification: its payload or
                dictionary does not match its sha256, it does not decompress,
                or would decompress past the size it records, or it does not
                hold the rows it names (unknown tables or columns, bad values);
                nothing was restored.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         path = pathlib.Path(tmp) / "a.db"
            ...         policies = [{"kind": "memories", "idle_days": 1e-9, "after_days": 0}]
            ...         async with Abathur.open(path, embedder="none", archive_pause_ms=0,
            ...                                 archive_policies=policies) as ab:
            ...             await ab.memory.put("user:alice", "lang", "Alice speaks French")
            ...             await ab.archival.run()
            ...             gone = await ab.memory.search("french", prefix="user:alice")
            ...             (entry,) = await ab.archival.list()
            ...             report = await ab.archival.restore(entry.id)
            ...             back = await ab.memory.search("french", prefix="user:alice")
            ...             return len(gone.hits), report.reindexed, [h.key for h in back.hits]
            >>> asyncio.run(demo())
            (0, 1, ['lang'])
        """
        _check_int(entry_id, "archive entry id", 1, None)
        started = time.perf_counter()

        def write(conn: apsw.Connection) -> tuple[ArchiveRestoreReport, bool]:
            row = _one(conn, entry_id)
            entry = _entry(row[:12])
            tables = _open(conn, self._codecs, _Stored(*row[12:]))
            reindexed, queued = 0, False
            if entry.kind == "session":
                _restore_session(conn, tables)
            elif entry.kind == "memory":
                reindexed, queued = _restore_memory(conn, tables)
            else:
                _restore_versions(conn, tables)
            conn.execute("DELETE FROM archive WHERE id = ?", (entry_id,))
            audit.append(
                conn,
                "archive.restore",
                "archive",
                str(entry_id),
                {"kind": entry.kind, "ref": entry.ref, "rows": entry.rows},
            )
            report = ArchiveRestoreReport(
                id=entry_id,
                kind=entry.kind,
                ref=entry.ref,
                rows=entry.rows,
                reindexed=reindexed,
                seconds=round(time.perf_counter() - started, 6),
            )
            return report, queued

        report, queued = await self._db.write(write)
        if queued and self._embeddings is not None:
            self._embeddings._notify()
        return report


def _chunk_note(conn: apsw.Connection) -> list[str]:
    has = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'chunks'"
    ).fetchall()
    if not has:
        return ["chunks: skipped, this file has no document tables"]
    return [
        "chunks: nothing to archive, documents.sync deletes a vanished file's chunks "
        "with it (their dead vector slots are reclaimed by compaction)"
    ]


def _check_int(value: object, what: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidInputError(f"{what} must be {bound}, got {value}")
    if value > INT64_MAX:  # no id or bound past SQLite's integers can be bound
        raise InvalidInputError(f"{what} must be at most {INT64_MAX}, got {show_number(value)}")


def _one(conn: apsw.Connection, entry_id: int) -> tuple[Any, ...]:
    rows = conn.execute(_SQL_ARCHIVE_ONE, (entry_id,)).fetchall()
    if not rows:
        raise ArchiveNotFoundError(
            f"no archive entry has id {entry_id} (never archived, or restored already)"
        )
    return rows[0]


def _entry(row: Sequence[Any]) -> ArchiveEntry:
    (
        entry_id,
        kind,
        ref,
        policy,
        app,
        user,
        namespace,
        rows,
        raw_bytes,
        stored_bytes,
        run_id,
        archived_at,
    ) = row
    return ArchiveEntry.model_construct(
        id=entry_id,
        kind=kind,
        ref=ref,
        policy=policy,
        app=app,
        user=user,
        namespace=namespace,
        rows=rows,
        raw_bytes=raw_bytes,
        stored_bytes=stored_bytes,
        run_id=run_id,
        archived_at=archived_at,
    )


def _restore_session(conn: apsw.Connection, tables: dict[str, _Rows]) -> None:
    sessions, events = tables["sessions"], tables["events"]
    (session,) = sessions.rows  # _check_ref: exactly one
    session_id = sessions.value(session, "id")
    found = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchall()
    has_events = conn.execute(
        "SELECT 1 FROM events WHERE session_id = ? LIMIT 1", (session_id,)
    ).fetchall()
    if (found and found[0][0] != "archived") or has_events:
        raise AlreadyExistsError(
            f"session {session_id!r} exists again in the hot tables (status "
            f"{found[0][0] if found else '?'}): nothing was restored"
        )
    if found:
        # Column names from _SESSION_COLUMNS (see _Rows), never from the payload.
        rest = sessions.without("id", [session])
        sets = ", ".join(f'"{c}" = ?' for c in rest.columns)
        conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*rest.rows[0], session_id))
    else:
        _insert(conn, sessions)
    _insert(conn, events)


def _restore_memory(conn: apsw.Connection, tables: dict[str, _Rows]) -> tuple[int, bool]:
    memories = tables["memories"]
    first = memories.rows[0]
    namespace, key = memories.value(first, "namespace"), memories.value(first, "key")
    (taken,) = conn.execute(
        "SELECT count(*) FROM memories WHERE namespace = ? AND key = ?", (namespace, key)
    ).fetchall()[0]
    if taken:
        raise AlreadyExistsError(
            f"memory {namespace!r}/{key!r} was written again after it was archived "
            f"({taken} version(s) now): nothing was restored; delete those versions' memory "
            "or read the archived one with 'abathur archive show'"
        )
    current_id: int | None = None
    for row in memories.rows:
        new_id = _insert_version(conn, memories, row)
        if memories.value(row, "is_current"):
            current_id = new_id
    if current_id is None:
        return 0, False
    live = conn.execute(
        "SELECT 1 FROM memories WHERE id = ? AND status = 'live'", (current_id,)
    ).fetchall()
    if not live:
        return 0, False
    return 1, memory.index(conn, current_id)


def _insert_version(conn: apsw.Connection, memories: _Rows, row: tuple[Any, ...]) -> int:
    """Insert one memory version with its old id if still free, else a new one; return it."""
    wanted = memories.value(row, "id")
    if conn.execute("SELECT 1 FROM memories WHERE id = ?", (wanted,)).fetchall():
        # The id was reused (rows archived at the top of the table): a new one.
        _insert(conn, memories.without("id", [row]))
        return int(conn.last_insert_rowid())
    _insert(conn, _Rows(memories.table, memories.columns, [row]))
    return int(wanted)


def _restore_versions(conn: apsw.Connection, tables: dict[str, _Rows]) -> None:
    memories = tables["memories"]
    first = memories.rows[0]
    namespace, key = memories.value(first, "namespace"), memories.value(first, "key")
    current = conn.execute(
        "SELECT version FROM memories WHERE namespace = ? AND key = ? AND is_current = 1",
        (namespace, key),
    ).fetchall()
    if not current:
        raise MemoryNotFoundError(
            f"memory {namespace!r}/{key!r} is not in the hot tables, so its old versions have "
            "nothing to go back under: restore the archive entry holding the memory first"
        )
    versions = [memories.value(row, "version") for row in memories.rows]
    clash = conn.execute(
        "SELECT version FROM memories WHERE namespace = ? AND key = ? "
        "AND version IN (SELECT value FROM json_each(?))",
        (namespace, key, json.dumps(versions)),
    ).fetchall()
    if clash or max(versions) >= current[0][0]:
        raise AlreadyExistsError(
            f"memory {namespace!r}/{key!r} already has version(s) "
            f"{sorted(v for (v,) in clash) or [current[0][0]]}: nothing was restored"
        )
    for row in memories.rows:
        _insert_version(conn, memories, row)

"""The archive payload format, and reading a stored row back verified.

A payload is ``{"v": 1, "tables": {name: {"columns": [...], "rows": [[...]]}}}``
as JSON, compressed (:mod:`abathur.archival.codecs`). Column lists are fixed
here; a payload records the columns it holds, and a restore checks each name
against these lists before using it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from abathur.archival.codecs import BadDictionaryError, Codecs, bounded_decompress, sha256
from abathur.errors import CorruptArchiveError
from abathur.stores import Transaction
from abathur.stores.archive import (
    ARCHIVED_TABLES,
    EVENT_COLUMNS,
    MEMORY_COLUMNS,
    SESSION_COLUMNS,
    ArchiveStore,
    HotRow,
    StoredRow,
)

__all__ = [
    "EVENT_COLUMNS",
    "MAX_RAW_BYTES",
    "MEMORY_COLUMNS",
    "SESSION_COLUMNS",
    "Rows",
    "Stored",
    "encode",
    "open_payload",
    "verify_archive",
]


def encode(tables: dict[str, tuple[Sequence[str], Sequence[HotRow]]]) -> bytes:
    """The payload JSON of some tables' rows: ``{name: (columns, rows)}``."""
    doc = {
        "v": 1,
        "tables": {
            name: {"columns": list(columns), "rows": [list(row) for row in rows]}
            for name, (columns, rows) in tables.items()
        },
    }
    # Python's float repr round-trips exactly, so REAL columns come back equal.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# The most JSON one archive row may hold, whatever its raw_bytes says. A run
# leaves a larger item hot (and says so), so every row it writes restores.
MAX_RAW_BYTES = 1 << 30
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# The tables each kind of entry holds, and our own column list for each: the
# only names ever formatted into SQL. A payload's names are looked up in these,
# never used themselves. A payload may lack columns a later abathur added (the
# table's default fills them), but never the ones a restore needs.
_TABLES: dict[str, tuple[str, ...]] = ARCHIVED_TABLES
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
class Rows:
    """One table's rows from a payload, under our own column names in our order."""

    table: str  # a key of _TABLES
    columns: tuple[str, ...]  # strings of _TABLES[table], never the payload's
    rows: list[tuple[Any, ...]]

    def value(self, row: Sequence[Any], column: str) -> Any:
        """``row``'s value in ``column``."""
        return row[self.columns.index(column)]

    def without(self, column: str, rows: Iterable[Sequence[Any]]) -> Rows:
        """``rows`` (of these columns) less ``column``: an insert that lets SQLite pick it."""
        at = self.columns.index(column)
        return Rows(
            self.table,
            self.columns[:at] + self.columns[at + 1 :],
            [(*row[:at], *row[at + 1 :]) for row in rows],
        )


@dataclass(frozen=True)
class Stored:
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

    @classmethod
    def of(cls, row: StoredRow) -> Stored:
        """The store's row, to be verified."""
        return cls(*row)

    def corrupt(self, problem: str) -> CorruptArchiveError:
        """The error naming this entry and ``problem``."""
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


def check_stored(
    store: ArchiveStore, codecs: Codecs, stored: Stored
) -> zstandard.ZstdCompressionDict | None:
    """Check what can be checked without decompressing; return the row's dictionary."""
    if not 0 <= stored.raw_bytes <= MAX_RAW_BYTES:
        raise stored.corrupt(
            f"it records {stored.raw_bytes} raw bytes, outside 0..{MAX_RAW_BYTES} "
            "(above the limit an archive row may hold)"
        )
    if stored.payload_sha256 is not None and sha256(stored.payload) != stored.payload_sha256:
        raise stored.corrupt("its payload does not match its checksum (the stored bytes changed)")
    if stored.dict_id is None:
        return None
    try:
        return codecs.verified_dictionary(store, stored.dict_id)
    except BadDictionaryError as exc:
        raise stored.corrupt(str(exc)) from None


def _raw_json(store: ArchiveStore, codecs: Codecs, stored: Stored) -> bytearray:
    """The JSON an archive row holds, checked against its checksums and sizes."""
    dictionary = check_stored(store, codecs, stored)
    try:
        raw = bounded_decompress(stored.payload, dictionary, stored.raw_bytes)
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
    if stored.raw_sha256 is not None and sha256(raw) != stored.raw_sha256:
        raise stored.corrupt(
            "what its payload decompresses to does not match its checksum "
            "(a wrong or damaged dictionary)"
        )
    return raw


def open_payload(store: ArchiveStore, codecs: Codecs, stored: Stored) -> dict[str, Rows]:
    """An archive row's tables, verified, each under our own column names.

    Raises:
        CorruptArchiveError: any check failed; the message says which.
    """
    if stored.kind not in _KIND_TABLES:
        raise stored.corrupt(f"its kind {_clip(stored.kind)!r} is unknown")
    raw = _raw_json(store, codecs, stored)
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


def _rows(stored: Stored, table: str, data: object) -> Rows:
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
    return Rows(table, kept, rows)


def _storable(value: object) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, float) and math.isfinite(value)


def _check_ref(stored: Stored, tables: dict[str, Rows]) -> None:
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


def verify_archive(tx: Transaction, *, quick: bool = False) -> tuple[list[str], str]:
    """Verify every archive row and dictionary, as ``abathur check`` does; never writes.

    Each dictionary and each row's stored payload is checked against its
    checksum; unless ``quick``, each payload is also decompressed (bounded by
    the size its row records), checked against the checksum of its JSON, and
    read exactly as a restore would read it. A row whose dictionary is damaged
    is reported once, under its dictionary. Rows archived before the
    checksums existed are verified as far as they can be, and counted.

    Args:
        tx: a read transaction on the file.
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
    store = tx.archive
    has_checksums = store.has_checksums()
    codecs = Codecs(checksummed=has_checksums)
    dicts = 0
    bad_dicts: dict[int, str] = {}
    for dict_id, kind, data, recorded in store.dictionaries(checksummed=has_checksums):
        dicts += 1
        if recorded is not None and sha256(data) != recorded:
            bad_dicts[dict_id] = kind
    rows = unchecked = 0
    dependents: dict[int, list[int]] = {d: [] for d in bad_dicts}
    corrupt: list[str] = []
    for row in store.stored_entries(checksummed=has_checksums):
        stored = Stored.of(row)
        rows += 1
        if stored.payload_sha256 is None or stored.raw_sha256 is None:
            unchecked += 1
        if stored.dict_id in dependents:
            dependents[stored.dict_id].append(stored.id)
            continue
        try:
            if quick:
                check_stored(store, codecs, stored)
            else:
                open_payload(store, codecs, stored)
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

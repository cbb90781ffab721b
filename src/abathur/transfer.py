"""TransferService: a database's data out to a versioned JSON Lines file, and back in.

``ab.transfer.export_to(dest)`` writes memories (every version in the hot
tables), sessions with their events, tasks, and app and user state, one JSON
object per line, in format ``abathur-export/1`` (docs/export-format.md).
``ab.transfer.import_from(path)`` reads such a file into a database:

* **Everything is checked first.** Every line is parsed and validated (JSON,
  format version, record schema, the limits and id/namespace rules the API
  enforces, version and event numbering, duplicates, order) before the first
  write; a bad line raises :class:`~abathur.errors.InvalidImportError` naming
  its line number. Then one write transaction compares each record with the
  database and inserts or skips it; a conflict raises
  :class:`~abathur.errors.ImportConflictError` (naming the line) and rolls the
  whole import back, so nothing is ever half-imported.
* **Idempotent.** A record identical to what the database holds is skipped;
  importing the same file twice changes nothing the second time.
* **Exact.** Timestamps, version numbers, statuses, tombstones and
  ``superseded_by`` are kept as they were; export -> import into an empty file
  -> export gives the same bytes. Internal row ids (``memories.id``, the
  keyword and vector index rows) and the audit log's ``seq`` are renumbered;
  the audit log, embeddings, documents, archive, metrics and the usage ledger
  are not exported.

Imported writes run in the database's write transaction like any other write,
add one audit record per imported item (plus one for the import), and put each
live memory in the keyword index and the embedding queue, as ``memory.put`` does.

Example:
    >>> import asyncio, io, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         out = pathlib.Path(tmp) / "data.jsonl"
    ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
    ...             await ab.memory.put("user:alice", "lang", "fr")
    ...             await ab.memory.put("user:alice", "lang", "en")
    ...             await ab.transfer.export_to(out)
    ...         async with Abathur.open(pathlib.Path(tmp) / "b.db", embedder="none") as ab:
    ...             first = await ab.transfer.import_from(out)
    ...             again = await ab.transfer.import_from(out)
    ...             history = await ab.memory.history("user:alice", "lang")
    ...         return first.imported.versions, again.skipped.memories, [m.value for m in history]
    >>> asyncio.run(demo())
    (2, 1, ['fr', 'en'])
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from abathur import audit, memory
from abathur.errors import (
    AbathurError,
    ImportConflictError,
    InvalidImportError,
    InvalidInputError,
)
from abathur.memory import MEMORY_TYPES, check_namespace
from abathur.models import ExportReport, ImportReport, TransferCounts
from abathur.sessions import STATUSES as SESSION_STATUSES
from abathur.stores import Backend, Transaction
from abathur.stores.transfer import TransferStore
from abathur.tasks import STATUSES as TASK_STATUSES
from abathur.values import check_id, decode, encode

if TYPE_CHECKING:
    from abathur.embeddings.queue import EmbeddingService

__all__ = ["FORMAT", "TransferService"]

#: The first line's ``format``. A reader refuses any other value: a later
#: version of the format gets a new number and its own reader.
FORMAT = "abathur-export/1"

# Files up to this size are parsed once: the checking pass keeps their records
# for the writing pass. Larger ones are parsed twice rather than held in memory.
_KEEP_BYTES = 32 * 1024 * 1024
_MAX_INT = 2**63 - 1  # SQLite's INTEGER: a larger number cannot be bound
_SEP = ":"
_AFTER_SEP = chr(ord(_SEP) + 1)  # as in abathur.memory: 'p:' < every 'p:...' < 'p;'
_MEMORY_STATUSES = ("live", "deleted", "superseded")
# A lone surrogate can only come from a \uD800-\uDFFF escape (UTF-8 cannot carry one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    prefix: str | None
    app: str | None
    user: str | None

    @property
    def has_sessions(self) -> bool:
        # --prefix alone exports memories only; --app/--user alone, sessions only.
        return self.prefix is None or self.app is not None or self.user is not None

    @property
    def has_memories(self) -> bool:
        return self.prefix is not None or (self.app is None and self.user is None)

    @property
    def has_app_state(self) -> bool:
        # App state is the app's, not a user's: --user alone leaves it out.
        return self.has_sessions and (self.app is not None or self.user is None)

    def people(self) -> dict[str, str | None]:
        return {"app": self.app, "user": self.user}

    def range(self) -> dict[str, str | None]:
        prefix = self.prefix
        return {
            "prefix": prefix,
            "after": None if prefix is None else prefix + _AFTER_SEP,
            "below": None if prefix is None else prefix + _SEP,
        }


def _line(record: dict[str, Any]) -> bytes:
    # ensure_ascii=False keeps the file readable; json escapes every control
    # character (newlines, NUL), so a record is always exactly one line.
    return (
        json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
            "utf-8"
        )
        + b"\n"
    )


class _Writer:
    """Buffers lines and hands them to ``sink`` in blocks (one write per line is slow)."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._parts: list[bytes] = []
        self._size = 0
        self.records = 0

    def add(self, record: dict[str, Any]) -> None:
        data = _line(record)
        self._parts.append(data)
        self._size += len(data)
        self.records += 1
        if self._size >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._sink(b"".join(self._parts))
            self._parts, self._size = [], 0


def _export(
    tx: Transaction, sink: Callable[[bytes], object], scope: _Scope, now: float
) -> tuple[TransferCounts, int, int]:
    """Write the whole export on ``sink``; return counts, expired memories left out, archived."""
    store = tx.transfer
    out = _Writer(sink)
    counts = _Counter()
    archived = 0
    out.add(
        {
            "format": FORMAT,
            "kind": "header",
            "filter": {"prefix": scope.prefix, "app": scope.app, "user": scope.user},
        }
    )
    out.records = 0  # the end record counts what lies between header and end
    if scope.has_sessions:
        if scope.has_app_state:
            for app, key, value, updated_at in store.export_app_state(app=scope.app):
                out.add(
                    {
                        "kind": "app_state",
                        "app": app,
                        "key": key,
                        "value": decode(value),
                        "updated_at": updated_at,
                    }
                )
                counts.app_state += 1
        for app, user, key, value, updated_at in store.export_user_state(
            app=scope.app, user=scope.user
        ):
            out.add(
                {
                    "kind": "user_state",
                    "app": app,
                    "user": user,
                    "key": key,
                    "value": decode(value),
                    "updated_at": updated_at,
                }
            )
            counts.user_state += 1
        for (
            sid,
            app,
            user,
            status,
            state,
            revision,
            created,
            updated,
            events,
        ) in store.export_sessions(app=scope.app, user=scope.user):
            out.add(
                {
                    "kind": "session",
                    "id": sid,
                    "app": app,
                    "user": user,
                    "status": status,
                    "state": decode(state),
                    "revision": revision,
                    "created_at": created,
                    "updated_at": updated,
                    "events": events,
                }
            )
            counts.sessions += 1
            for seq, eid, author, content, delta, meta, stamp in store.export_events(sid):
                out.add(
                    {
                        "kind": "event",
                        "session_id": sid,
                        "seq": seq,
                        "id": eid,
                        "author": author,
                        "content": decode(content),
                        "state_delta": decode(delta),
                        "metadata": decode(meta),
                        "timestamp": stamp,
                    }
                )
                counts.events += 1
            for (
                tid,
                _,
                prompt,
                tstatus,
                result,
                error,
                meta,
                created,
                updated,
            ) in store.export_tasks(sid):
                out.add(
                    {
                        "kind": "task",
                        "id": tid,
                        "session_id": sid,
                        "prompt": prompt,
                        "status": tstatus,
                        "result": decode(result),
                        "error": error,
                        "metadata": decode(meta),
                        "created_at": created,
                        "updated_at": updated,
                    }
                )
                counts.tasks += 1
        archived += store.count_archived_sessions(app=scope.app, user=scope.user)
    expired = 0
    if scope.has_memories:
        rows = store.export_memories(**scope.range())
        for (namespace, key), versions in _grouped(rows):
            last_expires = versions[-1][9]
            # Expired reads as absent on every read path: it is not exported either.
            if last_expires is not None and last_expires <= now:
                expired += 1
                continue
            out.add(
                {
                    "kind": "memory",
                    "namespace": namespace,
                    "key": key,
                    "versions": [_version_record(v) for v in versions],
                }
            )
            counts.memories += 1
            counts.versions += len(versions)
        archived += store.count_archived_memories(**scope.range())
    records = out.records
    out.add({"kind": "end", "records": records})
    out.flush()
    return counts.freeze(), expired, archived


def _grouped(
    rows: Iterator[tuple[Any, ...]],
) -> Iterator[tuple[tuple[str, str], list[tuple[Any, ...]]]]:
    current: tuple[str, str] | None = None
    versions: list[tuple[Any, ...]] = []
    for row in rows:
        ident = (row[0], row[1])
        if ident != current:
            if current is not None:
                yield current, versions
            current, versions = ident, []
        versions.append(row[2:])
    if current is not None:
        yield current, versions


def _version_record(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        version,
        type_,
        value,
        metadata,
        status,
        by_ns,
        by_key,
        created_at,
        first_created_at,
        expires_at,
    ) = row
    return {
        "version": version,
        "type": type_,
        "value": decode(value),
        "metadata": decode(metadata),
        "status": status,
        "superseded_by": None if by_ns is None else {"namespace": by_ns, "key": by_key},
        "created_at": created_at,
        "first_created_at": first_created_at,
        "expires_at": expires_at,
    }


@dataclass
class _Counter:
    app_state: int = 0
    user_state: int = 0
    sessions: int = 0
    events: int = 0
    tasks: int = 0
    memories: int = 0
    versions: int = 0

    def freeze(self) -> TransferCounts:
        return TransferCounts(**vars(self))


# ---------------------------------------------------------------------------
# Import: parsing and validating one line (no SQL)
# ---------------------------------------------------------------------------


class _AppState(NamedTuple):
    line: int
    app: str
    key: str
    value: str
    updated_at: float


class _UserState(NamedTuple):
    line: int
    app: str
    user: str
    key: str
    value: str
    updated_at: float


class _Session(NamedTuple):
    line: int
    id: str
    row: tuple[Any, ...]  # app, user, status, state, revision, created_at, updated_at
    events: int


class _Event(NamedTuple):
    line: int
    session_id: str
    seq: int
    row: tuple[Any, ...]  # id, author, content, state_delta, metadata, timestamp


class _Task(NamedTuple):
    line: int
    id: str
    row: tuple[Any, ...]  # session_id, prompt, status, result, error, metadata, created, updated


class _Memory(NamedTuple):
    line: int
    namespace: str
    key: str
    versions: list[tuple[Any, ...]]  # rows in _MEMORY_COLUMNS order


class _End(NamedTuple):
    line: int
    records: int


_Record = _AppState | _UserState | _Session | _Event | _Task | _Memory | _End

_FIELDS: dict[str, tuple[str, ...]] = {
    "app_state": ("kind", "app", "key", "value", "updated_at"),
    "user_state": ("kind", "app", "user", "key", "value", "updated_at"),
    "session": (
        "kind",
        "id",
        "app",
        "user",
        "status",
        "state",
        "revision",
        "created_at",
        "updated_at",
        "events",
    ),
    "event": (
        "kind",
        "session_id",
        "seq",
        "id",
        "author",
        "content",
        "state_delta",
        "metadata",
        "timestamp",
    ),
    "task": (
        "kind",
        "id",
        "session_id",
        "prompt",
        "status",
        "result",
        "error",
        "metadata",
        "created_at",
        "updated_at",
    ),
    "memory": ("kind", "namespace", "key", "versions"),
    "end": ("kind", "records"),
}
_VERSION_FIELDS = (
    "version",
    "type",
    "value",
    "metadata",
    "status",
    "superseded_by",
    "created_at",
    "first_created_at",
    "expires_at",
)
_HEADER_FIELDS = ("format", "kind", "filter")


class _Bad(Exception):
    """A problem with one line, raised inside the parser; the caller adds the line number."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message, self.reason = message, reason


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"is not UTF-8 ({exc.reason} at byte {exc.start})", "encoding") from None
    if not text.strip():
        raise _Bad("is blank; every line must be one JSON object", "json")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _Bad("nests JSON too deeply to read", "json") from None
    except ValueError as exc:
        raise _Bad(f"is not valid JSON: {exc}", "json") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(
                "holds a lone surrogate (a \\ud800-\\udfff escape not part of a pair); "
                "SQLite text cannot store it",
                "encoding",
            ) from None
    if not isinstance(data, dict):
        raise _Bad(f"is a JSON {_json_kind(data)}, not an object", "schema")
    return data


def _json_kind(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _fields(data: dict[str, Any], expected: tuple[str, ...], what: str) -> None:
    missing = [name for name in expected if name not in data]
    if missing:
        raise _Bad(f"{what} is missing field(s) {', '.join(map(repr, missing))}", "schema")
    extra = [name for name in data if name not in expected]
    if extra:
        raise _Bad(f"{what} has unknown field(s) {', '.join(map(repr, extra))}", "schema")


def _int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer, got {_json_kind(value)}", "schema")
    if not minimum <= value <= _MAX_INT:
        raise _Bad(f"{what} must be between {minimum} and {_MAX_INT}, got {value}", "schema")
    return value


def _time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{what} must be a number (epoch seconds), got {_json_kind(value)}", "schema")
    try:
        stamp = float(value)
    except OverflowError:
        stamp = math.inf
    if not math.isfinite(stamp):
        raise _Bad(f"{what} must be finite epoch seconds, got {value!r}", "schema")
    return stamp


def _maybe_time(value: object, what: str) -> float | None:
    return None if value is None else _time(value, what)


def _choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _Bad(f"{what} {value!r} is not one of {', '.join(choices)}", "schema")
    return value


def _object(value: object, what: str, limit: int) -> str:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be a JSON object, got {_json_kind(value)}", "schema")
    return encode(value, what=what, limit=limit)


def _state(value: object, what: str, limit: int, *, session: bool) -> str:
    """A session's state (session keys only) or an event's delta (no temp: keys).

    Keys follow the API's rules (abathur.sessions): each a valid id, and the
    name after an ``app:``/``user:`` prefix a valid id too.
    """
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be a JSON object, got {_json_kind(value)}", "schema")
    for key in value:
        check_id(key, f"{what} key")
        if key.startswith("temp:"):
            raise _Bad(f"{what} key {key!r}: temp: keys are never stored", "schema")
        prefix = next((p for p in ("app:", "user:") if key.startswith(p)), None)
        if prefix is None:
            continue
        if session:
            raise _Bad(f"{what} key {key!r} belongs in an {prefix[:-1]}_state record", "schema")
        check_id(key[len(prefix) :], f"{what} key {key!r} after the {prefix!r} prefix")
    return encode(value, what=what, limit=limit)


def _parse(raw: bytes, limit: int) -> _Record | dict[str, Any]:
    """One line -> a record ready for SQL (header: the dict). Raises _Bad or an AbathurError."""
    data = _load(raw)
    if "format" in data:
        _fields(data, _HEADER_FIELDS, "the header")
        header: dict[str, Any] = data
        return header
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise _Bad(f"has kind {kind!r}, not one of {', '.join(_FIELDS)}", "schema")
    _fields(data, _FIELDS[kind], f"a {kind} record")
    if kind == "memory":
        return _parse_memory(data, limit)
    if kind == "event":
        session_id = check_id(data["session_id"], "event session_id")
        seq = _int(data["seq"], "event seq", 1)
        return _Event(
            0,
            session_id,
            seq,
            (
                check_id(data["id"], "event id"),
                check_id(data["author"], "event author"),
                encode(data["content"], what="event content", limit=limit),
                _state(data["state_delta"], "event state_delta", limit, session=False),
                _object(data["metadata"], "event metadata", limit),
                _time(data["timestamp"], "event timestamp"),
            ),
        )
    if kind == "session":
        session_id = check_id(data["id"], "session id")
        return _Session(
            0,
            session_id,
            (
                check_id(data["app"], "app"),
                check_id(data["user"], "user"),
                _choice(data["status"], "session status", SESSION_STATUSES),
                _state(data["state"], f"state of session {session_id!r}", limit, session=True),
                _int(data["revision"], "session revision", 0),
                _time(data["created_at"], "session created_at"),
                _time(data["updated_at"], "session updated_at"),
            ),
            _int(data["events"], "session events", 0),
        )
    if kind == "task":
        prompt, error = data["prompt"], data["error"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise _Bad("task prompt must be a non-blank string", "schema")
        encode(prompt, what="task prompt", limit=limit)
        if error is not None:
            if not isinstance(error, str):
                raise _Bad(
                    f"task error must be a string or null, got {_json_kind(error)}", "schema"
                )
            encode(error, what="task error", limit=limit)
        result = data["result"]
        return _Task(
            0,
            check_id(data["id"], "task id"),
            (
                check_id(data["session_id"], "task session_id"),
                prompt,
                _choice(data["status"], "task status", TASK_STATUSES),
                None if result is None else encode(result, what="task result", limit=limit),
                error,
                _object(data["metadata"], "task metadata", limit),
                _time(data["created_at"], "task created_at"),
                _time(data["updated_at"], "task updated_at"),
            ),
        )
    if kind == "app_state":
        return _AppState(
            0,
            check_id(data["app"], "app"),
            check_id(data["key"], "app state key"),
            encode(data["value"], what="app state value", limit=limit),
            _time(data["updated_at"], "app state updated_at"),
        )
    if kind == "user_state":
        return _UserState(
            0,
            check_id(data["app"], "app"),
            check_id(data["user"], "user"),
            check_id(data["key"], "user state key"),
            encode(data["value"], what="user state value", limit=limit),
            _time(data["updated_at"], "user state updated_at"),
        )
    return _End(0, _int(data["records"], "end records", 0))


def _parse_memory(data: dict[str, Any], limit: int) -> _Memory:
    namespace = check_namespace(data["namespace"])
    key = check_id(data["key"], "memory key")
    versions = data["versions"]
    if not isinstance(versions, list) or not versions:
        raise _Bad("memory versions must be a non-empty array", "schema")
    rows: list[tuple[Any, ...]] = []
    for index, item in enumerate(versions):
        what = f"version [{index}]"
        if not isinstance(item, dict):
            raise _Bad(f"{what} must be a JSON object, got {_json_kind(item)}", "schema")
        _fields(item, _VERSION_FIELDS, what)
        number = _int(item["version"], f"{what} version", 1)
        if rows and number != rows[-1][0] + 1:
            raise _Bad(
                f"memory versions must be contiguous: version {rows[-1][0]} is followed by "
                f"{number}",
                "version_gap",
            )
        status = _choice(item["status"], f"{what} status", _MEMORY_STATUSES)
        by = item["superseded_by"]
        if status == "superseded":
            if not isinstance(by, dict) or set(by) != {"namespace", "key"}:
                raise _Bad(
                    f"{what} is superseded, so superseded_by must be "
                    '{"namespace": ..., "key": ...}',
                    "schema",
                )
            by_ns: str | None = check_namespace(by["namespace"], f"{what} superseded_by namespace")
            by_key = check_id(by["key"], f"{what} superseded_by key")
        elif by is not None:
            raise _Bad(f"{what} is {status}, so superseded_by must be null", "schema")
        else:
            by_ns = by_key = None
        rows.append(
            (
                number,
                _choice(item["type"], f"{what} type", MEMORY_TYPES),
                encode(item["value"], what="memory value", limit=limit),
                _object(item["metadata"], "metadata", limit),
                status,
                by_ns,
                by_key,
                _time(item["created_at"], f"{what} created_at"),
                _time(item["first_created_at"], f"{what} first_created_at"),
                _maybe_time(item["expires_at"], f"{what} expires_at"),
            )
        )
    return _Memory(0, namespace, key, rows)


# ---------------------------------------------------------------------------
# Import: the whole file, checked before anything is written
# ---------------------------------------------------------------------------


def _records(path: Path, limit: int, digest: Any) -> Iterator[_Record]:
    """Every record of the file at ``path``, checked one by one and across lines.

    Raises InvalidImportError naming the first bad line. ``digest`` (a
    hashlib object) sees every byte, so the writing pass can prove it read the
    same file the checking pass did.
    """
    name = path.name
    with path.open("rb") as f:
        line = 0
        check = _CrossCheck()
        for raw in f:
            line += 1
            digest.update(raw)
            try:
                if check.ended:
                    raise _Bad("comes after the end record", "order")
                parsed = _parse(raw, limit)
                if line == 1:
                    _check_header(parsed)
                    continue
                if isinstance(parsed, dict):
                    raise _Bad("is a second header", "order")
                record = parsed._replace(line=line)
                check.add(record)
            except _Bad as bad:
                raise InvalidImportError(name, line, bad.message, reason=bad.reason) from None
            except InvalidInputError as exc:
                raise InvalidImportError(name, line, exc.message, reason=exc.code) from None
            except RecursionError:
                # json.loads took it, but a deeper call (encoding it again) did not.
                raise InvalidImportError(
                    name, line, "nests JSON too deeply to store", reason="json"
                ) from None
            yield record
        if line == 0:
            raise InvalidImportError(name, 1, "the file is empty: no header", reason="format")
        if not check.ended:
            try:
                check.finish_session()
            except _Bad as bad:
                raise InvalidImportError(name, line, bad.message, reason=bad.reason) from None
            raise InvalidImportError(
                name,
                line,
                "the file ends without its end record: it was cut short "
                "(a killed or failed export?)",
                reason="truncated",
            )


def _check_header(parsed: object) -> None:
    if not isinstance(parsed, dict):
        raise _Bad(f'must be the header {{"format": "{FORMAT}", ...}}', "format")
    found = parsed["format"]
    if found != FORMAT:
        raise _Bad(f"has format {found!r}; this abathur reads {FORMAT!r} only", "format")
    if parsed["kind"] != "header":
        raise _Bad(f"the header's kind must be 'header', got {parsed['kind']!r}", "schema")
    scope = parsed["filter"]
    if not isinstance(scope, dict) or set(scope) != {"prefix", "app", "user"}:
        raise _Bad('the header\'s filter must be {"prefix", "app", "user"}', "schema")


@dataclass
class _CrossCheck:
    """What spans lines: duplicates, order, event numbering, the end record's count."""

    records: int = 0
    ended: bool = False
    memories: set[tuple[str, str]] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    # Sessions named by tasks before any such session record: the database's, or misplaced.
    early: dict[str, str] = field(default_factory=dict)
    app_state: set[tuple[str, str]] = field(default_factory=set)
    user_state: set[tuple[str, str, str]] = field(default_factory=set)
    # The session whose events may follow, its event count, the next seq, its event ids.
    open_session: _Session | None = None
    next_seq: int = 1
    event_ids: set[str] = field(default_factory=set)

    def add(self, record: _Record) -> None:
        if isinstance(record, _End):
            self.finish_session()
            if record.records != self.records:
                raise _Bad(
                    f"the end record counts {record.records} record(s) but the file holds "
                    f"{self.records}: lines are missing or were added",
                    "truncated",
                )
            self.ended = True
            return
        self.records += 1
        if isinstance(record, _Event):
            self._event(record)
            return
        if not isinstance(record, _Task):
            self.finish_session()
        if isinstance(record, _Session):
            self._once(self.sessions, record.id, f"session {record.id!r}")
            if record.id in self.early:
                raise _Bad(
                    f"session {record.id!r} comes after its {self.early[record.id]}: a "
                    "session's tasks must follow it",
                    "order",
                )
            self.open_session, self.next_seq, self.event_ids = record, 1, set()
        elif isinstance(record, _Task):
            self._once(self.tasks, record.id, f"task {record.id!r}")
            session_id = record.row[0]
            if session_id in self.sessions and (
                self.open_session is None or self.open_session.id != session_id
            ):
                raise _Bad(
                    f"task {record.id!r} must follow its session {session_id!r} "
                    "(with its events) in the file",
                    "order",
                )
            if session_id not in self.sessions:
                # Not in the file so far: the database must have it (checked when writing).
                self.early.setdefault(session_id, f"task {record.id!r} (line {record.line})")
        elif isinstance(record, _Memory):
            self._once(
                self.memories,
                (record.namespace, record.key),
                f"memory {record.namespace!r}/{record.key!r}",
            )
        elif isinstance(record, _AppState):
            self._once(
                self.app_state, (record.app, record.key), f"app state {record.app!r}/{record.key!r}"
            )
        else:
            self._once(
                self.user_state,
                (record.app, record.user, record.key),
                f"user state {record.app!r}/{record.user!r}/{record.key!r}",
            )

    def _event(self, event: _Event) -> None:
        session = self.open_session
        if session is None or session.id != event.session_id or self.next_seq > session.events:
            raise _Bad(
                f"event seq {event.seq} of session {event.session_id!r} must follow its "
                "session record, in seq order, before that session's tasks; the session "
                "record's 'events' counts them",
                "order",
            )
        if event.seq != self.next_seq:
            raise _Bad(
                f"event seq {event.seq} of session {event.session_id!r} should be "
                f"{self.next_seq}: seqs run 1, 2, 3... with no gap",
                "version_gap",
            )
        self._once(
            self.event_ids,
            event.row[0],
            f"event id {event.row[0]!r} in session {event.session_id!r}",
        )
        self.next_seq += 1

    def finish_session(self) -> None:
        session = self.open_session
        if session is not None and self.next_seq - 1 != session.events:
            raise _Bad(
                f"session {session.id!r} (line {session.line}) says it has "
                f"{session.events} event(s) but {self.next_seq - 1} follow it",
                "order",
            )
        self.open_session = None

    @staticmethod
    def _once(seen: set[Any], ident: Any, what: str) -> None:
        if ident in seen:
            raise _Bad(f"{what} appears twice in the file", "duplicate")
        seen.add(ident)


# ---------------------------------------------------------------------------
# Import: writing (one transaction)
# ---------------------------------------------------------------------------


@dataclass
class _Applied:
    imported: _Counter = field(default_factory=_Counter)
    skipped: _Counter = field(default_factory=_Counter)
    queued: bool = False


class _DryRun(Exception):
    """Raised at the end of a dry run so the write transaction rolls back."""

    def __init__(self, applied: _Applied) -> None:
        super().__init__("dry run")
        self.applied = applied


def _apply(
    tx: Transaction,
    path: Path,
    checked: list[_Record] | None,
    limit: int,
    expected_digest: str,
    now: float,
    dry_run: bool,
) -> _Applied:
    """The writing pass, inside the write transaction: insert, skip or refuse each record.

    ``checked`` holds the records of the checking pass when the file was small
    enough to keep them (:data:`_KEEP_BYTES`); otherwise the file is read and
    parsed again, and its digest must match the one the checking pass saw.
    """
    store = tx.transfer
    applied = _Applied()
    digest = hashlib.sha256()
    name = path.name
    inserting_session: bool | None = None  # the open session: new (True) or present (False)
    records = checked if checked is not None else _records(path, limit, digest)
    for record in records:
        try:
            if isinstance(record, _Event):
                _apply_event(tx, store, record, applied, inserting_session, now)
            elif isinstance(record, _Session):
                inserting_session = _apply_session(tx, store, record, applied, now)
            elif isinstance(record, _Task):
                _apply_task(tx, store, record, applied, now)
            elif isinstance(record, _Memory):
                _apply_memory(tx, store, record, applied, now)
            elif isinstance(record, _AppState | _UserState):
                _apply_state(tx, store, record, applied, now)
        except RecursionError:
            raise InvalidImportError(
                name, record.line, "nests JSON too deeply to index", reason="json"
            ) from None
        except _Bad as bad:
            if bad.reason == "conflict":
                raise ImportConflictError(name, record.line, bad.message) from None
            raise InvalidImportError(name, record.line, bad.message, reason=bad.reason) from None
    if checked is None and digest.hexdigest() != expected_digest:
        raise InvalidImportError(
            name, 1, "the file changed while it was being imported", reason="changed"
        )
    if applied.imported == _Counter():
        # Everything was present already: a repeated import changes nothing, not even the log.
        if dry_run:
            raise _DryRun(applied)
        return applied
    audit.append(
        tx,
        "transfer.import",
        "import",
        expected_digest[:16],
        {
            "format": FORMAT,
            "file": name,
            "imported": vars(applied.imported),
            "skipped": vars(applied.skipped),
        },
        at=now,
    )
    if dry_run:
        raise _DryRun(applied)
    return applied


def _apply_state(
    tx: Transaction,
    store: TransferStore,
    record: _AppState | _UserState,
    applied: _Applied,
    now: float,
) -> None:
    if isinstance(record, _AppState):
        ident: tuple[str, ...] = (record.app, record.key)
        found = store.app_state_row(record.app, record.key)
        what, counter = f"app state {record.app!r}/{record.key!r}", "app_state"
    else:
        ident = (record.app, record.user, record.key)
        found = store.user_state_row(record.app, record.user, record.key)
        what, counter = f"user state {record.app!r}/{record.user!r}/{record.key!r}", "user_state"
    if found is not None:
        if found != (record.value, record.updated_at):
            raise _Bad(
                f"{what} already holds a different value (or update time) in the database",
                "conflict",
            )
        _bump(applied.skipped, counter)
        return
    if isinstance(record, _AppState):
        store.insert_app_state(record.app, record.key, record.value, record.updated_at)
    else:
        store.insert_user_state(
            record.app, record.user, record.key, record.value, record.updated_at
        )
    audit.append(tx, f"{counter}.import", counter, "/".join(ident), {}, at=now)
    _bump(applied.imported, counter)


def _apply_session(
    tx: Transaction,
    store: TransferStore,
    record: _Session,
    applied: _Applied,
    now: float,
) -> bool:
    found = store.session_row(record.id)
    if found is not None:
        events = store.count_events(record.id)
        if found != record.row or events != record.events:
            raise _Bad(
                f"session {record.id!r} exists in the database with a different "
                "status, state, revision, times or number of events",
                "conflict",
            )
        applied.skipped.sessions += 1
        return False
    # Each covered row names the audit record that wrote it (abathur.audit, COVERED).
    app, user, _status, _state, _revision, created_at, _updated = record.row
    seq = audit.next_seq(tx)
    store.insert_session(record.id, record.row, seq)
    audit.append(
        tx,
        "session.import",
        "session",
        record.id,
        {"app": app, "user": user, "events": record.events},
        at=now,
        content=("sessions", (record.id, app, user, created_at)),
    )
    applied.imported.sessions += 1
    return True


def _apply_event(
    tx: Transaction,
    store: TransferStore,
    record: _Event,
    applied: _Applied,
    inserting: bool | None,
    now: float,
) -> None:
    if inserting:
        row = (record.session_id, record.seq, *record.row)
        seq = audit.next_seq(tx)
        store.insert_event(row, seq)
        audit.append(
            tx,
            "event.import",
            "session",
            record.session_id,
            {"seq": record.seq},
            at=now,
            content=("events", row),
        )
        applied.imported.events += 1
        return
    found = store.event_row(record.session_id, record.seq)
    if found is None or found != record.row:
        raise _Bad(
            f"event seq {record.seq} of session {record.session_id!r} differs from the database's",
            "conflict",
        )
    applied.skipped.events += 1


def _apply_task(
    tx: Transaction, store: TransferStore, record: _Task, applied: _Applied, now: float
) -> None:
    found = store.task_row(record.id)
    if found is not None:
        if found != record.row:
            raise _Bad(
                f"task {record.id!r} exists in the database with different fields", "conflict"
            )
        applied.skipped.tasks += 1
        return
    session_id = record.row[0]
    if not store.session_exists(session_id):
        raise _Bad(
            f"task {record.id!r} belongs to session {session_id!r}, which is neither in "
            "the file nor in the database",
            "missing_session",
        )
    seq = audit.next_seq(tx)
    store.insert_task(record.id, record.row, seq)
    audit.append(
        tx,
        "task.import",
        "task",
        record.id,
        {"session_id": session_id},
        at=now,
        content=("tasks", (record.id, *record.row)),
    )
    applied.imported.tasks += 1


def _apply_memory(
    tx: Transaction,
    store: TransferStore,
    record: _Memory,
    applied: _Applied,
    now: float,
) -> None:
    found = store.memory_history(record.namespace, record.key)
    if found:
        if found != record.versions:
            raise _Bad(
                f"memory {record.namespace!r}/{record.key!r} exists in the database with a "
                f"different history (versions {found[0][0]}..{found[-1][0]} there, "
                f"{record.versions[0][0]}..{record.versions[-1][0]} in the file)",
                "conflict",
            )
        applied.skipped.memories += 1
        applied.skipped.versions += len(found)
        return
    last = len(record.versions) - 1
    entity_id = f"{record.namespace}/{record.key}"
    for index, row in enumerate(record.versions):
        # One audit record per version, covering it as memory.put's does.
        version, type_, value, metadata, status, by_ns, by_key, created, first, expires = row
        seq = audit.next_seq(tx)
        # The id is read before the audit record's own insert.
        current_id = store.insert_memory(
            record.namespace, record.key, row, is_current=index == last, audit_seq=seq
        )
        audit.append(
            tx,
            "memory.import",
            "memory",
            entity_id,
            {"version": version, "versions": len(record.versions)},
            at=now,
            content=(
                "memories",
                (
                    record.namespace,
                    record.key,
                    version,
                    type_,
                    value,
                    metadata,
                    status,
                    by_ns,
                    by_key,
                    first,
                    created,
                    expires,
                ),
            ),
        )
    # The keyword index and the embedding queue, as memory.put leaves them.
    if record.versions[-1][4] == "live" and memory.index(tx, current_id):
        applied.queued = True
    applied.imported.memories += 1
    applied.imported.versions += len(record.versions)


def _bump(counter: _Counter, name: str) -> None:
    setattr(counter, name, getattr(counter, name) + 1)


# ---------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------


def _text(value: str, what: str) -> str:
    # A lone surrogate (e.g. a command-line byte that is not UTF-8) cannot be
    # bound as SQLite text nor written as UTF-8: refuse it up front.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} {value!r} is not valid Unicode text (it holds a lone surrogate)"
        ) from None
    return value


def _check_optional_id(value: object, what: str) -> str | None:
    return None if value is None else _text(check_id(value, what), what)


class TransferService:
    """Export to and import from ``abathur-export/1`` JSON Lines: ``ab.transfer``.

    Example:
        >>> import asyncio, io, json, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
        ...             s = await ab.sessions.create(app="helpdesk", user="alice", session_id="s1")
        ...             buffer = io.BytesIO()
        ...             report = await ab.transfer.export_to(buffer, app="helpdesk")
        ...     kinds = [json.loads(line)["kind"] for line in buffer.getvalue().splitlines()]
        ...     return report.counts.sessions, kinds
        >>> asyncio.run(demo())
        (1, ['header', 'session', 'end'])
    """

    def __init__(self, db: Backend, embeddings: EmbeddingService | None = None) -> None:
        self._db = db
        self._embeddings = embeddings

    async def export_to(
        self,
        dest: str | Path | IO[bytes],
        *,
        prefix: str | None = None,
        app: str | None = None,
        user: str | None = None,
    ) -> ExportReport:
        """Write the database's data (or a part of it) as ``abathur-export/1`` JSON Lines.

        One read snapshot, streamed: memory use does not grow with the data.
        With no filter, everything is exported. ``prefix`` alone exports the
        memories under it (whole segments); ``app`` and/or ``user`` alone, the
        sessions of that app/user with their events and tasks, the user state
        of (app, user) and, unless only ``user`` is given, the app's state.
        Both kinds of filter together export both parts. Memories whose
        current version has expired are left out (they read as absent
        everywhere); archive entries are not exported (restore them first:
        the report counts them as ``archived``).

        Args:
            dest: a file path (written to a temporary file, then renamed into
                place) or a binary stream (e.g. ``sys.stdout.buffer``).
            prefix: only memories in this namespace or under it.
            app: only sessions (and state) of this app.
            user: only sessions (and user state) of this user.

        Returns:
            An :class:`~abathur.models.ExportReport`: what was written.

        Raises:
            InvalidNamespaceError: ``prefix`` breaks a namespace rule.
            InvalidIdError: ``app`` or ``user`` is not a valid id.
            InvalidInputError: ``dest`` is neither a path nor a binary stream, or
                writing it failed (bad path, no permission, disk full).
            DatabaseError: the database cannot be read.

        Example:
            >>> import asyncio, io, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             await ab.memory.put("user:alice", "lang", "fr")
            ...             await ab.memory.put("user:bob", "lang", "en")
            ...             buffer = io.BytesIO()
            ...             await ab.transfer.export_to(buffer, prefix="user:alice")
            ...     return buffer.getvalue().decode().splitlines()[1]
            >>> print(asyncio.run(demo()))  # doctest: +ELLIPSIS
            {"kind":"memory","namespace":"user:alice","key":"lang","versions":[{"version":1,...}]}
        """
        scope = _Scope(
            None if prefix is None else _text(check_namespace(prefix, "prefix"), "prefix"),
            _check_optional_id(app, "app"),
            _check_optional_id(user, "user"),
        )
        started = time.perf_counter()
        now = time.time()
        if isinstance(dest, str | Path):
            target = Path(dest)
            if not target.name or "\x00" in str(target) or not _fs_encodable(target):
                raise InvalidInputError(f"dest {str(dest)!r} is not a file path")
            temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                with temp.open("wb") as f:
                    counts, expired, archived = await self._db.read(
                        lambda tx: _export(tx, f.write, scope, now)
                    )
                    f.flush()
                    os.fsync(f.fileno())
                temp.replace(target)
            except OSError as exc:
                raise _os_error(exc, f"writing the export to {str(target)!r}") from None
            finally:
                with contextlib.suppress(OSError):  # e.g. a name too long: it never existed
                    temp.unlink(missing_ok=True)
        elif hasattr(dest, "write"):
            stream = dest

            def sink(data: bytes) -> None:
                try:
                    stream.write(data)
                except TypeError as exc:  # a text stream: only this, not a bug of ours
                    raise _NotBinaryError(str(exc)) from None

            try:
                counts, expired, archived = await self._db.read(
                    lambda tx: _export(tx, sink, scope, now)
                )
            except _NotBinaryError as exc:
                raise InvalidInputError(
                    f"dest must be a path or a binary stream; writing bytes to it failed: {exc}"
                ) from None
            except OSError as exc:
                raise _os_error(exc, "writing the export") from None
        else:
            raise InvalidInputError(
                f"dest must be a path or a binary stream, got {type(dest).__name__}"
            )
        return ExportReport(
            format=FORMAT,
            prefix=scope.prefix,
            app=scope.app,
            user=scope.user,
            counts=counts,
            expired=expired,
            archived=archived,
            seconds=round(time.perf_counter() - started, 6),
        )

    async def import_from(self, source: str | Path, *, dry_run: bool = False) -> ImportReport:
        """Import an ``abathur-export/1`` file: check every line, then write it all or nothing.

        First every line is read and checked (JSON, format version, each
        record's fields, the limits and id/namespace rules of the API,
        contiguous version and event numbers, duplicates, order, the end
        record). Then, in one write transaction, each record is compared with
        the database: absent -> inserted exactly (times, versions, statuses);
        identical -> skipped; different -> :class:`ImportConflictError` and the
        whole import is rolled back. A task's session must be in the file or
        already in the database.

        Args:
            source: the file's path.
            dry_run: do everything, report it, then roll back: nothing is written.

        Returns:
            An :class:`~abathur.models.ImportReport`: counts imported and skipped.

        Raises:
            InvalidImportError: a line is bad; ``line`` and ``reason`` say where and why.
            ImportConflictError: a record differs from what the database holds.
            InvalidInputError: ``source`` is not a readable file, or dry_run not a bool.
            DatabaseError: the database cannot be written.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur, InvalidImportError
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         bad = pathlib.Path(tmp) / "bad.jsonl"
            ...         bad.write_text('{"format": "abathur-export/1", "kind": "header", '
            ...                        '"filter": {"prefix": null, "app": null, "user": null}}\\n'
            ...                        '[1, 2]\\n')
            ...         async with Abathur.open(pathlib.Path(tmp) / "a.db", embedder="none") as ab:
            ...             try:
            ...                 await ab.transfer.import_from(bad)
            ...             except InvalidImportError as exc:
            ...                 return exc.line, exc.reason
            >>> asyncio.run(demo())
            (2, 'schema')
        """
        if not isinstance(source, str | Path):
            raise InvalidInputError(f"source must be a file path, got {type(source).__name__}")
        if not isinstance(dry_run, bool):
            raise InvalidInputError(f"dry_run must be a bool, got {type(dry_run).__name__}")
        path = Path(source)
        try:
            is_file = _fs_encodable(path) and path.is_file()
        except OSError as exc:  # a name too long, a loop of links...
            raise _os_error(exc, f"reading {str(path)!r}") from None
        if not is_file:
            raise InvalidInputError(f"no file to import at {str(path)!r}")
        limit = self._db.settings.max_value_bytes
        started = time.perf_counter()

        def check() -> tuple[str, int, list[_Record] | None]:
            digest = hashlib.sha256()
            # A big file is parsed again by the writing pass rather than held in memory.
            keep = path.stat().st_size <= _KEEP_BYTES
            kept: list[_Record] = []
            lines = 1
            for record in _records(path, limit, digest):
                lines += 1
                if keep:
                    kept.append(record)
            return digest.hexdigest(), lines, kept if keep else None

        try:
            expected, lines, checked = await asyncio.to_thread(check)
            now = time.time()
            try:
                applied = await self._db.write(
                    lambda tx: _apply(tx, path, checked, limit, expected, now, dry_run)
                )
            except _DryRun as rolled_back:
                applied = rolled_back.applied
        except OSError as exc:
            raise _os_error(exc, f"reading {str(path)!r}") from None
        if applied.queued and not dry_run and self._embeddings is not None:
            self._embeddings.notify()
        return ImportReport(
            format=FORMAT,
            file=str(path),
            lines=lines,
            is_dry_run=dry_run,
            imported=applied.imported.freeze(),
            skipped=applied.skipped.freeze(),
            seconds=round(time.perf_counter() - started, 6),
        )


class _NotBinaryError(Exception):
    """The export's stream refused bytes (a text stream)."""


def _fs_encodable(path: Path) -> bool:
    """False for a path with a lone surrogate no file name can hold (open() would raise)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


def _os_error(exc: OSError, doing: str) -> AbathurError:
    # The file (not the database) is at fault: a bad path, no permission, a full disk.
    return InvalidInputError(f"{doing} failed: {exc.strerror or exc}")

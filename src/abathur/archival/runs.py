"""An archive run's batches, its bookkeeping (``archive_runs``) and reclaiming space."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from abathur import audit, memory
from abathur.archival.codecs import Codecs, sha256
from abathur.archival.payload import (
    EVENT_COLUMNS,
    MAX_RAW_BYTES,
    MEMORY_COLUMNS,
    SESSION_COLUMNS,
    encode,
)
from abathur.archival.policies import DAY, best_policy, is_older, whole_memory_policy
from abathur.backends.sqlite.connection import connect, translate_errors
from abathur.config import ArchivePolicy
from abathur.models import ArchiveKind, ArchivePolicyResult

# Current memories examined per transaction, at most: a batch stops earlier
# once it has moved archive_batch_size items.
_EXAMINE_PER_BATCH = 2000
POLICY_KINDS = ("sessions", "memories", "tombstones", "versions", "chunks")

# Terminated sessions last updated before a cutoff, keyset-paged by
# (updated_at, id) on the partial index sessions_terminated.
# Params: cutoff, last updated_at, last id, limit.
SQL_TERMINATED_SESSIONS = (
    "SELECT id, app, updated_at FROM sessions INDEXED BY sessions_terminated "
    "WHERE status = 'terminated' AND updated_at < ? AND (updated_at, id) > (?, ?) "
    "ORDER BY updated_at, id LIMIT ?"
)
_SQL_SESSION_ROW = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id = ?"
_SQL_SESSION_EVENTS = (
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE session_id = ? ORDER BY seq"
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
    f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE namespace = ? AND key = ? "
    "ORDER BY version"
)
# Old versions of one memory (the UNIQUE (namespace, key, version) index).
# Params: namespace, key, highest version to move, written before.
_SQL_OLD_VERSIONS = (
    f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE namespace = ? AND key = ? "
    "AND version <= ? AND is_current = 0 AND created_at <= ? ORDER BY version"
)
_SQL_DELETE_MEMORY = "DELETE FROM memories WHERE namespace = ? AND key = ?"
_SQL_DELETE_IDS = "DELETE FROM memories WHERE id IN (SELECT value FROM json_each(?))"

_SQL_ARCHIVE_INSERT = (
    "INSERT INTO archive (kind, ref, policy, app, user, namespace, rows, raw_bytes, "
    "stored_bytes, dict_id, run_id, archived_at, payload, payload_sha256, raw_sha256) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class Move:
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
class Tally:
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
class Batch:
    moves: list[Move] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    cursor: Any = None
    is_done: bool = False
    # Items left hot because their rows exceed what one archive row may hold.
    too_big: list[str] = field(default_factory=list)


def file_sizes(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return (path.stat().st_size if path.exists() else 0, wal.stat().st_size if wal.exists() else 0)


AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


def _pragma(conn: apsw.Connection, name: str) -> int:
    # Names are our own constants, never a caller's.
    return int(conn.execute(f"PRAGMA {name}").fetchall()[0][0])


def maintain(path: Path, settings: Any, *, vacuum: bool) -> tuple[str, int, str | None]:
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
            mode = AUTO_VACUUM.get(int(conn.execute("PRAGMA auto_vacuum").fetchall()[0][0]), "none")
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


def start_run(conn: apsw.Connection) -> tuple[int, int | None]:
    now = time.time()
    (interrupted,) = conn.execute(
        "SELECT max(id) FROM archive_runs WHERE status = 'running'"
    ).fetchall()[0]
    conn.execute(
        "UPDATE archive_runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
        (now,),
    )
    conn.execute("INSERT INTO archive_runs (started_at, status) VALUES (?, 'running')", (now,))
    run_id = conn.last_insert_rowid()
    audit.append(
        conn, "archive.start", "archive_run", str(run_id), {"resumes": interrupted}, at=now
    )
    return run_id, interrupted


def finish_run(
    conn: apsw.Connection, *, run_id: int, detail: dict[str, Any], entries: int, rows: int
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


class Batches:
    """One batch of each phase of a run, each inside one transaction."""

    def __init__(self, codecs: Codecs, batch_size: int) -> None:
        self._codecs = codecs
        self._batch_size = batch_size

    def record(self, conn: apsw.Connection, batch: Batch, run_id: int | None) -> Batch:
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
                        sha256(blob),
                        sha256(m.raw),
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

    def session_batch(
        self,
        conn: apsw.Connection,
        *,
        cursor: tuple[float, str],
        now: float,
        policies: Sequence[ArchivePolicy],
        run_id: int | None,
    ) -> Batch:
        batch = Batch(cursor=cursor)
        days = [p.after_days for p in policies if p.kind == "sessions" and p.after_days is not None]
        if not days:
            batch.is_done = True
            return batch
        limit = self._batch_size
        cutoff = now - min(days) * DAY
        rows = conn.execute(SQL_TERMINATED_SESSIONS, (cutoff, *cursor, limit)).fetchall()
        for session_id, app, updated_at in rows:
            batch.cursor = (updated_at, session_id)
            if not is_older(updated_at, best_policy(policies, "sessions", app=app), now):
                continue
            session = conn.execute(_SQL_SESSION_ROW, (session_id,)).fetchall()
            events = conn.execute(_SQL_SESSION_EVENTS, (session_id,)).fetchall()
            raw = encode(
                {"sessions": (SESSION_COLUMNS, session), "events": (EVENT_COLUMNS, events)}
            )
            if len(raw) > MAX_RAW_BYTES:
                batch.too_big.append(f"session {session_id}")
                continue
            if run_id is not None:
                conn.execute(_SQL_SESSION_STUB, (session_id,))
                conn.execute(_SQL_DELETE_EVENTS, (session_id,))
            batch.moves.append(
                Move(
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
        return self.record(conn, batch, run_id)

    def memory_batch(
        self,
        conn: apsw.Connection,
        *,
        cursor: int,
        now: float,
        policies: Sequence[ArchivePolicy],
        run_id: int | None,
    ) -> Batch:
        batch = Batch(cursor=cursor)
        if not any(
            p.kind in ("memories", "tombstones", "versions") and p.after_days is not None
            for p in policies
        ):
            batch.is_done = True
            return batch
        limit = self._batch_size
        rows = conn.execute(SQL_CURRENT_MEMORIES_AFTER, (cursor, _EXAMINE_PER_BATCH)).fetchall()
        batch.is_done = True
        for item_id, namespace, key, version, type_, status, created_at, expires_at in rows:
            if len(batch.moves) >= limit:
                batch.is_done = False
                break
            batch.cursor = item_id
            ref = f"{namespace}/{key}"
            whole = whole_memory_policy(
                policies, namespace, type_, status, created_at, expires_at, now
            )
            if whole is not None:
                versions = conn.execute(_SQL_MEMORY_ROWS, (namespace, key)).fetchall()
                raw = encode({"memories": (MEMORY_COLUMNS, versions)})
                if len(raw) > MAX_RAW_BYTES:
                    batch.too_big.append(f"memory {ref}")
                    continue
                if run_id is not None:
                    if status == "live":
                        memory.unindex(conn, item_id)
                    conn.execute(_SQL_DELETE_MEMORY, (namespace, key))
                batch.moves.append(
                    Move("memory", ref, whole, len(versions), raw, namespace=namespace)
                )
                continue
            policy = best_policy(policies, "versions", namespace=namespace, type_=type_)
            if policy is None or policy.after_days is None or version <= policy.keep_versions:
                continue
            old = conn.execute(
                _SQL_OLD_VERSIONS,
                (
                    namespace,
                    key,
                    version - policy.keep_versions,
                    now - policy.after_days * DAY,
                ),
            ).fetchall()
            if not old:
                continue
            raw = encode({"memories": (MEMORY_COLUMNS, old)})
            if len(raw) > MAX_RAW_BYTES:
                batch.too_big.append(f"old versions of {ref}")
                continue
            if run_id is not None:
                conn.execute(_SQL_DELETE_IDS, (json.dumps([r[0] for r in old]),))
            batch.moves.append(
                Move("versions", ref, "versions", len(old), raw, namespace=namespace)
            )
        else:
            batch.is_done = len(rows) < _EXAMINE_PER_BATCH
        return self.record(conn, batch, run_id)

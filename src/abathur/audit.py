"""The hash-chained audit log.

Each record's ``hash`` is ``sha256(prev_hash + canonical(record))`` and the
newest ``(seq, hash)`` is kept in ``audit_head`` in the same transaction, so
:meth:`AuditLog.verify` detects an edited record, a removed record (a gap or a
broken link) and removed newest records (the head no longer matches). It
cannot detect someone who rewrites the whole chain and the head together:
anchoring the head outside the file (e.g. in backups' manifests) is the answer
to that, not more hashing.

Services call :func:`append` inside their own write transaction, so a record
exists exactly when the change it describes was committed.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import apsw

from abathur.db import Database
from abathur.models import AuditRecord, AuditReport
from abathur.values import decode

__all__ = ["GENESIS", "AuditLog", "append", "verify_chain"]

GENESIS = "0" * 64


def _digest(
    prev_hash: str, seq: int, at: float, action: str, entity: str, entity_id: str, detail: str
) -> str:
    canonical = json.dumps(
        [seq, repr(at), action, entity, entity_id, detail],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def append(
    conn: apsw.Connection,
    action: str,
    entity: str,
    entity_id: str,
    detail: dict[str, Any] | None = None,
    *,
    at: float | None = None,
) -> int:
    """Append one record inside the caller's write transaction; return its seq."""
    at = time.time() if at is None else at
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchall()
    prev_seq, prev_hash = head[0] if head else (0, GENESIS)
    seq = prev_seq + 1
    text = json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    digest = _digest(prev_hash, seq, at, action, entity, entity_id, text)
    conn.execute(
        "INSERT INTO audit_log (seq, at, action, entity, entity_id, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, action, entity, entity_id, text, prev_hash, digest),
    )
    conn.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (seq, digest),
    )
    return seq


def verify_chain(conn: apsw.Connection) -> AuditReport:
    """Walk the chain on ``conn`` (inside the caller's transaction) and report any break."""
    problems: list[str] = []
    expected_prev, expected_seq, count = GENESIS, 1, 0
    rows = conn.execute(
        "SELECT seq, at, action, entity, entity_id, detail, prev_hash, hash "
        "FROM audit_log ORDER BY seq"
    )
    for seq, at, action, entity, entity_id, detail, prev_hash, digest in rows:
        count += 1
        if seq != expected_seq:
            problems.append(f"records {expected_seq}..{seq - 1} are missing")
        if prev_hash != expected_prev:
            problems.append(f"record {seq} does not link to the record before it")
        if _digest(prev_hash, seq, at, action, entity, entity_id, detail) != digest:
            problems.append(f"record {seq} was altered (its hash does not match its content)")
        expected_prev, expected_seq = digest, seq + 1
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchall()
    head_seq, head_hash = head[0] if head else (0, GENESIS)
    if (head_seq, head_hash) != (expected_seq - 1, expected_prev):
        problems.append(
            f"the chain ends at record {expected_seq - 1} but the head says {head_seq}: "
            "the newest records were removed or the head was altered"
        )
    return AuditReport(is_ok=not problems, records=count, problems=problems)


class AuditLog:
    """Read and verify the audit log (writes happen inside each service's transaction).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
        ...         await ab.memory.put("user:alice", "lang", {"value": "fr"})
        ...         return (await ab.audit.verify()).is_ok
        >>> asyncio.run(demo())
        True
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def verify(self) -> AuditReport:
        """Walk the whole chain; ``is_ok`` is false and ``problems`` says where if it is broken."""
        return await self._db.read(verify_chain)

    async def records(
        self,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records in order, optionally for one entity kind and id."""

        def fetch(conn: apsw.Connection) -> list[AuditRecord]:
            rows = conn.execute(
                "SELECT seq, at, action, entity, entity_id, detail FROM audit_log "
                "WHERE seq > ? AND (? IS NULL OR entity = ?) AND (? IS NULL OR entity_id = ?) "
                "ORDER BY seq LIMIT ?",
                (after_seq, entity, entity, entity_id, entity_id, limit),
            ).fetchall()
            return [
                AuditRecord(seq=s, at=a, action=ac, entity=e, entity_id=i, detail=decode(d))
                for s, a, ac, e, i, d in rows
            ]

        return await self._db.read(fetch)

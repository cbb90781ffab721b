"""An archive run's batches and its bookkeeping (``archive_runs``).

A run is a real run or a dry run, said once by its :class:`RunPlan`: a real
run moves rows, writes archive rows and counts them under its run id; a dry
run reads the same candidates, compresses them to measure, and writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from abathur.config import ArchivePolicy
from abathur.models import ArchiveKind, ArchivePolicyResult
from abathur.stores import Transaction
from abathur.stores.archive import NewEntry

__all__ = [
    "POLICY_KINDS",
    "Batch",
    "Batches",
    "Move",
    "RunPlan",
    "Tally",
    "file_sizes",
    "finish_run",
    "start_run",
]

# Current memories examined per transaction, at most: a batch stops earlier
# once it has moved archive_batch_size items.
_EXAMINE_PER_BATCH = 2000
POLICY_KINDS = ("sessions", "memories", "tombstones", "versions", "chunks")


@dataclass(frozen=True)
class RunPlan:
    """What a run's batches may do: move and record (a real run), or only measure (a dry run).

    Example:
        >>> RunPlan.dry(policies=[], batch_size=10).is_dry_run
        True
        >>> RunPlan.recorded(7, policies=[], batch_size=10).run_id
        7
    """

    policies: Sequence[ArchivePolicy]
    batch_size: int
    is_dry_run: bool
    _run_id: int | None = None

    @classmethod
    def dry(cls, *, policies: Sequence[ArchivePolicy], batch_size: int) -> RunPlan:
        """A dry run: read and measure, write nothing."""
        return cls(policies, batch_size, is_dry_run=True)

    @classmethod
    def recorded(
        cls, run_id: int, *, policies: Sequence[ArchivePolicy], batch_size: int
    ) -> RunPlan:
        """A real run, recorded as ``archive_runs`` row ``run_id``."""
        return cls(policies, batch_size, is_dry_run=False, _run_id=run_id)

    @property
    def run_id(self) -> int:
        """The run's id; a dry run has none (a RuntimeError says so)."""
        if self._run_id is None:
            raise RuntimeError("a dry run records nothing and has no run id")
        return self._run_id


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
    """What one policy moved in a run so far."""

    items: int = 0
    rows: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0

    def result(self, policy: str) -> ArchivePolicyResult:
        """The tally as the report's line for ``policy``."""
        return ArchivePolicyResult(
            policy=policy,
            items=self.items,
            rows=self.rows,
            raw_bytes=self.raw_bytes,
            stored_bytes=self.stored_bytes,
        )


@dataclass
class Batch:
    """One transaction's work: its moves, their stored sizes, and where the next one starts."""

    moves: list[Move] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    cursor: Any = None
    is_done: bool = False
    # Items left hot because their rows exceed what one archive row may hold.
    too_big: list[str] = field(default_factory=list)


def file_sizes(path: Path) -> tuple[int, int]:
    """The sizes of the database file and of its write-ahead log, 0 when absent."""
    wal = path.with_name(path.name + "-wal")
    return (path.stat().st_size if path.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def start_run(tx: Transaction) -> tuple[int, int | None]:
    """Start a run (marking one still running as interrupted): (its id, the interrupted one)."""
    now = time.time()
    run_id, interrupted = tx.archive.start_run(now)
    audit.append(
        tx, "archive.start", "archive_run", str(run_id), {"resumes": interrupted}, at=now
    )
    return run_id, interrupted


def finish_run(
    tx: Transaction, *, run_id: int, detail: dict[str, Any], entries: int, rows: int
) -> None:
    """Mark a run done with its per-policy detail, and audit it."""
    now = time.time()
    tx.archive.finish_run(run_id, now, json.dumps(detail))
    audit.append(
        tx,
        "archive.finish",
        "archive_run",
        str(run_id),
        {"entries": entries, "rows": rows},
        at=now,
    )


class Batches:
    """One batch of each phase of a run, each inside one transaction."""

    def __init__(self, codecs: Codecs, plan: RunPlan) -> None:
        self._codecs = codecs
        self._plan = plan

    def record(self, tx: Transaction, batch: Batch) -> Batch:
        """Compress the batch's moves; in a real run, write their archive rows."""
        plan = self._plan
        by_kind: dict[str, list[int]] = {}
        for i, move in enumerate(batch.moves):
            by_kind.setdefault(move.kind, []).append(i)
        batch.stored = [0] * len(batch.moves)
        now = time.time()
        first = last = None
        for kind, indexes in by_kind.items():
            payloads = [batch.moves[i].raw for i in indexes]
            dict_id, blobs = self._codecs.compress(
                tx.archive, kind, payloads, may_train=not plan.is_dry_run
            )
            for i, blob in zip(indexes, blobs, strict=True):
                batch.stored[i] = len(blob)
                if plan.is_dry_run:
                    continue
                m = batch.moves[i]
                entry = tx.archive.insert_entry(
                    NewEntry(
                        kind=m.kind,
                        ref=m.ref,
                        policy=m.policy,
                        app=m.app,
                        user=m.user,
                        namespace=m.namespace,
                        rows=m.rows,
                        raw_bytes=len(m.raw),
                        stored_bytes=len(blob),
                        dict_id=dict_id,
                        run_id=plan.run_id,
                        archived_at=now,
                        payload=blob,
                        payload_sha256=sha256(blob),
                        raw_sha256=sha256(m.raw),
                    )
                )
                first = entry if first is None else min(first, entry)
                last = entry if last is None else max(last, entry)
        if not plan.is_dry_run and batch.moves:
            rows = sum(m.rows for m in batch.moves)
            tx.archive.count_batch(plan.run_id, len(batch.moves), rows)
            audit.append(
                tx,
                "archive.batch",
                "archive_run",
                str(plan.run_id),
                {"entries": len(batch.moves), "rows": rows, "first": first, "last": last},
                at=now,
            )
        return batch

    def session_batch(self, tx: Transaction, *, cursor: tuple[float, str], now: float) -> Batch:
        """Terminated sessions old enough for their policy, after ``cursor``."""
        plan, policies = self._plan, self._plan.policies
        batch = Batch(cursor=cursor)
        days = [p.after_days for p in policies if p.kind == "sessions" and p.after_days is not None]
        if not days:
            batch.is_done = True
            return batch
        limit = plan.batch_size
        cutoff = now - min(days) * DAY
        candidates = tx.archive.terminated_sessions(cutoff, cursor, limit)
        for session_id, app, updated_at in candidates:
            batch.cursor = (updated_at, session_id)
            if not is_older(updated_at, best_policy(policies, "sessions", app=app), now):
                continue
            session, events = tx.archive.session_rows(session_id)
            raw = encode(
                {"sessions": (SESSION_COLUMNS, session), "events": (EVENT_COLUMNS, events)}
            )
            if len(raw) > MAX_RAW_BYTES:
                batch.too_big.append(f"session {session_id}")
                continue
            if not plan.is_dry_run:
                tx.archive.move_session_out(session_id)
            user = session[0][SESSION_COLUMNS.index("user")]
            batch.moves.append(
                Move(
                    "session",
                    session_id,
                    "sessions",
                    1 + len(events),
                    raw,
                    app=app,
                    user=user if isinstance(user, str) else None,
                )
            )
        batch.is_done = len(candidates) < limit
        return self.record(tx, batch)

    def memory_batch(self, tx: Transaction, *, cursor: int, now: float) -> Batch:
        """Memories (whole, or their old versions) their policies select, after id ``cursor``."""
        plan, policies = self._plan, self._plan.policies
        batch = Batch(cursor=cursor)
        if not any(
            p.kind in ("memories", "tombstones", "versions") and p.after_days is not None
            for p in policies
        ):
            batch.is_done = True
            return batch
        limit = plan.batch_size
        current = tx.archive.current_memories(cursor, _EXAMINE_PER_BATCH)
        batch.is_done = True
        for item_id, namespace, key, version, type_, status, created_at, expires_at in current:
            if len(batch.moves) >= limit:
                batch.is_done = False
                break
            batch.cursor = item_id
            ref = f"{namespace}/{key}"
            whole = whole_memory_policy(
                policies, namespace, type_, status, created_at, expires_at, now
            )
            if whole is not None:
                versions = tx.archive.memory_rows(namespace, key)
                raw = encode({"memories": (MEMORY_COLUMNS, versions)})
                if len(raw) > MAX_RAW_BYTES:
                    batch.too_big.append(f"memory {ref}")
                    continue
                if not plan.is_dry_run:
                    if status == "live":
                        memory.unindex(tx, item_id)
                    tx.archive.delete_memory(namespace, key)
                batch.moves.append(
                    Move("memory", ref, whole, len(versions), raw, namespace=namespace)
                )
                continue
            policy = best_policy(policies, "versions", namespace=namespace, type_=type_)
            if policy is None or policy.after_days is None or version <= policy.keep_versions:
                continue
            old = tx.archive.old_versions(
                namespace,
                key,
                up_to=version - policy.keep_versions,
                written_before=now - policy.after_days * DAY,
            )
            if not old:
                continue
            raw = encode({"memories": (MEMORY_COLUMNS, old)})
            if len(raw) > MAX_RAW_BYTES:
                batch.too_big.append(f"old versions of {ref}")
                continue
            if not plan.is_dry_run:
                at = MEMORY_COLUMNS.index("id")
                tx.archive.delete_versions([i for i in (r[at] for r in old) if isinstance(i, int)])
            batch.moves.append(
                Move("versions", ref, "versions", len(old), raw, namespace=namespace)
            )
        else:
            batch.is_done = len(current) < _EXAMINE_PER_BATCH
        return self.record(tx, batch)

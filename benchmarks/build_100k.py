"""A 100k-memory database with two months of agent life in it, built in a few minutes.

For archival, cost and stats measurements (issue 4)::

    .venv/bin/python -m benchmarks.build_100k /tmp/a100k.db            # 100,000 memories
    .venv/bin/python -m benchmarks.build_100k /tmp/small.db --memories 2000 --sessions 40

Everything is written through the public API (``memory.put``, ``delete``,
``sessions.create``, ``append_event``, ``terminate``, ``embeddings.drain``),
so the indexes, the queue, the cache and the audit chain are what
production would have. Then one plain SQL pass moves timestamps into the
past (the API stamps "now"), which is what makes data cold; since the audit
chain covers row content (issue 11), that pass records one ``bench.backdate``
audit record per row it changed, so ``abathur check`` still passes. What it holds,
with ``memories = N`` (N / 100 users ``user:u0000``...):

* 60 % semantic under ``user:<u>:facts``; 5 % of them rewritten 12 more times
  (versions beyond the newest 10), 3 % deleted 40 days ago (tombstones);
* 30 % episodic under ``user:<u>:episodes``, two thirds with a 30-day TTL,
  half of which expired 10 days ago;
* 10 % procedural under ``user:<u>:procedures``;
* ``sessions`` sessions of 25 events in app ``bench``, 60 % terminated 40 days ago;
* each memory written 0-59 days ago (its own offset), for the growth charts.

Vectors come from :class:`HashEmbedder`, a deterministic stand-in (random
projection of hashed words, 384 dims like the bundled model) that runs the
real queue, cache and vec0 paths at a fraction of the bundled model's cost.
A file built with it must be opened with it (``embedder=HashEmbedder()``) or
with ``embedder="none"``, as the CLI does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw
import numpy as np

from abathur import Abathur, Event, audit
from abathur.backends.sqlite.context import SqliteContext
from abathur.backends.sqlite.transaction import SqliteTransaction
from abathur.config import Settings
from abathur.embeddings import EmbedResult

__all__ = ["HashEmbedder", "build"]

DAY = 86400.0
_WORD = re.compile(r"\w+")
_TOPICS = [
    "billing",
    "refunds",
    "shipping",
    "returns",
    "passwords",
    "invoices",
    "travel",
    "support",
    "language",
    "timezone",
    "allergies",
    "music",
    "gardening",
    "chess",
]


class HashEmbedder:
    """Deterministic fake embeddings (hashed words, random projection); never shipped."""

    provider = "bench"
    model = "hash-384"
    name = "bench:hash-384"
    dims = 384

    def __init__(self) -> None:
        self._rows: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        row = self._rows.get(word)
        if row is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            row = np.random.default_rng(seed).standard_normal(self.dims).astype(np.float32)
            self._rows[word] = row
        return row

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        out, tokens = [], 0
        for text in texts:
            words = _WORD.findall(text.lower()) or ["(empty)"]
            tokens += len(words) + 2
            v = np.sum([self._word(w) for w in words], axis=0)
            out.append((v / (np.linalg.norm(v) or 1.0)).tolist())
        return EmbedResult(vectors=out, tokens=tokens, is_token_estimate=False)


def _text(i: int) -> str:
    a, b = _TOPICS[i % len(_TOPICS)], _TOPICS[(i * 7 + 3) % len(_TOPICS)]
    return f"note {i}: the user asked about {a} and {b}, case {i * 2654435761 % 100000}"


async def _fill(ab: Abathur, memories: int, sessions: int, events: int) -> dict[str, Any]:
    users = max(1, memories // 100)
    plan: dict[str, Any] = {"rewritten": [], "deleted": [], "expired": [], "ttl": []}
    chunk = 500
    for start in range(0, memories, chunk):
        calls = []
        for i in range(start, min(memories, start + chunk)):
            user = f"user:u{i % users:04d}"
            kind = i % 10
            if kind < 6:
                ns, type_, ttl = f"{user}:facts", "semantic", None
            elif kind < 9:
                ns, type_ = f"{user}:episodes", "episodic"
                ttl = 30 * DAY if i % 3 else None
            else:
                ns, type_, ttl = f"{user}:procedures", "procedural", None
            key = f"m{i:06d}"
            value = {"text": _text(i), "n": i}
            calls.append(
                ab.memory.put(ns, key, value, type=type_, ttl=ttl, metadata={"source": "bench"})
            )
            if type_ == "semantic" and i % 20 == 0:
                plan["rewritten"].append((ns, key))
            elif type_ == "semantic" and i % 33 == 1:
                plan["deleted"].append((ns, key))
            if ttl is not None:
                (plan["expired"] if i % 2 else plan["ttl"]).append((ns, key))
        await asyncio.gather(*calls)
    for round_ in range(12):
        await asyncio.gather(
            *(
                ab.memory.put(
                    ns,
                    key,
                    {"text": f"{_text(round_)} (revision {round_})"},
                    metadata={"source": "bench"},
                )
                for ns, key in plan["rewritten"]
            )
        )
    await asyncio.gather(*(ab.memory.delete(ns, key) for ns, key in plan["deleted"]))
    plan["sessions"] = []
    for s in range(sessions):
        session = await ab.sessions.create(
            app="bench", user=f"u{s % users:04d}", state={"topic": _TOPICS[s % len(_TOPICS)]}
        )
        for e in range(events):
            session = await ab.sessions.append_event(
                session.id,
                Event(
                    author="user" if e % 2 else "agent",
                    content={"text": f"message {e} of session {s}: " + _text(s * events + e)},
                    state_delta={"turn": e},
                ),
            )
        if s % 5 < 3:
            await ab.sessions.terminate(session.id)
            plan["sessions"].append(session.id)
    return plan


# Days a memory is moved into the past, from the number in its key ('m000123').
_SHIFT_DAYS = (
    "CASE WHEN CAST(substr(key, 2) AS INTEGER) % 20 = 0 "
    "THEN 8 + (CAST(substr(key, 2) AS INTEGER) * 7919) % 52 "
    "ELSE (CAST(substr(key, 2) AS INTEGER) * 7919) % 60 END"
)


def _backdate(path: Path, plan: dict[str, Any], now: float) -> None:
    """Move timestamps into the past: the API writes 'now', cold data is old."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("BEGIN IMMEDIATE")
        # Each memory was written 0-59 days ago, all its versions shifted alike
        # (rewritten ones 8+ days, so their old versions pass the 7-day policy).
        conn.execute(
            "UPDATE memories SET created_at = created_at - (" + _SHIFT_DAYS + ") * 86400.0 - 3600, "
            "first_created_at = first_created_at - (" + _SHIFT_DAYS + ") * 86400.0 - 3600"
        )
        conn.executemany(
            "UPDATE memories SET created_at = ? WHERE namespace = ? AND key = ? "
            "AND is_current = 1 AND status = 'deleted'",
            [(now - 40 * DAY, ns, key) for ns, key in plan["deleted"]],
        )
        conn.executemany(
            "UPDATE memories SET expires_at = ? WHERE namespace = ? AND key = ?",
            [(now - 10 * DAY, ns, key) for ns, key in plan["expired"]],
        )
        old = now - 40 * DAY
        conn.executemany(
            "UPDATE sessions SET updated_at = ?, created_at = ? - 3600 WHERE id = ?",
            [(old, old, sid) for sid in plan["sessions"]],
        )
        conn.executemany(
            "UPDATE events SET timestamp = ? + seq WHERE session_id = ?",
            [(old - 3600, sid) for sid in plan["sessions"]],
        )
        _reseal(conn, plan["sessions"])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# The rows _backdate changes, by the key each is updated by. Params of the
# last two: a JSON array of the backdated session ids.
_RESEAL = {
    "memories": ("id", "SELECT id, {cols} FROM memories"),
    "sessions": (
        "id",
        "SELECT id, {cols} FROM sessions WHERE id IN (SELECT value FROM json_each(?))",
    ),
    "events": (
        "session_id = ? AND seq",
        "SELECT session_id, seq, {cols} FROM events "
        "WHERE session_id IN (SELECT value FROM json_each(?))",
    ),
}


def _reseal(conn: apsw.Connection, sessions: Sequence[str]) -> None:
    """Record the backdating in the audit log: each changed row gets a record covering it."""
    tx = SqliteTransaction(conn, SqliteContext(Path(conn.filename), Settings()))
    for table, (key, select) in _RESEAL.items():
        sql = select.format(cols=", ".join(audit.COVERED[table]))
        rows = conn.execute(sql, () if table == "memories" else (json.dumps(list(sessions)),))
        keys = 2 if table == "events" else 1
        for row in rows.fetchall():
            seq = audit.next_seq(tx)
            # Table and key names are this module's constants.
            conn.execute(f"UPDATE {table} SET audit_seq = ? WHERE {key} = ?", (seq, *row[:keys]))
            audit.append(tx, "bench.backdate", table, str(row[0]), content=(table, row[keys:]))


def build(
    path: Path,
    *,
    memories: int = 100_000,
    sessions: int = 2000,
    events: int = 25,
    vectors: bool = True,
) -> dict[str, Any]:
    """Build the database at ``path`` (replacing it); return what it holds and how long it took."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()

    async def run() -> dict[str, Any]:
        embedder = HashEmbedder() if vectors else None
        async with Abathur.open(
            path, embedder=embedder or "none", embed_worker=False, backup_before_migrate=False
        ) as ab:
            plan = await _fill(ab, memories, sessions, events)
            if vectors:
                await ab.embeddings.drain()
            return plan

    plan = asyncio.run(run())
    _backdate(path, plan, time.time())
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        counts = {
            t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]
            for t in ("memories", "sessions", "events", "embedding_cache", "usage_ledger")
        }
    finally:
        conn.close()
    return {
        "path": str(path),
        "seconds": round(time.perf_counter() - started, 1),
        "bytes": path.stat().st_size,
        "rows": counts,
        "rewritten": len(plan["rewritten"]),
        "deleted": len(plan["deleted"]),
        "expired": len(plan["expired"]),
        "terminated_sessions": len(plan["sessions"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--events", type=int, default=25)
    parser.add_argument("--no-vectors", action="store_true", help="embedder 'none'")
    args = parser.parse_args(argv)
    summary = build(
        args.path,
        memories=args.memories,
        sessions=args.sessions,
        events=args.events,
        vectors=not args.no_vectors,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

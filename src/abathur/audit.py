"""The hash-chained audit log, covering what each write wrote.

Each record's ``hash`` chains it to the record before it and the newest
``(seq, hash)`` is kept in ``audit_head`` in the same transaction, so
:func:`verify_chain` detects an edited record, a removed record (a gap or a
broken link) and removed newest records (the head no longer matches). It
cannot detect someone who rewrites the whole chain and the head together:
anchoring the head outside the file (backups' manifests) is the answer to
that, not more hashing.

**Chains** (issue 14). The log is one or more chains: each record links to
the previous record *of its chain*, and each chain has its own head. A write
that declares a tenant (:meth:`abathur.stores.Backend.write`,
:func:`tenant_key`) files its records in that tenant's chain, so on
PostgreSQL writers of different tenants never wait on one head row; every
other write (and everything on SQLite) uses the global chain ``""``, which
holds every record written before chains existed. ``seq`` stays unique over
the whole log and is what rows and purges name; where writers run
concurrently it comes from a sequence and has gaps (``tx.audit.gapless``).
:func:`verify_chain` checks every chain's links and head. Removing a whole
chain together with its head is the same attack as rewriting the one chain
and its head: anchoring heads outside the database is the answer.

**Record format 2** (migration 007). The digest is
``sha256(prev_hash + canonical([2, seq, repr(at), action, entity, body_hash,
content_hash]))`` where

- ``body_hash = sha256(salt + canonical([entity_id, detail]))``: the names and
  details, behind a per-record random 16-byte ``salt``;
- ``content_hash = sha256(salt + canonical([table, *covered columns]))``: the
  row the write left, for the writes that leave one (:data:`COVERED`).

A purge (:func:`redact`) blanks ``entity_id``, ``detail`` and ``salt`` and
sets ``redacted``: the chain still verifies (it covers the hashes, which stay),
and without the salt the hashes no longer confirm a guess of what was erased.
So the log keeps *that* something was written and purged, not *what*.

**Rows covered** (:data:`COVERED`): each covered row holds ``audit_seq``, the
record that wrote it, and :func:`verify_content` recomputes the row's hash
against that record. A row edited after the fact, pointed at another record,
or rolled back to an earlier state of itself (a task) is a finding.

================ =========================================================
table            columns covered (what is *not* covered, and why)
================ =========================================================
``memories``     namespace, key, version, type, value, metadata, status,
                 superseded_by_*, first_created_at, created_at, expires_at.
                 Not ``id`` (an archive restore may give a new one) nor
                 ``is_current`` (flips when the next version is written; the
                 check verifies instead that the current row is the newest).
``events``       every column (events never change).
``tasks``        every column, as of the task's latest write; an update
                 names the record it replaces, so a rollback is found.
``sessions``     id, app, user, created_at: who the session belongs to.
                 ``state``, ``status``, ``revision``, ``updated_at`` change on
                 every write by design; the events that changed them are
                 covered, and status changes have their own records.
================ =========================================================

Not covered, by design: ``app_state``/``user_state`` (mutable, written from
covered events' ``state_delta``), documents and chunks (derived from files,
re-synced by hash), search indexes, the embedding queue and cache (derived;
``check`` compares them with their tables), usage, metrics and archive rows
(archive payloads carry their own checksum). A row *removed* after the fact
cannot be told from an archived or purged one: the check finds changed rows,
not missing ones.

Rows written before migration 007 have no ``audit_seq``: the upgrade records
how many there were (``legacy_rows``) and the check reports more than that as
rows without a record.

Services call :func:`append` inside their own write transaction, so a record
exists exactly when the change it describes was committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from abathur.models import AuditRecord, AuditReport
from abathur.stores import Backend, Transaction
from abathur.stores.audit import AuditHead, AuditRow, MemoryBounds, Rehash
from abathur.values import decode

__all__ = [
    "COVERED",
    "FORMAT",
    "GENESIS",
    "PURGE_ACTIONS",
    "AuditLog",
    "append",
    "content_hash",
    "memory_records",
    "needs_upgrade",
    "next_seq",
    "record_purge",
    "redact",
    "session_records",
    "session_tasks",
    "tenant_key",
    "upgrade",
    "user_sessions",
    "verify",
    "verify_chain",
    "verify_content",
]

GENESIS = "0" * 64
FORMAT = 2

#: The columns of each covered table that a record's content_hash covers, in
#: the order writers pass them to :func:`append` (``content=(table, values)``).
COVERED: dict[str, tuple[str, ...]] = {
    "memories": (
        "namespace",
        "key",
        "version",
        "type",
        "value",
        "metadata",
        "status",
        "superseded_by_namespace",
        "superseded_by_key",
        "first_created_at",
        "created_at",
        "expires_at",
    ),
    "events": (
        "session_id",
        "seq",
        "id",
        "author",
        "content",
        "state_delta",
        "metadata",
        "timestamp",
    ),
    "tasks": (
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
    "sessions": ("id", "app", "user", "created_at"),
}

#: Actions of purge records; their detail's ``redacted`` counts the records they blanked.
PURGE_ACTIONS = frozenset({"memory.purge", "sessions.purge", "documents.purge"})

# Built once: json.dumps with options builds an encoder per call, a fifth of
# an append's Python time (benchmarks/append_audit.py).
_CANONICAL = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_DETAIL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _canonical(value: Any) -> bytes:
    # ASCII JSON: a lone surrogate or odd text read back from a file can never
    # make hashing fail, and the bytes are the same on every platform.
    return _CANONICAL.encode(value).encode("ascii")


def _digest_v1(
    prev_hash: str, seq: int, at: float, action: str, entity: str, entity_id: str, detail: str
) -> str:
    canonical = json.dumps(
        [seq, repr(at), action, entity, entity_id, detail],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _digest_v2(
    prev_hash: str,
    seq: int,
    at: float,
    action: str,
    entity: str,
    body: str | None,
    content: str | None,
) -> str:
    canonical = _canonical([FORMAT, seq, repr(at), action, entity, body, content])
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def _body_hash(salt: bytes, entity_id: str, detail: str) -> str:
    return hashlib.sha256(salt + _canonical([entity_id, detail])).hexdigest()


def content_hash(salt: bytes, table: str, values: Sequence[Any]) -> str:
    """The hash a record holds of one covered row: ``values`` in :data:`COVERED` order.

    Example:
        >>> from abathur.audit import content_hash
        >>> a = content_hash(b"s" * 16, "sessions", ["s1", "app", "alice", 1.5])
        >>> b = content_hash(b"s" * 16, "sessions", ["s1", "app", "bob", 1.5])
        >>> len(a), a == b
        (64, False)
    """
    return hashlib.sha256(salt + _canonical([table, *values])).hexdigest()


def tenant_key(kind: str, *parts: str) -> str:
    """The key a tenant-local write declares (:meth:`abathur.stores.Backend.write`).

    Also the name of the tenant's audit chain, so it names no one: ``kind``,
    then a digest of the parts (who the tenant is stays out of the log, as
    a purge requires; whoever knows the parts can recompute it).

    Example:
        >>> from abathur.audit import tenant_key
        >>> key = tenant_key("session", "helpdesk", "alice")
        >>> key.startswith("session:"), len(key), key == tenant_key("session", "helpdesk", "bob")
        (True, 40, False)
    """
    digest = hashlib.sha256(_canonical([kind, *parts])).hexdigest()[:32]
    return f"{kind}:{digest}"


def next_seq(tx: Transaction) -> int:
    """The seq the next :func:`append` in ``tx`` will get.

    A writer stores it in the row's ``audit_seq`` before appending the record.
    """
    return tx.audit.next_seq()


def append(
    tx: Transaction,
    action: str,
    entity: str,
    entity_id: str,
    detail: dict[str, Any] | None = None,
    *,
    at: float | None = None,
    content: tuple[str, Sequence[Any]] | None = None,
) -> int:
    """Append one record inside the caller's write transaction; return its seq.

    The record goes to the transaction's chain (``tx.audit.chain_key``: its
    tenant's, or the global one) and links to that chain's head.
    ``content`` is ``(table, values)`` of the covered row this write left
    (values in :data:`COVERED` order); that row's ``audit_seq`` must be the
    returned seq (take it from :func:`next_seq` first).
    """
    at = time.time() if at is None else at
    store = tx.audit
    head = store.head()
    prev_hash = GENESIS if head is None else head.hash
    seq = store.next_seq()
    text = _DETAIL.encode(detail or {})
    salt = os.urandom(16)
    body = _body_hash(salt, entity_id, text)
    covered = None if content is None else content_hash(salt, content[0], content[1])
    digest = _digest_v2(prev_hash, seq, at, action, entity, body, covered)
    store.insert(
        AuditRow(
            seq,
            at,
            action,
            entity,
            entity_id,
            text,
            prev_hash,
            digest,
            salt,
            body,
            covered,
            store.chain_key,
        )
    )
    store.set_head(AuditHead(seq, digest))
    return seq


def redact(tx: Transaction, seqs: Iterable[int]) -> int:
    """Blank the names, details and salt of records ``seqs`` (a purge); return how many.

    The chain keeps verifying: it covers the records' hashes, which stay.
    Format-1 records cannot be redacted; :func:`upgrade` converts them first.
    """
    return tx.audit.redact(sorted(set(seqs)))


# -- purge: which records name what is erased, and the record that says it was ----


def root_records(tx: Transaction, root: str) -> set[int]:
    """Seqs of unredacted records of the document root at path ``root``."""
    return tx.audit.root_record_seqs(root)


def memory_records(tx: Transaction, bounds: tuple[str, str, str, str]) -> set[int]:
    """Seqs of unredacted records naming a memory whose ``namespace/key`` falls in ``bounds``.

    ``bounds`` is (eq_lo, eq_hi, sub_lo, sub_hi): ids of the prefix's own
    namespace fall in [eq_lo, eq_hi), those under it in [sub_lo, sub_hi). The
    records are the memories' own, a supersede's winner, an archive restore's ref.
    """
    return tx.audit.memory_record_seqs(MemoryBounds(*bounds))


def user_sessions(tx: Transaction, app: str, user: str) -> set[str]:
    """Ids of every session of (app, user) the log has a record of (deleted ones too)."""
    return tx.audit.user_session_ids(app, user)


def session_tasks(tx: Transaction, sessions: Iterable[str]) -> set[str]:
    """Ids of every task the log says was created in one of ``sessions``."""
    return tx.audit.session_task_ids(set(sessions))


def session_records(tx: Transaction, sessions: Iterable[str], tasks: Iterable[str]) -> set[int]:
    """Seqs of unredacted records of these sessions, their events and these tasks."""
    return tx.audit.session_record_seqs(set(sessions), set(tasks))


def record_purge(
    tx: Transaction,
    action: str,
    subject: str,
    counts: dict[str, int],
    seqs: Iterable[int],
) -> tuple[int, int]:
    """Redact ``seqs`` and append the purge record; return (records redacted, its seq).

    The record holds the counts and ``sha256(subject)`` (the prefix, or app and
    user), never the subject itself: whoever knows the subject can confirm
    the purge happened, nobody learns it from the log.
    """
    if action not in PURGE_ACTIONS:
        raise ValueError(f"{action!r} is not a purge action")
    upgrade(tx)  # format-1 records cannot be redacted
    redacted = redact(tx, seqs)
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    seq = append(tx, action, "purge", digest, {**counts, "redacted": redacted})
    return redacted, seq


# -- verification ------------------------------------------------------------


@dataclass
class _Walk:
    """What one pass over the chain found, and what the content check needs from it."""

    records: int = 0
    problems: list[str] = field(default_factory=list)
    format1: int = 0
    replaced: set[int] = field(default_factory=set)  # task records a later update replaced
    legacy_rows: dict[str, int] | None = None  # from the audit.upgraded record
    redacted: int = 0
    purged: int = 0  # records the purge records say they redacted
    chains: int = 0  # chains with at least one record


def _walk(tx: Transaction) -> _Walk:
    walk = _Walk()
    problems = walk.problems
    store = tx.audit
    gapless = store.gapless
    expected_seq = 1
    # Each chain's newest record so far: (seq, hash). One entry per chain.
    tips: dict[str, tuple[int, str]] = {}
    for row in store.chain():
        (
            seq,
            at,
            action,
            entity,
            entity_id,
            detail,
            prev_hash,
            digest,
            fmt,
            salt,
            body,
            covered,
            redacted,
            chain,
        ) = row
        walk.records += 1
        if gapless and seq != expected_seq:
            problems.append(f"records {expected_seq}..{seq - 1} are missing")
        if prev_hash != tips.get(chain, (0, GENESIS))[1]:
            problems.append(f"record {seq} does not link to the record before it{_of(chain)}")
        if fmt == 1:
            walk.format1 += 1
            ok = _digest_v1(prev_hash, seq, at, action, entity, entity_id, detail) == digest
        else:
            ok = _digest_v2(prev_hash, seq, at, action, entity, body, covered) == digest
            if ok and redacted:
                walk.redacted += 1
                if entity_id != "" or detail != "{}" or salt is not None:
                    problems.append(f"record {seq} is marked redacted but still holds names")
            elif ok and (salt is None or _body_hash(salt, entity_id, detail) != body):
                ok = False
        if not ok:
            problems.append(f"record {seq} was altered (its hash does not match its content)")
        elif not redacted:
            _note(walk, seq, action, entity, detail)
        tips[chain] = (seq, digest)
        expected_seq = seq + 1
    heads = store.heads()
    for chain in sorted(tips.keys() | heads.keys() | {""}):
        tip_seq, tip_hash = tips.get(chain, (0, GENESIS))
        head = heads.get(chain)
        head_seq, head_hash = (0, GENESIS) if head is None else head
        if (head_seq, head_hash) != (tip_seq, tip_hash):
            problems.append(
                f"the chain{_of(chain)} ends at record {tip_seq} but the head says {head_seq}: "
                "the newest records were removed or the head was altered"
            )
    walk.chains = len(tips)
    if walk.redacted != walk.purged:
        problems.append(
            f"{walk.redacted} record(s) are redacted but the purge records account for "
            f"{walk.purged}: records were blanked outside a purge"
        )
    return walk


def _of(chain: str) -> str:
    """How a finding names a tenant's chain (nothing for the global one)."""
    return f" in chain {chain!r}" if chain else ""


def _note(walk: _Walk, seq: int, action: str, entity: str, detail: str) -> None:
    """Take from a verified record what the content check and the purge tally need."""
    if entity == "task" and action == "task.update":
        replaces = _detail(detail).get("replaces")
        if isinstance(replaces, int):
            walk.replaced.add(replaces)
    elif action in PURGE_ACTIONS:
        count = _detail(detail).get("redacted")
        walk.purged += count if isinstance(count, int) else 0
    elif action == "audit.upgraded":
        info = _detail(detail)
        legacy = info.get("legacy_rows")
        if isinstance(legacy, dict):
            walk.legacy_rows = {str(k): int(v) for k, v in legacy.items() if isinstance(v, int)}
        problems = info.get("old_chain_problems")
        if isinstance(problems, int) and problems:
            walk.problems.append(
                f"the chain had {problems} problem(s) when record {seq} upgraded it to "
                "format 2: records before it were altered or removed before the upgrade"
            )


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def verify_chain(tx: Transaction) -> AuditReport:
    """Walk the chain in ``tx`` (the caller's transaction) and report any break.

    The records only; :func:`verify` adds the rows they cover.
    """
    walk = _walk(tx)
    return AuditReport(is_ok=not walk.problems, records=walk.records, problems=walk.problems)


@dataclass
class ContentReport:
    """What :func:`verify_content` found: problems, rows verified, rows with no record."""

    problems: list[str]
    verified: int
    uncovered: int


def verify_content(tx: Transaction, walk: _Walk | None = None) -> ContentReport:
    """Recompute each covered row's hash against the record that wrote it."""
    walk = _walk(tx) if walk is None else walk
    store = tx.audit
    problems: list[str] = []
    verified = uncovered = 0
    if not store.has_column("audit_log", "content_hash"):
        return ContentReport([], 0, 0)
    for table, columns in COVERED.items():
        if not store.has_column(table, "audit_seq"):
            continue
        bad: list[str] = []
        missing = 0
        for label, pointer, found, covered, salt, redacted, values in store.covered_rows(
            table, columns
        ):
            if pointer is None:
                missing += 1
            elif found is None:
                bad.append(f"{label} names audit record {pointer}, which does not exist")
            elif redacted:
                bad.append(f"{label} names audit record {pointer}, which a purge redacted")
            elif covered is None or salt is None:
                bad.append(f"{label} names audit record {pointer}, which covers no row")
            elif content_hash(salt, table, values) != covered:
                bad.append(
                    f"{label} was changed after audit record {pointer} wrote it "
                    "(its content does not match the record's hash)"
                )
            elif table == "tasks" and pointer in walk.replaced:
                bad.append(
                    f"{label} was rolled back to audit record {pointer}, a later one replaced it"
                )
            else:
                verified += 1
        problems += bad[:20]
        if len(bad) > 20:
            problems.append(f"... and {len(bad) - 20} more {table} row(s) like these")
        uncovered += missing
        allowed = 0 if walk.legacy_rows is None else walk.legacy_rows.get(table, 0)
        if walk.format1 == 0 and missing > allowed:
            problems.append(
                f"{missing} {table} row(s) name no audit record; at most {allowed} were "
                "written before the audit covered content: rows were inserted or their "
                "audit_seq cleared after the fact"
            )
    if store.has_column("memories", "audit_seq"):
        problems += _current_versions(tx)
    return ContentReport(problems, verified, uncovered)


def _current_versions(tx: Transaction) -> list[str]:
    # The current version of each memory must be its newest: flipping
    # is_current back to an older version would roll a value back without
    # changing any row's covered columns.
    return [
        f"memory {ns}/{key}: current version is {current} but the newest is {newest} "
        f"({flagged} row(s) marked current): rolled back after the fact"
        for ns, key, newest, flagged, current in tx.audit.memories_not_at_newest(21)
    ]


def verify(tx: Transaction) -> AuditReport:
    """Verify the chain and every covered row in ``tx`` (the caller's transaction).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> from abathur.audit import verify
        >>> async def demo():
        ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "a.db") as ab:
        ...         await ab.memory.put("user:alice", "lang", "fr")
        ...         return await ab.db.read(verify)
        >>> report = asyncio.run(demo())
        >>> report.is_ok, report.records, report.rows_verified
        (True, 1, 1)
    """
    walk = _walk(tx)
    content = verify_content(tx, walk)
    problems = walk.problems + content.problems
    return AuditReport(
        is_ok=not problems,
        records=walk.records,
        problems=problems,
        rows_verified=content.verified,
        rows_uncovered=content.uncovered,
    )


# -- upgrade from format 1 ------------------------------------------------------------


def needs_upgrade(tx: Transaction) -> bool:
    """True when the file has migration 007 and format-1 records to convert."""
    store = tx.audit
    if not store.has_column("audit_log", "format"):
        return False
    # Format-1 records are always the oldest: only code before 007 wrote them.
    first = store.first_format()
    if first is not None:
        return first == 1
    # No record at all, yet rows written before 007 (by hand, or a very old
    # file): the upgrade record counts them. On a new file the tables are empty.
    return store.has_rows_without_record(COVERED)


def _legacy_rows(tx: Transaction) -> dict[str, int]:
    """Rows with no audit_seq now, plus an upper bound of those in archive rows."""
    store = tx.audit
    counts = store.rows_without_record(COVERED)
    archived: dict[str, float] = {}
    sessions = 0
    if store.has_column("archive", "rows"):
        archived, sessions = store.archived_rows()
        if not archived:
            sessions = 0
    counts["memories"] += int(archived.get("memory", 0) + archived.get("versions", 0))
    counts["sessions"] += sessions
    counts["events"] += int(archived.get("session", 0)) - sessions
    return counts


def upgrade(tx: Transaction) -> bool:
    """Convert format-1 records to format 2, in the caller's write transaction.

    Format-1 digests cover entity_id and detail themselves, so they could not
    be redacted by a purge. Each record gets a salt and a body hash and the
    chain is recomputed from the first record; then an ``audit.upgraded``
    record keeps the old head (seq and hash: what older backups' manifests
    hold), whether the old chain verified, and how many rows predate
    content hashing (``legacy_rows``). Returns False when there was nothing to do.
    """
    if not needs_upgrade(tx):
        return False
    store = tx.audit
    old = _walk(tx)
    head = store.head()
    old_seq, old_hash = (0, GENESIS) if head is None else head
    prev, last, count = GENESIS, 0, 0
    while True:
        # In pages by seq: a long log is never held in memory whole.
        page = store.records_after(last, 5000)
        if not page:
            break
        updates: list[Rehash] = []
        for row in page:
            salt, body = row.salt, row.body_hash
            if row.format == 1:
                salt = os.urandom(16)
                body = _body_hash(salt, row.entity_id, row.detail)
            digest = _digest_v2(
                prev, row.seq, row.at, row.action, row.entity, body, row.content_hash
            )
            updates.append(Rehash(row.seq, salt, body, prev, digest))
            prev, last = digest, row.seq
        store.rehash(updates)
        count += len(updates)
    if count:
        store.set_head(AuditHead(last, prev))
    append(
        tx,
        "audit.upgraded",
        "audit",
        "format-2",
        {
            "from_format": 1,
            "records": count,
            "old_head_seq": old_seq,
            "old_head_hash": old_hash,
            "old_chain_problems": len(old.problems),
            "legacy_rows": _legacy_rows(tx),
        },
    )
    return True


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

    def __init__(self, db: Backend) -> None:
        self._db = db

    async def verify(self) -> AuditReport:
        """Walk the chain and every covered row; ``problems`` says where it is broken."""
        return await self._db.read(verify)

    async def records(
        self,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records in order, optionally for one entity kind and id (redacted ones show blank)."""

        def fetch(tx: Transaction) -> list[AuditRecord]:
            rows = tx.audit.records(
                entity=entity, entity_id=entity_id, after_seq=after_seq, limit=limit
            )
            return [
                AuditRecord(seq=s, at=a, action=ac, entity=e, entity_id=i, detail=decode(d))
                for s, a, ac, e, i, d in rows
            ]

        return await self._db.read(fetch)

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

**Layout.** :mod:`~abathur.archival.service` holds ``ArchivalService``;
:mod:`~abathur.archival.runs` a run's batches (a :class:`~abathur.archival.runs.RunPlan`
says whether it is a dry run); :mod:`~abathur.archival.policies` which policy
selects an item; :mod:`~abathur.archival.payload` the payload format and its
verification (:func:`verify_archive`); :mod:`~abathur.archival.codecs` zstd
and its dictionaries; :mod:`~abathur.archival.restore` putting rows back. The
SQL is the backend's :class:`~abathur.stores.archive.ArchiveStore`
(``tx.archive``).

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

from abathur.archival.payload import verify_archive
from abathur.archival.service import ArchivalService, ReclaimSpace

__all__ = ["ArchivalService", "ReclaimSpace", "verify_archive"]

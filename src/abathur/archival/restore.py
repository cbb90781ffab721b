"""Putting an archive entry's rows back in the hot tables, exactly as they were."""

from __future__ import annotations

from typing import Any

from abathur import memory
from abathur.archival.payload import Rows
from abathur.errors import AlreadyExistsError, MemoryNotFoundError
from abathur.stores import Transaction

__all__ = ["insert_rows", "restore_memory", "restore_session", "restore_versions"]


def insert_rows(tx: Transaction, rows: Rows) -> int:
    """Insert a payload table's rows (names from our own lists, see ``Rows``); the last id."""
    return tx.archive.insert_rows(rows.table, rows.columns, rows.rows)


def restore_session(tx: Transaction, tables: dict[str, Rows]) -> None:
    """Put a session and its events back, over its archived stub if it has one."""
    sessions, events = tables["sessions"], tables["events"]
    (session,) = sessions.rows  # payload._check_ref: exactly one
    session_id = sessions.value(session, "id")
    status = tx.archive.session_status(session_id)
    if (status is not None and status != "archived") or tx.archive.session_has_events(session_id):
        raise AlreadyExistsError(
            f"session {session_id!r} exists again in the hot tables (status "
            f"{status if status is not None else '?'}): nothing was restored"
        )
    if status is not None:
        # Column names from SESSION_COLUMNS (see Rows), never from the payload.
        rest = sessions.without("id", [session])
        tx.archive.update_session(session_id, rest.columns, rest.rows[0])
    else:
        insert_rows(tx, sessions)
    insert_rows(tx, events)


def restore_memory(tx: Transaction, tables: dict[str, Rows]) -> tuple[int, bool]:
    """Put every version of a memory back: (1 if it was reindexed, whether a vector was queued)."""
    memories = tables["memories"]
    first = memories.rows[0]
    namespace, key = memories.value(first, "namespace"), memories.value(first, "key")
    taken = tx.archive.memory_version_count(namespace, key)
    if taken:
        raise AlreadyExistsError(
            f"memory {namespace!r}/{key!r} was written again after it was archived "
            f"({taken} version(s) now): nothing was restored; delete those versions' memory "
            "or read the archived one with 'abathur archive show'"
        )
    current_id: int | None = None
    for row in memories.rows:
        new_id = _insert_version(tx, memories, row)
        if memories.value(row, "is_current"):
            current_id = new_id
    if current_id is None or not tx.archive.is_live_memory(current_id):
        return 0, False
    return 1, memory.index(tx, current_id)


def _insert_version(tx: Transaction, memories: Rows, row: tuple[Any, ...]) -> int:
    """Insert one memory version with its old id if still free, else a new one; return it."""
    wanted = memories.value(row, "id")
    if tx.archive.memory_id_taken(wanted):
        # The id was reused (rows archived at the top of the table): a new one.
        return insert_rows(tx, memories.without("id", [row]))
    insert_rows(tx, Rows(memories.table, memories.columns, [row]))
    return int(wanted)


def restore_versions(tx: Transaction, tables: dict[str, Rows]) -> None:
    """Put old versions back under their memory, which must be in the hot tables."""
    memories = tables["memories"]
    first = memories.rows[0]
    namespace, key = memories.value(first, "namespace"), memories.value(first, "key")
    current = tx.archive.current_version(namespace, key)
    if current is None:
        raise MemoryNotFoundError(
            f"memory {namespace!r}/{key!r} is not in the hot tables, so its old versions have "
            "nothing to go back under: restore the archive entry holding the memory first"
        )
    versions = [memories.value(row, "version") for row in memories.rows]
    clash = tx.archive.existing_versions(namespace, key, versions)
    if clash or max(versions) >= current:
        raise AlreadyExistsError(
            f"memory {namespace!r}/{key!r} already has version(s) "
            f"{sorted(clash) or [current]}: nothing was restored"
        )
    for row in memories.rows:
        _insert_version(tx, memories, row)

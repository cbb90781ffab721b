"""Putting an archive entry's rows back in the hot tables, exactly as they were."""

from __future__ import annotations

import json
from typing import Any

import apsw

from abathur import memory
from abathur.archival.payload import Rows
from abathur.errors import AlreadyExistsError, MemoryNotFoundError


def insert_rows(conn: apsw.Connection, rows: Rows) -> None:
    # Table and column names come from _TABLES (see _rows), never from a payload.
    names = ", ".join(f'"{c}"' for c in rows.columns)
    marks = ", ".join("?" * len(rows.columns))
    conn.executemany(f'INSERT INTO "{rows.table}" ({names}) VALUES ({marks})', rows.rows)


def restore_session(conn: apsw.Connection, tables: dict[str, Rows]) -> None:
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
        # Column names from SESSION_COLUMNS (see Rows), never from the payload.
        rest = sessions.without("id", [session])
        sets = ", ".join(f'"{c}" = ?' for c in rest.columns)
        conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*rest.rows[0], session_id))
    else:
        insert_rows(conn, sessions)
    insert_rows(conn, events)


def restore_memory(conn: apsw.Connection, tables: dict[str, Rows]) -> tuple[int, bool]:
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


def _insert_version(conn: apsw.Connection, memories: Rows, row: tuple[Any, ...]) -> int:
    """Insert one memory version with its old id if still free, else a new one; return it."""
    wanted = memories.value(row, "id")
    if conn.execute("SELECT 1 FROM memories WHERE id = ?", (wanted,)).fetchall():
        # The id was reused (rows archived at the top of the table): a new one.
        insert_rows(conn, memories.without("id", [row]))
        return int(conn.last_insert_rowid())
    insert_rows(conn, Rows(memories.table, memories.columns, [row]))
    return int(wanted)


def restore_versions(conn: apsw.Connection, tables: dict[str, Rows]) -> None:
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

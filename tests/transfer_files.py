"""Export files and filled databases for the transfer tests (unit and CLI)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from abathur import Abathur, Event
from abathur.transfer import FORMAT
from tests.backends import BackendHandle

__all__ = ["HEADER", "HOSTILE", "database", "end", "export_bytes", "fill", "memory_line"]


def database(backend: BackendHandle, where: Path, **settings: Any) -> Any:
    """``Abathur.open`` on a fresh database of ``backend`` of its own, named by ``where``.

    Transfer tests need two databases (a source and a target); the
    ``backend`` fixture gives one, this gives more on the same backend.
    """
    where.mkdir(parents=True, exist_ok=True)
    return Abathur.open(backend.spec.target(where), **settings)


HOSTILE = [
    "NUL\x00inside",
    'quotes " and \\ backslash',
    "new\nline\r\nand\ttab",
    "line\u2028separator\u2029paragraph",
    "emoji \U0001f600 rtl \u202e שלום",
    "",
]


async def fill(ab: Abathur) -> None:
    """A little of everything: versions, tombstones, supersedes, TTL, state, tasks, hostile text."""
    m = ab.memory
    await m.put("user:alice:prefs", "lang", "fr", metadata={"source": "chat"})
    await m.put("user:alice:prefs", "lang", {"value": "en", "n": 2**62, "f": 0.1}, type="episodic")
    await m.delete("user:alice:prefs", "lang")
    await m.restore("user:alice:prefs", "lang")
    await m.put("user:alice:a", "drink", "tea")
    await m.put("user:alice:b", "beverage", "tea")
    await m.consolidate("user:alice")  # a duplicate: one of them is superseded
    await m.put("user:alice", "later", "soon gone", ttl=3600)
    await m.put("user:alice", "gone", "deleted")
    await m.delete("user:alice", "gone")
    await m.put("user:alicia", "name", "not alice")
    for i, text in enumerate(HOSTILE):
        await m.put(
            "user:bob:hostile",
            f"k{i} \"'",
            {"text": text, text: [text, None, True]},
            metadata={"why": text},
        )
    s = await ab.sessions.create(
        app="helpdesk",
        user="alice",
        session_id="s1",
        state={"app:tier": "gold", "user:lang": "fr", "topic": None, "temp:x": 1},
    )
    for i, text in enumerate(HOSTILE):
        s = await ab.sessions.append_event(
            "s1",
            Event(
                author="user",
                content={"text": text},
                state_delta={"n": i, "user:k": text},
                metadata={"i": i},
            ),
            expected_revision=s.revision,
        )
    await ab.sessions.set_status("s1", "paused")
    t = await ab.tasks.create(
        session_id="s1", prompt="bell\x07 prompt \n", metadata={"p": 1}, task_id="t1"
    )
    await ab.tasks.update(t.id, status="running")
    await ab.tasks.update(t.id, status="failed", error='boom\x07\n"')
    await ab.tasks.create(session_id="s1", prompt="second", task_id="t2")
    await ab.sessions.create(app="helpdesk", user="bob", session_id="s2")
    await ab.sessions.terminate("s2")
    await ab.sessions.create(
        app="other", user="alice", session_id="s3", state={"app:x": 1, "user:y": 2}
    )


async def export_bytes(ab: Abathur, **scope: Any) -> bytes:
    buffer = io.BytesIO()
    await ab.transfer.export_to(buffer, **scope)
    return buffer.getvalue()


HEADER = json.dumps(
    {"format": FORMAT, "kind": "header", "filter": {"prefix": None, "app": None, "user": None}}
)


def memory_line(namespace: str = "user:x", key: str = "k", versions: Any = None) -> str:
    version = {
        "version": 1,
        "type": "semantic",
        "value": "v",
        "metadata": {},
        "status": "live",
        "superseded_by": None,
        "created_at": 1.0,
        "first_created_at": 1.0,
        "expires_at": None,
    }
    return json.dumps(
        {
            "kind": "memory",
            "namespace": namespace,
            "key": key,
            "versions": [version] if versions is None else versions,
        }
    )


def end(records: int) -> str:
    return json.dumps({"kind": "end", "records": records})

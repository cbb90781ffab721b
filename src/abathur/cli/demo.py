"""``abathur demo``: what ``make run`` shows: a session, its events and state, and memories."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import click

from abathur.api import Abathur
from abathur.cli.options import Output, format_pairs, format_table, standard_options
from abathur.db.database import Database
from abathur.models import Event

__all__ = ["demo"]

APP, USER = "demo", "alice"
PREFIX = f"user:{USER}"
PREFERENCES = f"{PREFIX}:preferences"

# The conversation the demo replays: (author, text, state_delta).
CONVERSATION: list[tuple[str, str, dict[str, Any]]] = [
    ("user", "Hi! Please answer in French from now on.", {"user:lang": "fr", "topic": "prefs"}),
    ("agent", "D'accord, je vous répondrai en français.", {}),
    ("user", "And keep it short.", {"user:style": "concise"}),
    ("agent", "Noté : des réponses courtes.", {"topic": None}),
]


async def _run(path: Path) -> dict[str, Any]:
    # Refuse a file newer than this abathur before opening (and so touching) it.
    await Database.plan_migrations(path)
    async with Abathur.open(path) as ab:
        # A fresh session each run: sessions are conversations, not settings.
        s = await ab.sessions.create(
            app=APP, user=USER, state={"app:model": "demo-model", "channel": "cli"}
        )
        for author, text, delta in CONVERSATION:
            s = await ab.sessions.append_event(
                s.id,
                Event(author=author, content={"text": text}, state_delta=delta),
                expected_revision=s.revision,
            )
        task = await ab.tasks.create(session_id=s.id, prompt="Summarise alice's preferences")

        # Memories are long-lived: each run adds a version to the same ones.
        # expected_version makes a write fail rather than overwrite a version
        # this code has not read (0: only if the memory does not exist yet).
        current = await ab.memory.get(PREFERENCES, "language")
        if current is None:
            current = await ab.memory.put(
                PREFERENCES,
                "language",
                {"value": "English"},
                metadata={"source": "signup form"},
                expected_version=0,
            )
        await ab.memory.put(
            PREFERENCES,
            "language",
            {"value": "French"},
            metadata={"source": f"session {s.id}"},
            expected_version=current.version,
        )
        await ab.memory.put(
            PREFERENCES, "style", {"value": "concise"}, metadata={"source": f"session {s.id}"}
        )
        await ab.memory.put(
            f"{PREFIX}:procedures",
            "greeting",
            {"steps": ["greet in the user's language", "keep it short"]},
            type="procedural",
        )
        await ab.memory.put(
            f"{PREFIX}:episodes",
            s.id,
            {"summary": "asked for French and concise answers"},
            type="episodic",
            ttl=30 * 24 * 3600,
        )

        session = await ab.sessions.get(s.id, last_n=50)
        return {
            "path": str(path.absolute()),
            "session": session.model_dump(mode="json"),
            "user_state": await ab.sessions.get_user_state(app=APP, user=USER),
            "task": task.model_dump(mode="json"),
            "memory": (await ab.memory.get(PREFERENCES, "language")).model_dump(mode="json"),
            "history": [
                v.model_dump(mode="json") for v in await ab.memory.history(PREFERENCES, "language")
            ],
            "namespaces": await ab.memory.namespaces(PREFIX),
            "memories": [m.model_dump(mode="json") for m in await ab.memory.list(PREFIX)],
        }


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, dict) and set(value) == {"text"}:
        value = value["text"]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _human(data: dict[str, Any]) -> str:
    s = data["session"]
    events = format_table(
        ("seq", "author", "content", "state delta"),
        (
            (e["seq"], e["author"], _short(e["content"]), _short(e["state_delta"] or ""))
            for e in s["events"]
        ),
    )
    history = format_table(
        ("version", "written", "value", "source"),
        (
            (
                m["version"],
                _when(m["updated_at"]),
                _short(m["value"]),
                _short(m["metadata"].get("source", ""), 30),
            )
            for m in data["history"]
        ),
    )
    listing = format_table(
        ("namespace", "key", "type", "version", "value"),
        (
            (m["namespace"], _short(m["key"], 12), m["type"], m["version"], _short(m["value"], 40))
            for m in data["memories"]
        ),
    )
    lines = [
        format_pairs([("database", data["path"])]),
        "",
        f"session {s['id']} (app {s['app']!r}, user {s['user']!r})",
        format_pairs(
            [
                ("status", s["status"]),
                ("revision", s["revision"]),
                ("state", _short(s["state"], 90)),
                ("user state", _short(data["user_state"], 90)),
                ("task", f"{data['task']['prompt']!r} ({data['task']['status']})"),
            ]
        ),
        "",
        events,
        "",
        f"memory {PREFERENCES} / language: history (current version {data['memory']['version']})",
        history,
        "",
        f"namespaces under {PREFIX}: " + ", ".join(data["namespaces"]),
        "",
        f"memories under {PREFIX}",
        listing,
    ]
    return "\n".join(lines)


@click.command()
@standard_options
def demo(*, db_path: Path, out: Output) -> None:
    """Write and show an example session and memories (what 'make run' runs).

    Opens the file (creating and migrating it if needed), starts a new session
    of user 'alice' in app 'demo' with a short conversation that changes its
    state, adds a task, writes memories under 'user:alice:...' (each run adds
    new versions), then prints the session with its events, the history of
    one memory, the namespaces and the memories under 'user:alice'. Safe to
    run again on the same file.

    \b
    Examples:
      abathur demo --db ./abathur.db
      abathur demo --db /tmp/demo.db --json | jq '.history[].version'
    """
    data = asyncio.run(_run(db_path))
    out.result(data, _human(data))

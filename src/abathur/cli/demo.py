"""``abathur demo``: what ``make run`` shows: a session, its events and state, memories,
and the project's own docs synced and searched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import click

from abathur.api import Abathur
from abathur.cli.cost import format_report
from abathur.cli.options import (
    EXIT_FINDINGS,
    Output,
    format_pairs,
    format_table,
    is_server,
    json_text,
    shown_db,
    standard_options,
)
from abathur.cli.smoke import format_report as format_smoke
from abathur.cli.stats import format_stats
from abathur.errors import EmbedderError
from abathur.models import CostReport, Event, Stats
from abathur.ops.files import plan_migrations
from abathur.ops.smoke import run_smoke

__all__ = ["demo"]

APP, USER = "demo", "alice"
PREFIX = f"user:{USER}"
PREFERENCES = f"{PREFIX}:preferences"

# The project's docs, found relative to the current directory (make run: the repository).
DOC_PATTERNS = ["README.md", "docs/**/*.md", "runbooks/**/*.md"]
DOC_QUERY = "how do I restore a backup"

# The conversation the demo replays: (author, text, state_delta).
CONVERSATION: list[tuple[str, str, dict[str, Any]]] = [
    ("user", "Hi! Please answer in French from now on.", {"user:lang": "fr", "topic": "prefs"}),
    ("agent", "D'accord, je vous répondrai en français.", {}),
    ("user", "And keep it short.", {"user:style": "concise"}),
    ("agent", "Noté : des réponses courtes.", {"topic": None}),
]


async def _run(path: Path) -> dict[str, Any]:
    # Refuse a file newer than this abathur before opening (and so touching) it;
    # a PostgreSQL server refuses a newer schema itself when it opens.
    if not is_server(path):
        await plan_migrations(path)
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
        language = await ab.memory.get(PREFERENCES, "language")
        assert language is not None  # written above
        return {
            "path": shown_db(path),
            "session": session.model_dump(mode="json"),
            "user_state": await ab.sessions.get_user_state(app=APP, user=USER),
            "task": task.model_dump(mode="json"),
            "memory": language.model_dump(mode="json"),
            "history": [
                v.model_dump(mode="json") for v in await ab.memory.history(PREFERENCES, "language")
            ],
            "namespaces": await ab.memory.namespaces(PREFIX),
            "memories": [m.model_dump(mode="json") for m in await ab.memory.list(PREFIX)],
            "documents": await _project_docs(ab, Path.cwd()),
            # After the docs: their embedding calls are in the cost report too.
            **(await _costs_and_stats(ab)),
        }


async def _costs_and_stats(ab: Abathur) -> dict[str, Any]:
    """Pack memories for a prompt, then what the embedder cost and the database's stats."""
    # Without the embedder the report shows what was embedded; search falls back to keyword.
    with contextlib.suppress(EmbedderError):
        await ab.embeddings.drain()
    context = await ab.memory.context(PREFIX, "greet alice: language, style", max_tokens=40)
    report = await ab.costs.report(since="1d", by="model")
    found = await ab.analytics.stats(days=7)
    return {
        "context": context.model_dump(mode="json"),
        "cost": report.model_dump(mode="json"),
        "stats": found.model_dump(mode="json"),
    }


async def _project_docs(ab: Abathur, root: Path) -> dict[str, Any]:
    """Sync README.md, docs/ and runbooks/ under ``root``, embed them, and search them."""
    if not any((root / name).exists() for name in ("README.md", "docs", "runbooks")):
        return {
            "root": str(root),
            "skipped": f"no README.md, docs/ or runbooks/ in {root}: run the demo from the "
            "project's directory to sync and search its docs",
        }
    report = await ab.documents.sync(root, DOC_PATTERNS)
    try:
        embeddings: dict[str, Any] = (await ab.embeddings.drain()).model_dump()
    except EmbedderError as exc:  # the docs are synced; search falls back to keyword
        embeddings = {"error": exc.to_dict()}
    found = await ab.documents.search(DOC_QUERY, k=3, mode="hybrid")
    return {
        "root": str(root),
        "patterns": DOC_PATTERNS,
        "sync": report.model_dump(mode="json"),
        "embeddings": embeddings,
        "search": found.model_dump(mode="json"),
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
        f"session {s['id']} (app {json_text(s['app'])}, user {json_text(s['user'])})",
        format_pairs(
            [
                ("status", s["status"]),
                ("revision", s["revision"]),
                ("state", _short(s["state"], 90)),
                ("user state", _short(data["user_state"], 90)),
                ("task", f"{json_text(data['task']['prompt'])} ({data['task']['status']})"),
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
        "",
        *_documents_human(data["documents"]),
        "",
        f"memory.context({json_text(PREFIX)}, max_tokens={data['context']['max_tokens']}): "
        f"{len(data['context']['memories'])} memories, {data['context']['tokens']} tokens",
        data["context"]["text"],
        "",
        "cost report (last 24 h, `abathur cost report`)",
        format_report(CostReport.model_validate(data["cost"])),
        "",
        "stats (`abathur stats`)",
        format_stats(Stats.model_validate(data["stats"])),
    ]
    return "\n".join(lines)


def _documents_human(docs: dict[str, Any]) -> list[str]:
    if "skipped" in docs:
        return [f"documents: skipped: {docs['skipped']}"]
    sync, found = docs["sync"], docs["search"]
    if "error" in docs["embeddings"]:
        vectors = f"not embedded: {docs['embeddings']['error']['message']}"
    else:
        vectors = f"{sync['embeddings_queued']} sent to the embedder, the rest from its cache"
    lines = [
        f"documents under {docs['root']} ({', '.join(docs['patterns'])})",
        format_pairs(
            [
                (
                    "files",
                    f"added {len(sync['added'])}, changed {len(sync['changed'])}, "
                    f"removed {len(sync['removed'])}, unchanged {sync['unchanged']}, "
                    f"failed {len(sync['failed'])}",
                ),
                ("chunks", f"added {sync['chunks_added']}, kept {sync['chunks_kept']}; {vectors}"),
            ]
        ),
        "",
        f"search {json_text(found['query'])} ({found['mode']}): {len(found['hits'])} hit(s)",
    ]
    for rank, hit in enumerate(found["hits"], start=1):
        where = hit["path"] + (f" § {hit['heading']}" if hit["heading"] else "")
        lines.append(f"{rank}. {where}  (score {hit['score']:.4f})")
        lines.append("   " + _short(" ".join(hit["text"].split()), 100))
    return lines


@click.command()
@standard_options
def demo(*, db_path: Path, out: Output) -> None:
    """Write and show an example session and memories (what 'make run' runs).

    Opens the file (creating and migrating it if needed), starts a new session
    of user 'alice' in app 'demo' with a short conversation that changes its
    state, adds a task, writes memories under 'user:alice:...' (each run adds
    new versions), then prints the session with its events, the history of
    one memory, the namespaces and the memories under 'user:alice'. Then syncs
    the project's own docs (README.md, docs/**/*.md, runbooks/**/*.md under
    the current directory; skipped with a message when there are none),
    embeds them, and prints a hybrid search. Safe to run again on the same file.
    Ends with 'abathur smoke' on the same file: its 35 cases must all pass
    (exit 1 otherwise).

    \b
    Examples:
      abathur demo --db ./abathur.db
      abathur demo --db /tmp/demo.db --json | jq '.history[].version'
    """
    data = asyncio.run(_run(db_path))
    # Last of all, so `make run` ends with its table: the post-deploy smoke
    # suite on the same file (it writes only under its own namespace, then
    # removes what it wrote).
    smoke = asyncio.run(run_smoke(db_path))
    data["smoke"] = smoke.to_dict()
    out.result(data, _human(data) + "\n\n" + format_smoke(smoke))
    if not smoke.is_ok:
        raise click.exceptions.Exit(EXIT_FINDINGS)

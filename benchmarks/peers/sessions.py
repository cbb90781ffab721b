"""Sessions: ADK's SqliteSessionService and DatabaseSessionService (SQLite file) vs abathur.

Each backend gets its own file in one temporary directory. Operations, timed
alternately (see :mod:`benchmarks.peers.harness`): create, append_event (one
session, sequential, one-key state delta), get with the last 50 events (of a
session holding 200), list (a user's 20 sessions); then 50 concurrent
sessions appending, one backend at a time, for throughput and errors.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from google.adk.events import Event as AdkEvent
from google.adk.events import EventActions
from google.adk.sessions import DatabaseSessionService
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from abathur import Abathur, Event

from .harness import Timings, alternate, table, write

APP = "bench"
TEXT = "The user asked about the refund for order 1234 and the agent answered. " * 3


def _adk_event(i: int) -> AdkEvent:
    return AdkEvent(
        invocation_id=f"inv{i}",
        author="user" if i % 2 else "agent",
        content=types.Content(role="user", parts=[types.Part(text=f"{i} {TEXT}")]),
        actions=EventActions(state_delta={"turn": i}),
    )


def _ab_event(i: int) -> Event:
    return Event(
        author="user" if i % 2 else "agent",
        content={"role": "user", "parts": [{"text": f"{i} {TEXT}"}]},
        state_delta={"turn": i},
    )


class Adk:
    def __init__(self, service: Any) -> None:
        self.s = service
        self.sessions: dict[str, Any] = {}

    async def create(self, user: str) -> str:
        s = await self.s.create_session(app_name=APP, user_id=user)
        self.sessions[s.id] = s
        return s.id

    async def append(self, sid: str, i: int) -> None:
        await self.s.append_event(self.sessions[sid], _adk_event(i))

    async def get50(self, user: str, sid: str) -> int:
        s = await self.s.get_session(
            app_name=APP,
            user_id=user,
            session_id=sid,
            config=GetSessionConfig(num_recent_events=50),
        )
        return len(s.events)

    async def list(self, user: str) -> int:
        return len((await self.s.list_sessions(app_name=APP, user_id=user)).sessions)


class Ab:
    def __init__(self, ab: Abathur) -> None:
        self.ab = ab

    async def create(self, user: str) -> str:
        return (await self.ab.sessions.create(app=APP, user=user)).id

    async def append(self, sid: str, i: int) -> None:
        await self.ab.sessions.append_event(sid, _ab_event(i))

    async def get50(self, user: str, sid: str) -> int:
        return len((await self.ab.sessions.get(sid, last_n=50)).events)

    async def list(self, user: str) -> int:
        return len(await self.ab.sessions.list(app=APP, user=user))


async def _concurrent(backend: Any, writers: int, events: int) -> dict[str, Any]:
    sids = [await backend.create(f"c{w:02d}") for w in range(writers)]
    errors: dict[str, int] = {}

    async def writer(sid: str) -> None:
        for i in range(events):
            try:
                await backend.append(sid, i)
            except Exception as e:  # counted, not raised: errors are a result here
                name = f"{type(e).__name__}: {str(e)[:40]}"
                errors[name] = errors.get(name, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(s) for s in sids))
    wall = time.perf_counter() - t0
    ok = writers * events - sum(errors.values())
    return {
        "events_per_s": round(ok / wall),
        "wall_s": round(wall, 2),
        "errors": sum(errors.values()),
        "error_types": errors,
    }


async def run(*, quick: bool) -> list[dict[str, Any]]:
    rounds = 60 if quick else 300
    conc_events = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="abathur-peers-") as tmp:
        d = Path(tmp)
        ab = await Abathur.open(d / "abathur.db", embedder="none")
        backends = {
            "abathur": Ab(ab),
            "adk_sqlite": Adk(SqliteSessionService(str(d / "adk.db"))),
            "adk_database": Adk(DatabaseSessionService(db_url=f"sqlite+aiosqlite:///{d}/adkdb.db")),
        }
        try:
            t = Timings()
            # A session of 200 events for get, 20 sessions of one user for list.
            big = {n: await b.create("reader") for n, b in backends.items()}
            for n, b in backends.items():
                for i in range(200):
                    await b.append(big[n], i)
                for _ in range(19):
                    await b.create("reader")
            live = {n: await b.create("writer") for n, b in backends.items()}

            def op(fn):
                return {n: (lambda i, n=n: fn(n, i)) for n in backends}

            await alternate(t, "create", op(lambda n, i: backends[n].create(f"u{i % 50}")), rounds)
            await alternate(
                t, "append_event", op(lambda n, i: backends[n].append(live[n], i)), rounds
            )
            await alternate(
                t,
                "get (last 50 of 200)",
                op(lambda n, i: backends[n].get50("reader", big[n])),
                rounds,
            )
            await alternate(
                t, "list (20 sessions)", op(lambda n, i: backends[n].list("reader")), rounds
            )
            rows = table(t, "abathur")
            conc = {}
            for n, b in backends.items():
                conc[n] = await _concurrent(b, 50, conc_events)
                rows.append(
                    {
                        "operation": f"50 concurrent writers x {conc_events} appends",
                        "backend": n,
                        "median_ms": "",
                        "p95_ms": "",
                        "rounds": 1,
                        "x_abathur": "",
                        "note": f"{conc[n]['events_per_s']} events/s, "
                        f"{conc[n]['errors']} errors {conc[n]['error_types'] or ''}",
                    }
                )
        finally:
            await ab.close()
            for n, b in backends.items():
                if n != "abathur" and hasattr(b.s, "close"):
                    await b.s.close()
    ratio = {
        n: round(conc["abathur"]["events_per_s"] / max(1, c["events_per_s"]), 2)
        for n, c in conc.items()
    }
    write(
        "peers_sessions",
        rows,
        {"rounds per op": rounds, "concurrent throughput abathur / backend": ratio},
    )
    return rows

"""Concurrency is a feature: racing coroutines and processes on one file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from abathur import Abathur, Event, StaleSessionError, VersionConflictError

HERE = Path(__file__).parent


async def test_fifty_coroutines_exactly_one_winner_per_round(ab: Abathur) -> None:
    session = await ab.sessions.create(app="race", user="u")
    rounds = 10
    for round_no in range(rounds):
        seen = await ab.sessions.get(session.id, last_n=0)

        async def attempt(worker: int, revision: int = seen.revision, r: int = round_no) -> bool:
            try:
                await ab.sessions.append_event(
                    session.id,
                    Event(author=f"w{worker}", content={"round": r}),
                    expected_revision=revision,
                )
            except StaleSessionError:
                return False
            return True

        results = await asyncio.gather(*(attempt(w) for w in range(50)))
        assert sum(results) == 1, f"round {round_no}: {sum(results)} winners"
    final = await ab.sessions.get(session.id)
    assert final.revision == rounds
    assert [e.content["round"] for e in final.events] == list(range(rounds))
    assert [e.seq for e in final.events] == list(range(1, rounds + 1))


async def test_fifty_coroutines_retrying_lose_no_event(ab: Abathur) -> None:
    session = await ab.sessions.create(app="race", user="u")

    async def append_until_it_lands(worker: int) -> int:
        attempts = 0
        while True:
            attempts += 1
            current = await ab.sessions.get(session.id, last_n=0)
            try:
                await ab.sessions.append_event(
                    session.id,
                    Event(author=f"w{worker}", state_delta={f"w{worker}": True}),
                    expected_revision=current.revision,
                )
                return attempts
            except StaleSessionError:
                await asyncio.sleep(0)

    attempts = await asyncio.gather(*(append_until_it_lands(w) for w in range(50)))
    final = await ab.sessions.get(session.id)
    assert sorted(e.author for e in final.events) == sorted(f"w{w}" for w in range(50))
    assert [e.seq for e in final.events] == list(range(1, 51))
    assert final.revision == 50
    assert all(final.state[f"w{w}"] is True for w in range(50))
    assert max(attempts) > 1  # the race really happened


async def test_fifty_coroutines_one_memory_version_each_round(ab: Abathur) -> None:
    await ab.memory.put("race:mem", "k", {"v": -1})
    for round_no in range(5):
        version = (await ab.memory.get("race:mem", "k")).version

        async def attempt(worker: int, v: int = version, r: int = round_no) -> bool:
            try:
                await ab.memory.put("race:mem", "k", {"v": r, "w": worker}, expected_version=v)
            except VersionConflictError:
                return False
            return True

        results = await asyncio.gather(*(attempt(w) for w in range(50)))
        assert sum(results) == 1
    history = await ab.memory.history("race:mem", "k")
    assert [m.version for m in history] == [1, 2, 3, 4, 5, 6]


async def test_tenants_never_see_each_other_under_concurrency(ab: Abathur) -> None:
    users = [f"user{i}" for i in range(20)]

    async def tenant(user: str) -> None:
        for n in range(5):
            s = await ab.sessions.create(app="shared", user=user, state={"user:name": user})
            await ab.sessions.append_event(s.id, Event(author=user, state_delta={"n": n}))
            await ab.memory.put(f"tenant:{user}", f"k{n}", {"owner": user})

    await asyncio.gather(*(tenant(u) for u in users))
    for user in users:
        sessions = await ab.sessions.list(app="shared", user=user)
        assert len(sessions) == 5 and {s.user for s in sessions} == {user}
        assert all(s.state["user:name"] == user for s in sessions)
        assert await ab.sessions.get_user_state(app="shared", user=user) == {"name": user}
        memories = await ab.memory.list(f"tenant:{user}")
        assert len(memories) == 5 and {m.value["owner"] for m in memories} == {user}


@pytest.mark.sqlite_only("two processes on one SQLite file; counts rows through tx.conn")
@pytest.mark.slow
def test_two_processes_write_for_ten_seconds(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"

    async def create() -> None:
        async with Abathur.open(db):
            pass

    asyncio.run(create())  # migrate once, so neither process races the schema
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "writer_process.py"), str(db), label, "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in ("p1", "p2")
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
        reports.append(json.loads(out.strip().splitlines()[-1]))

    for report in reports:
        assert report["errors"] == [], report["errors"][:5]
        assert report["written"] > 100, report  # both really wrote, for the whole time

    async def count() -> dict[str, int]:
        async with Abathur.open(db) as ab:
            counts = {}
            for report in reports:
                label = report["label"]
                rows = await ab.db.read(
                    lambda c, label=label: c.conn.execute(
                        "SELECT count(*) FROM memories WHERE namespace = ?", (f"race:{label}",)
                    ).fetchall()
                )
                counts[label] = rows[0][0]
            assert (await ab.audit.verify()).is_ok
            return counts

    counts = asyncio.run(count())
    assert counts == {r["label"]: r["written"] for r in reports}

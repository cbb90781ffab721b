"""Each embedding job is embedded once across processes: lease-based claims (issue 14).

Real OS processes (tests/integration/queue_worker_process.py) drain one SQLite
file or one PostgreSQL database at once, each with an embedder that logs every
text it embeds to a shared file; the tests count embeddings per text. A worker
killed mid-batch leaves its jobs claimed until its lease runs out; a worker
that finishes after its lease ran out (and another worker took its jobs)
applies nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from abathur import Abathur
from tests.backends import BackendHandle
from tests.embedders import GatedEmbedder, WordHashEmbedder

SCRIPT = Path(__file__).parent / "queue_worker_process.py"


async def _queue(ab: Abathur, n: int) -> list[str]:
    """Write ``n`` memories (distinct texts); the content hashes of their queued jobs."""
    for i in range(n):
        await ab.memory.put("user:q", f"k{i}", f"fact {i} about topic{i} and thing{i * 7}")

    def hashes(tx: object) -> list[str]:
        jobs = tx.queue.ready_jobs(  # type: ignore[attr-defined]
            ready_before=math.inf, max_id=math.inf, limit=n + 1
        )
        return sorted(job.content_hash for job in jobs)

    queued = await ab.db.read(hashes)
    assert len(set(queued)) == n
    return queued


def _spawn(target: object, calls: Path, mode: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(target), str(calls), mode, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expect_line(proc: subprocess.Popen[str], line: str) -> None:
    """Wait for the process to print ``line`` (it prints nothing else before)."""
    assert proc.stdout is not None and proc.stderr is not None
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        pytest.fail(f"expected {line!r}, got {got!r}: {proc.stderr.read()}")


def _embedded_per_text(calls: Path) -> Counter[str]:
    if not calls.exists():
        return Counter()
    return Counter(line.split()[0] for line in calls.read_text().splitlines())


async def _wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_worker_processes_embed_each_job_once(backend: BackendHandle, tmp_path: Path) -> None:
    processes, jobs = 4, 80
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        queued = await _queue(ab, jobs)
    calls, go = tmp_path / "calls.log", tmp_path / "go"
    # Small batches and a slow embedder (20 ms a call, as a remote one): the
    # processes' batches overlap in time, and every one of them wants the queue.
    options = ("--go", str(go), "--batch", "4", "--delay", "0.02")
    procs = [_spawn(backend.target, calls, "drain", *options) for _ in range(processes)]
    try:
        for proc in procs:
            _expect_line(proc, "ready")
        go.touch()
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    assert [proc.returncode for proc in procs] == [0] * processes, outputs
    per_text = _embedded_per_text(calls)
    assert sorted(per_text) == queued, "every job embedded, none lost"
    assert set(per_text.values()) == {1}, f"embedded more than once: {per_text.most_common(3)}"
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        status = await ab.embeddings.status()
        assert (status.queue_depth, status.vectors) == (0, jobs), "none left, one vector each"


@pytest.mark.slow
async def test_a_killed_workers_jobs_are_claimed_again_once_its_lease_ran_out(
    backend: BackendHandle, tmp_path: Path
) -> None:
    jobs = 6
    calls = tmp_path / "calls.log"
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        await _queue(ab, jobs)
        # The dying worker's embedder states a 1 s timeout: a lease of 2 x 1 s + 2 s.
        dying = _spawn(backend.target, calls, "die", "--timeout", "1", "--batch", "8")
        try:
            _expect_line(dying, "claimed")
            killed_at = time.monotonic()
            os.kill(dying.pid, signal.SIGKILL)
        finally:
            if dying.poll() is None:
                dying.kill()
            dying.communicate(timeout=30)  # reaps it and closes its pipes
        first = await ab.embeddings.drain()
        if time.monotonic() - killed_at < 3.5:  # the lease surely still runs
            assert (first.embedded, first.remaining) == (0, jobs), "the dead worker's claim holds"

        async def taken_over() -> bool:
            return (await ab.embeddings.drain()).remaining == 0

        await _wait_for(taken_over, timeout=30)
        assert time.monotonic() - killed_at > 2.0, "taken before the lease ran out"
        status = await ab.embeddings.status()
        assert (status.queue_depth, status.vectors) == (0, jobs)
    assert _embedded_per_text(calls) == Counter(), "the dead worker embedded nothing"


async def test_a_late_finish_after_the_lease_ran_out_applies_nothing(
    backend: BackendHandle,
) -> None:
    # The slow worker claims every job and stalls in its embedder past its
    # lease (its embedder states a 50 ms timeout: a lease of about 2.1 s); the
    # fast one takes the jobs over and embeds them. When the slow one wakes,
    # its token no longer claims the jobs: it applies nothing.
    jobs = 3
    slow_embedder = GatedEmbedder()
    slow_embedder.timeout_s = 0.05  # type: ignore[attr-defined]
    fast_embedder = WordHashEmbedder()
    async with (
        backend.open(embedder=fast_embedder, embed_worker=False) as fast,
        backend.open(embedder=slow_embedder, embed_worker=False) as slow,
    ):
        await _queue(fast, jobs)
        held = asyncio.create_task(slow.embeddings.drain())
        await asyncio.wait_for(slow_embedder.started.wait(), 10)
        claimed_at = time.monotonic()
        passed_over = await fast.embeddings.drain()
        if time.monotonic() - claimed_at < 1.5:
            assert (passed_over.embedded, passed_over.remaining) == (0, jobs)

        async def taken_over() -> bool:
            return (await fast.embeddings.drain()).embedded == jobs

        await _wait_for(taken_over, timeout=20)
        slow_embedder.gate.set()
        late = await held
        assert (late.embedded, late.remaining) == (0, 0), "the late finish applied nothing"
        assert (slow_embedder.calls, fast_embedder.calls) == (1, 1)
        status = await fast.embeddings.status()
        assert (status.queue_depth, status.vectors) == (0, jobs)

"""A separate OS process that embeds one database's queue (issue 14: claims).

Run as ``python queue_worker_process.py TARGET CALLS MODE [options]``, TARGET a
SQLite file or a ``postgresql://`` URL whose items were queued with the
``test:word-hash`` embedder (tests/embedders.py). Every text this process's
embedder embeds is appended to the file CALLS as one line ``<sha256> <pid>``
(``O_APPEND``: lines of several processes never interleave), so a test counts
embeddings per text across processes.

Modes:

* ``drain``: drain until the queue is empty (jobs other processes claim are
  theirs: drain again until they are done); print one JSON line
  ``{"embedded": N, "calls": N, "drains": N}``.
* ``die``: claim one batch, print ``claimed``, and hang in the embedder for
  good (the test kills the process: a worker that dies mid-batch).
* ``fill``: queue ``--jobs`` memories of distinct texts and embed nothing
  (a benchmark's setup, run by the abathur under test); print ``{"queued": N}``.

Options: ``--go FILE`` (once open, print ``ready`` and wait for FILE to
exist, so every process starts at once), ``--delay S`` (seconds each embed call takes, as a remote
embedder would), ``--batch N`` (``embed_batch_size``), ``--timeout S`` (the
embedder's stated ``timeout_s``: what the lease is derived from).

Used by tests/integration/test_queue_claims.py and benchmarks/queue_claims.py;
it uses only the public API, so it runs against an abathur without claims too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.embedders

from abathur import Abathur
from abathur.embeddings import EmbedResult
from abathur.embeddings.queue import content_hash
from tests.embedders import WordHashEmbedder


class CountingEmbedder(WordHashEmbedder):
    """TEST DOUBLE: ``WordHashEmbedder`` that logs every text it embeds to a shared file."""

    def __init__(self, calls: Path, *, delay_s: float, timeout_s: float | None) -> None:
        super().__init__()
        self._calls = calls
        self.delay_s = delay_s
        self.hang = False
        if timeout_s is not None:
            self.timeout_s = timeout_s
            self.retries = 0

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        if self.hang:
            print("claimed", flush=True)
            await asyncio.Event().wait()  # never set: the test kills this process
        result = await super().embed_with_usage(texts)
        lines = "".join(f"{content_hash(t)} {os.getpid()}\n" for t in texts)
        fd = os.open(self._calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        return result


async def main(args: argparse.Namespace) -> dict[str, int]:
    embedder = CountingEmbedder(Path(args.calls), delay_s=args.delay, timeout_s=args.timeout)
    embedder.hang = args.mode == "die"
    async with Abathur.open(
        args.target, embedder=embedder, embed_worker=False, embed_batch_size=args.batch
    ) as ab:
        if args.mode == "fill":
            for i in range(args.jobs):
                await ab.memory.put("user:q", f"k{i}", f"fact {i} about topic{i} and thing{i * 7}")
            return {"queued": (await ab.embeddings.status()).queue_depth}
        if args.go:
            print("ready", flush=True)
            while not Path(args.go).exists():
                await asyncio.sleep(0.01)
        embedded = drains = 0
        while True:
            report = await ab.embeddings.drain()
            embedded += report.embedded
            drains += 1
            if report.remaining == 0:
                break
            await asyncio.sleep(0.02)  # others' claimed jobs: theirs to finish
        return {"embedded": embedded, "calls": embedder.calls, "drains": drains}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("calls")
    parser.add_argument("mode", choices=["drain", "die", "fill"])
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--go", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse(sys.argv[1:])))), flush=True)

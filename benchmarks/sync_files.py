"""Document sync of 1,000 markdown files: cold (walk, chunk, embed) and warm.

Generates ``--files`` markdown files of 1-3 KB (seeded, so every run syncs the
same 2.1 MB: headings every few paragraphs, sentences from a small word list)
under ``DIR/docs``, then times through the public API only:

* **cold**: ``documents.sync`` of the fresh tree (walk, hash, chunk, FTS,
  embedding jobs queued in the same transactions), then
  ``embeddings.drain()`` (the bundled MiniLM embeds every chunk);
* **warm**: ``documents.sync`` twice more with nothing changed;
* **one edit**: a line appended to one file, then sync + drain.

Run::

    .venv/bin/python -m benchmarks.sync_files /tmp/syncbench
    .venv/bin/python -m benchmarks.sync_files /tmp/syncbench --files 200 --json out.json

``DIR`` is emptied first. The embedder runs in this process with the bundled
model's two intra-op threads, so the embed figure is the machine's, not a
worker's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abathur import Abathur, logs

# The vocabulary of the generated prose: runbook-ish words and stop words.
_VOCABULARY = (
    "backup restore database writer reader index vector search chunk embed "
    "sync file heading section runbook operator deploy rollback smoke suite "
    "latency memory session agent tenant partition query keyword hybrid fusion "
    "the a of to and in is for with on that by this be are as it"
)
WORDS = _VOCABULARY.split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."


def document(rng: random.Random, i: int) -> str:
    """One markdown file of 1-3 KB: a title, paragraphs, a ``##`` heading now and then."""
    target = rng.randint(1000, 3000)
    parts = [f"# Document {i}\n"]
    size = len(parts[0])
    while size < target:
        if rng.random() < 0.2:
            parts.append(f"\n## Section {len(parts)}\n")
        else:
            parts.append("\n" + " ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) + "\n")
        size += len(parts[-1])
    return "".join(parts)


def generate(root: Path, files: int, seed: int = 7) -> int:
    """Write ``files`` documents under ``root`` (100 per directory); return their bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        path = root / f"d{i // 100}" / f"doc{i:04}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = document(rng, i)
        path.write_text(text, encoding="utf-8")
        total += len(text.encode())
    return total


async def measure(base: Path, files: int) -> dict[str, Any]:
    """Generate the tree under ``base`` and time cold, warm and one-edit syncs."""
    shutil.rmtree(base, ignore_errors=True)
    root = base / "docs"
    size = generate(root, files)
    # Files written in the last two seconds are re-hashed on every sync (their
    # mtime cannot prove them unchanged yet); let them age as real files would.
    time.sleep(2.5)
    out: dict[str, Any] = {"files": files, "bytes": size}
    async with Abathur.open(base / "sync.db", embed_worker=False) as ab:
        started = time.perf_counter()
        report = await ab.documents.sync(root)
        synced = time.perf_counter()
        drained = await ab.embeddings.drain()
        done = time.perf_counter()
        assert len(report.added) == files and not report.failed, report
        tokens = await ab.db.read(
            lambda c: c.conn.execute("SELECT avg(tokens), max(tokens) FROM chunks").fetchall()[0]
        )
        out["cold"] = {
            "sync_s": round(synced - started, 3),
            "embed_s": round(done - synced, 2),
            "total_s": round(done - started, 2),
            "chunks": report.chunks_added,
            "embedded": drained.embedded,
            "chunks_per_s": round(drained.embedded / (done - synced), 1),
            "tokens_avg": round(tokens[0], 1),
            "tokens_max": tokens[1],
        }
        warm = []
        for _ in range(2):
            started = time.perf_counter()
            report = await ab.documents.sync(root)
            await ab.embeddings.drain()
            warm.append(round(time.perf_counter() - started, 4))
            assert report.unchanged == files and report.embeddings_queued == 0, report
        out["warm_s"] = warm
        edited = root / "d3" / "doc0300.md" if files > 300 else root / "d0" / "doc0000.md"
        edited.write_text(edited.read_text() + "\nOne more sentence about restores.\n")
        started = time.perf_counter()
        report = await ab.documents.sync(root)
        drained = await ab.embeddings.drain()
        out["one_edit"] = {
            "s": round(time.perf_counter() - started, 4),
            "chunks_kept": report.chunks_kept,
            "embedded": drained.embedded,
        }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="work directory (emptied first)")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    logs.configure(level="WARNING")
    result = asyncio.run(measure(args.dir, args.files))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

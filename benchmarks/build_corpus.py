"""The 100k-memory search corpus: real SciFact texts, real bundled-MiniLM vectors, cached.

Run it once before ``benchmarks/test_search.py`` (the test builds it too if missing)::

    .venv/bin/python -m benchmarks.build_corpus            # texts -> vectors -> database
    .venv/bin/python -m benchmarks.build_corpus --texts    # just print the corpus stats

What it makes, under ``benchmarks/.cache/`` (gitignored):

* ``scifact100k.npy``: 100,000 x 384 float32, the bundled embedder's vectors of
  :func:`corpus_texts` (~10 min on 2 cores), and ``queries.npy`` for the 1,109
  SciFact claims. A JSON sidecar records the sha256 of the texts and of the
  model file, so a changed corpus or model re-embeds instead of reusing stale
  vectors.
* ``search100k.db``: an abathur database holding the 100k texts as memories,
  1,000 per user in 100 tenants ``user:u000`` .. ``user:u099`` (a seeded
  shuffle decides who holds what, so every tenant holds a mix of topics). It is
  filled through the public API only: ``memory.put`` of every text, then
  ``embeddings.drain()``. The drain runs the real queue, cache and vec0 path;
  the embedder it calls is :class:`CachedEmbedder`, which answers from the
  vectors above instead of running the model again (it has the bundled
  embedder's name, so the file opens later with ``BundledEmbedder``). A
  memory is embedded as ``"<key>: <text>"``; the keys here are serial numbers
  (``t000123``), so the vector stored for a memory is its text's alone.

The texts (all distinct, all real): every sentence of the 5,183 abstracts
(>= 20 characters), every title, every pair of consecutive sentences, then
triples of consecutive sentences in corpus order until there are 100,000.
The SciFact data stays in ``../shared/eval``; nothing of it enters the package.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from abathur import Abathur
from abathur.embeddings.base import EmbedResult
from abathur.embeddings.bundled import BundledEmbedder

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SCIFACT = Path(os.environ.get("ABATHUR_SCIFACT", HERE.parent.parent / "shared/eval/scifact"))

N_TEXTS = 100_000
USERS = 100
PER_USER = N_TEXTS // USERS
SEED = 20261122
DB_NAME = "search100k.db"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def load_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise SystemExit(
            f"{path} not found: point ABATHUR_SCIFACT at a BEIR-format SciFact directory "
            "(corpus.jsonl, queries.jsonl; the project keeps it in ../shared/eval/scifact)"
        )
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def corpus_texts(n: int = N_TEXTS, root: Path = SCIFACT) -> list[str]:
    """``n`` distinct real texts from the SciFact abstracts, in a fixed order."""
    docs = load_jsonl(root / "corpus.jsonl")
    per_doc = [
        [s.strip() for s in _SENTENCE_END.split(d["text"]) if len(s.strip()) >= 20] for d in docs
    ]
    out: list[str] = []
    seen: set[str] = set()

    def add(text: str) -> bool:
        if text and text not in seen:
            seen.add(text)
            out.append(text)
        return len(out) >= n

    groups = (
        [s for sents in per_doc for s in sents],
        [d["title"].strip() for d in docs],
        [" ".join(p) for sents in per_doc for p in itertools.pairwise(sents)],
        [" ".join(t) for sents in per_doc for t in zip(sents, sents[1:], sents[2:], strict=False)],
    )
    for group in groups:
        for text in group:
            if add(text):
                return out
    raise SystemExit(f"SciFact yields only {len(out)} distinct texts, {n} wanted")


def queries(root: Path = SCIFACT) -> list[tuple[str, str]]:
    """Every SciFact claim as ``(query id, text)``, in file order."""
    return [(q["_id"], q["text"]) for q in load_jsonl(root / "queries.jsonl")]


def _digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _model_digest() -> str:
    from importlib import resources

    data = resources.files("abathur.embeddings").joinpath("model/model.onnx").read_bytes()
    return hashlib.sha256(data).hexdigest()


def cached_vectors(texts: Sequence[str], name: str) -> np.ndarray | None:
    """``.cache/<name>.npy`` if it holds the current model's vectors of ``texts``, else None."""
    array_path, meta_path = CACHE / f"{name}.npy", CACHE / f"{name}.json"
    want = {"texts": _digest(texts), "count": len(texts), "model": _model_digest()}
    if array_path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == want:
        return np.load(array_path)
    return None


async def _embed_all(texts: list[str], progress: bool) -> np.ndarray:
    embedder = BundledEmbedder()
    out = np.empty((len(texts), embedder.dims), dtype=np.float32)
    step = 2048
    started = time.perf_counter()
    for start in range(0, len(texts), step):
        chunk = texts[start : start + step]
        out[start : start + len(chunk)] = await embedder.embed(chunk)
        if progress:
            done = start + len(chunk)
            rate = done / (time.perf_counter() - started)
            print(f"  embedded {done:,}/{len(texts):,} ({rate:,.0f} texts/s)", file=sys.stderr)
    return out


def embed_cached(texts: Sequence[str], name: str, *, progress: bool = True) -> np.ndarray:
    """The bundled embedder's vectors of ``texts``, from ``.cache/<name>.npy`` when current."""
    CACHE.mkdir(exist_ok=True)
    array_path, meta_path = CACHE / f"{name}.npy", CACHE / f"{name}.json"
    cached = cached_vectors(texts, name)
    if cached is not None:
        return cached
    want = {"texts": _digest(texts), "count": len(texts), "model": _model_digest()}
    started = time.perf_counter()
    # Callers may be inside a running event loop (the peer harness is): the
    # embedding gets a loop of its own on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        out = pool.submit(asyncio.run, _embed_all(list(texts), progress)).result()
    seconds = time.perf_counter() - started
    np.save(array_path, out)
    meta_path.write_text(json.dumps(want))
    (CACHE / f"{name}.timing.json").write_text(
        json.dumps({"texts": len(texts), "seconds": round(seconds, 1)})
    )
    return out


def corpus_vectors() -> tuple[list[str], np.ndarray]:
    texts = corpus_texts()
    return texts, embed_cached(texts, "scifact100k")


def query_vectors() -> tuple[list[tuple[str, str]], np.ndarray]:
    qs = queries()
    return qs, embed_cached([text for _, text in qs], "queries", progress=False)


class CachedEmbedder:
    """The bundled embedder's identity, answering from precomputed vectors.

    A memory is embedded as ``"<key>: <text>"``; for the corpus's synthetic
    keys (``t000123``) it answers the vector of the text alone, as a key that
    is only a serial number says nothing about the text. Any text it was not
    given falls through to the real :class:`BundledEmbedder`, one call for
    all of them.
    """

    name = BundledEmbedder.name
    provider = BundledEmbedder.provider
    model = BundledEmbedder.model
    dims = BundledEmbedder.dims

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self._row = {text: i for i, text in enumerate(texts)}
        self._vectors = vectors
        self._real = BundledEmbedder()
        self.fell_through = 0  # texts the real model had to embed

    def _lookup(self, text: str) -> int | None:
        row = self._row.get(text)
        if row is None and _KEYED.match(text):
            row = self._row.get(text[_KEY_LEN:])
        return row

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        rows = [self._lookup(t) for t in texts]
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        known = [i for i, row in enumerate(rows) if row is not None]
        out[known] = self._vectors[[rows[i] for i in known]]
        missing = [i for i, row in enumerate(rows) if row is None]
        tokens = sum(len(texts[i]) for i in known) // 4
        if missing:
            self.fell_through += len(missing)
            real = await self._real.embed_with_usage([texts[i] for i in missing])
            out[missing] = real.vectors
            tokens += real.tokens
        return EmbedResult(vectors=out.tolist(), tokens=tokens, is_token_estimate=True)


_KEYED = re.compile(r"t\d{6}: ")
_KEY_LEN = len("t000000: ")


def assignment(n: int = N_TEXTS) -> np.ndarray:
    """``owner[i]``: the user (0..USERS-1) holding text ``i``; PER_USER texts each."""
    rng = np.random.default_rng(SEED)
    return rng.permutation(n) // PER_USER


def namespace(user: int) -> str:
    return f"user:u{user:03d}"


def key_of(i: int) -> str:
    return f"t{i:06d}"


def index_of(key: str) -> int:
    return int(key[1:])


async def _fill(path: Path, texts: list[str], vectors: np.ndarray) -> dict:
    owner = assignment(len(texts))
    embedder = CachedEmbedder(texts, vectors)
    timings: dict[str, float] = {}
    async with Abathur.open(
        path, embedder=embedder, embed_worker=False, embed_batch_size=1024
    ) as ab:
        started = time.perf_counter()
        batch = 500
        for start in range(0, len(texts), batch):
            await asyncio.gather(
                *(
                    ab.memory.put(namespace(int(owner[i])), key_of(i), texts[i])
                    for i in range(start, min(start + batch, len(texts)))
                )
            )
        timings["put_s"] = time.perf_counter() - started
        started = time.perf_counter()
        report = await ab.embeddings.drain()
        timings["drain_s"] = time.perf_counter() - started
        status = await ab.embeddings.status()
        assert report.remaining == 0 and status.vectors == len(texts), (report, status)
        assert embedder.fell_through == 0, f"{embedder.fell_through} texts ran the model"
    return {k: round(v, 1) for k, v in timings.items()}


def build_db(*, force: bool = False) -> Path:
    """The filled 100k database (built once; rebuilt when the corpus or vectors change)."""
    texts, vectors = corpus_vectors()
    path = CACHE / DB_NAME
    marker = CACHE / f"{DB_NAME}.json"
    want = {"texts": _digest(texts), "vectors": hashlib.sha256(vectors.tobytes()).hexdigest()}
    if not force and path.exists() and marker.exists():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want:
            return path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    print(f"building {path} (100k memory.put + drain) ...", file=sys.stderr)
    timings = asyncio.run(_fill(path, texts, vectors))
    marker.write_text(json.dumps({**want, **timings}))
    print(f"  built: {timings}", file=sys.stderr)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", action="store_true", help="only print corpus stats")
    parser.add_argument("--force", action="store_true", help="rebuild the database")
    args = parser.parse_args(argv)
    texts = corpus_texts()
    words = [len(t.split()) for t in texts]
    print(f"{len(texts):,} distinct texts, {np.mean(words):.1f} words on average")
    if args.texts:
        return
    query_vectors()
    print(build_db(force=args.force))


if __name__ == "__main__":
    main()

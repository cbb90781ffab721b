"""The shared workload data: SciFact texts as memory values, with precomputed vectors.

The bundled embedder runs once per corpus (cached under ``benchmarks/.cache/``);
during timing both sides "embed" through :class:`LookupEmbedder`, a table
lookup keyed by the marker each text carries (``[d123]`` for documents,
``[q7]`` for queries), so only storage and search are compared.

Values are the abstracts; the vectors are the bundled model's vectors of
their titles (see :class:`Corpus`). SciFact has 5,183 abstracts; larger sizes
replicate them. Copy ``r`` of
document ``j`` gets ``normalize(v_j + 0.01 * noise)`` (a fixed seed per copy),
so every memory has its own vector and recall@10 against exact search is
well defined (identical vectors would make the top 10 a tie).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from abathur.embeddings import EmbedResult

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent.parent / "shared" / "eval" / "scifact"
CACHE = ROOT / ".cache"
DIMS = 384
QUERIES = 200
_MARK = re.compile(r"\[([dq])(\d+)\]")


def _scifact_dir() -> Path:
    for candidate in (SCIFACT, ROOT.parent / "shared" / "eval" / "scifact"):
        if (candidate / "corpus.jsonl").exists():
            return candidate
    raise FileNotFoundError(f"SciFact corpus not found at {SCIFACT}")


def _read(name: str) -> list[dict]:
    with (_scifact_dir() / name).open() as f:
        return [json.loads(line) for line in f]


def base_texts() -> list[str]:
    """SciFact abstracts, ``title. text``."""
    return [f"{d['title']}. {d['text']}".strip() for d in _read("corpus.jsonl")]


def query_texts() -> list[str]:
    return [q["text"] for q in _read("queries.jsonl")[:QUERIES]]


def _embed_cached(name: str, texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"peers-{name}-{digest}.npy"
    if path.exists():
        return np.load(path)
    from abathur.embeddings.bundled import BundledEmbedder

    embedder = BundledEmbedder()

    async def run() -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), 64):
            out.extend(await embedder.embed(texts[i : i + 64]))
        return out

    vectors = np.asarray(asyncio.run(run()), dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


class Corpus:
    """``n`` documents (SciFact replicated) and the query set, with their vectors."""

    def __init__(self, n: int) -> None:
        texts = base_texts()
        # Vectors of the titles: embedding all 5,183 abstracts (256 tokens each)
        # takes over 15 minutes on this shared 2-core machine; titles take
        # seconds and are the same model's vectors of the same documents.
        base = _embed_cached("titles", [d["title"] for d in _read("corpus.jsonl")])
        self.n = n
        self.base_texts = texts
        self.groups = 10
        reps = -(-n // len(texts))
        rows = [base]
        for r in range(1, reps):
            noise = np.random.default_rng(r).standard_normal(base.shape).astype(np.float32)
            v = base + 0.01 * noise
            rows.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        self.vectors = np.concatenate(rows)[:n]
        self.queries = query_texts()
        self.query_vectors = _embed_cached("queries", self.queries)

    def text(self, i: int) -> str:
        return f"[d{i}] {self.base_texts[i % len(self.base_texts)]}"

    def group(self, i: int) -> str:
        return f"g{i % self.groups}"

    def query(self, j: int) -> str:
        return f"[q{j}] {self.queries[j]}"

    def exact_top(self, j: int, k: int = 10, group: str | None = None) -> list[int]:
        scores = self.vectors @ self.query_vectors[j]
        if group is not None:
            mask = np.arange(self.n) % self.groups != int(group[1:])
            scores = np.where(mask, -np.inf, scores)
        return [int(i) for i in np.argsort(-scores)[:k]]

    def lookup(self, text: str) -> np.ndarray:
        m = _MARK.search(text)
        if m is None:
            raise KeyError(f"no [d..]/[q..] marker in {text[:60]!r}")
        kind, i = m.group(1), int(m.group(2))
        return self.vectors[i] if kind == "d" else self.query_vectors[i]


class LookupEmbedder:
    """An abathur embedder answering from the corpus' precomputed vectors."""

    provider = "bench"
    model = "scifact-minilm-lookup"
    name = "bench:scifact-minilm-lookup"
    dims = DIMS

    def __init__(self, corpus: Corpus) -> None:
        self._corpus = corpus

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._corpus.lookup(t).tolist() for t in texts]

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        vectors = await self.embed(texts)
        return EmbedResult(vectors=vectors, tokens=len(texts), is_token_estimate=True)


if __name__ == "__main__":
    c = Corpus(5183)
    print(c.vectors.shape, c.query_vectors.shape)

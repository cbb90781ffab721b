"""The shared workload data: real SciFact texts as memory values, with precomputed vectors.

The texts and vectors are benchmarks/build_corpus.py's: distinct real texts
cut from the 5,183 SciFact abstracts (every sentence, every title, then runs
of consecutive sentences) and the bundled MiniLM's vector of each, embedded
once and cached under ``benchmarks/.cache/``. A corpus of ``n`` <= 100,000
takes the first ``n`` texts (a slice of the 100k cache when it is there,
otherwise just those ``n`` are embedded: ~40 s for 10k). Past 100,000 the
texts repeat: copy ``r`` of text ``j`` gets ``normalize(v_j + 0.01 * noise)``
(a fixed seed per copy), so every memory still has its own vector and
recall@10 against exact search is well defined. The queries are the first 200
SciFact claims, with their vectors.

During timing both sides "embed" through :class:`LookupEmbedder`, a table
lookup keyed by the marker each text carries (``[d123]`` for documents,
``[q7]`` for queries), so only storage and search are compared.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from abathur.embeddings import EmbedResult
from benchmarks import build_corpus

DIMS = 384
QUERIES = 200
_MARK = re.compile(r"\[([dq])(\d+)\]")


# Cache names of the first m texts' vectors (benchmarks/.cache/scifact-first-<m>.npy).
_FIRST = "scifact-first-"


def real_vectors(n: int) -> tuple[list[str], np.ndarray]:
    """The first ``n`` (<= 100,000) corpus texts and their vectors, from the cache.

    Any cached run of the first ``m >= n`` texts serves (the full 100k first),
    so quick mode's 5k and 10k corpora embed once between them.
    """
    texts = build_corpus.corpus_texts(build_corpus.N_TEXTS)
    cached = sorted(
        int(path.stem.rsplit("-", 1)[1])
        for path in build_corpus.CACHE.glob(f"{_FIRST}*.npy")
        if path.stem.rsplit("-", 1)[1].isdigit()
    )
    for m in [len(texts), *(m for m in cached if n <= m < len(texts))]:
        name = "scifact100k" if m == len(texts) else f"{_FIRST}{m}"
        vectors = build_corpus.cached_vectors(texts[:m], name)
        if vectors is not None:
            return texts[:n], vectors[:n]
    if n == len(texts):
        return texts, build_corpus.embed_cached(texts, "scifact100k")
    # Embed a little ahead (10k at least), so the next, larger quick corpus is cached too.
    m = min(len(texts), max(n, 10_000))
    return texts[:n], build_corpus.embed_cached(texts[:m], f"{_FIRST}{m}")[:n]


class Corpus:
    """``n`` documents (SciFact replicated) and the query set, with their vectors."""

    def __init__(self, n: int) -> None:
        texts, base = real_vectors(min(n, build_corpus.N_TEXTS))
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
        claims, claim_vectors = build_corpus.query_vectors()
        self.queries = [text for _, text in claims[:QUERIES]]
        self.query_vectors = claim_vectors[:QUERIES]

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

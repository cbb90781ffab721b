"""Retrieval metrics with the standard (trec_eval / BEIR) definitions.

``qrels`` maps a query id to ``{doc id: relevance}``; a run maps a query id to
doc ids, best first. Only documents with relevance > 0 count as relevant.

* nDCG@k: DCG@k / IDCG@k with DCG@k = sum over ranks i = 1..k of
  rel_i / log2(i + 1) (gain = the graded relevance, as trec_eval's
  ``ndcg_cut`` and BEIR compute it) and IDCG@k the DCG of the ideal ordering
  of the query's judged documents.
* Recall@k: |relevant in the top k| / |relevant|.

Both are averaged over the queries that have at least one relevant document;
a query the run has no answer for scores 0. A doc id repeated in a run counts
at its first rank only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]


def _dedup(ranking: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for doc in ranking:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def dcg(gains: Sequence[float]) -> float:
    """sum of gains[i] / log2(i + 2), i from 0 (rank i + 1)."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """nDCG@k of one query; 0.0 when it has no relevant document."""
    ideal = dcg(sorted((r for r in judged.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    gains = [max(judged.get(doc, 0), 0) for doc in _dedup(ranking)[:k]]
    return dcg(gains) / ideal


def recall_at(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    """Recall@k of one query; 0.0 when it has no relevant document."""
    relevant = {doc for doc, r in judged.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedup(ranking)[:k])) / len(relevant)


def evaluated(qrels: Qrels) -> list[str]:
    """The query ids a mean is taken over: those with a relevant document."""
    return sorted(q for q, judged in qrels.items() if any(r > 0 for r in judged.values()))


def mean_ndcg(qrels: Qrels, run: Run, k: int = 10) -> float:
    queries = evaluated(qrels)
    return sum(ndcg_at(qrels[q], run.get(q, ()), k) for q in queries) / len(queries)


def mean_recall(qrels: Qrels, run: Run, k: int = 100) -> float:
    queries = evaluated(qrels)
    return sum(recall_at(qrels[q], run.get(q, ()), k) for q in queries) / len(queries)

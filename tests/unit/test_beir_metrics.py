"""The BEIR harness's nDCG@k and Recall@k (benchmarks/metrics.py) on a hand-computed example.

qrels: q1 judges a (1), b (2), c (0); q2 judges x (1); q3 judges y (0), so q3 has no
relevant document and is left out of every mean. Run: q1 -> c, b, d, a; q2 -> nothing.

By hand, with DCG = sum rel_i / log2(i + 1):
  q1 ideal DCG = 2/log2(2) + 1/log2(3) = 2 + 0.630930 = 2.630930
  q1 DCG@3 = 0 + 2/log2(3) + 0 = 1.261860            -> nDCG@3 = 0.479625
  q1 DCG@4 = 1.261860 + 1/log2(5) = 1.692536         -> nDCG@4 = 0.643322
  q1 Recall@3 = |{b}| / |{a, b}| = 0.5, Recall@4 = 1.0
  q2 scores 0 everywhere (no answer), so the means are halves of q1's.
"""

from __future__ import annotations

import math

import pytest
from benchmarks.metrics import evaluated, mean_ndcg, mean_recall, ndcg_at, recall_at

QRELS = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"x": 1}, "q3": {"y": 0}}
RUN = {"q1": ["c", "b", "d", "a"], "q2": []}


def test_ndcg_of_one_query_matches_the_hand_computation() -> None:
    ideal = 2 + 1 / math.log2(3)
    assert ndcg_at(QRELS["q1"], RUN["q1"], 3) == pytest.approx((2 / math.log2(3)) / ideal)
    assert ndcg_at(QRELS["q1"], RUN["q1"], 3) == pytest.approx(0.479625, abs=1e-6)
    assert ndcg_at(QRELS["q1"], RUN["q1"], 4) == pytest.approx(0.643322, abs=1e-6)
    # The ideal ranking scores 1; a ranking without a relevant document scores 0.
    assert ndcg_at(QRELS["q1"], ["b", "a"], 10) == pytest.approx(1.0)
    assert ndcg_at(QRELS["q1"], ["a", "b"], 10) < 1.0
    assert ndcg_at(QRELS["q1"], ["c", "d"], 10) == 0.0


def test_recall_of_one_query_matches_the_hand_computation() -> None:
    assert recall_at(QRELS["q1"], RUN["q1"], 1) == 0.0
    assert recall_at(QRELS["q1"], RUN["q1"], 3) == 0.5
    assert recall_at(QRELS["q1"], RUN["q1"], 4) == 1.0


def test_means_skip_queries_without_relevant_documents_and_count_missing_runs_as_zero() -> None:
    assert evaluated(QRELS) == ["q1", "q2"]
    assert mean_ndcg(QRELS, RUN, k=3) == pytest.approx(0.479625 / 2, abs=1e-6)
    assert mean_recall(QRELS, RUN, k=3) == 0.25
    assert mean_recall(QRELS, RUN, k=4) == 0.5
    # A query absent from the run altogether scores 0 too.
    assert mean_recall(QRELS, {"q1": RUN["q1"]}, k=4) == 0.5


def test_a_repeated_doc_counts_once_at_its_first_rank() -> None:
    # [b, b, a] is [b, a]: the ideal order, so nDCG@2 is 1 and not inflated past it.
    assert ndcg_at(QRELS["q1"], ["b", "b", "a"], 2) == pytest.approx(1.0)
    assert recall_at(QRELS["q1"], ["b", "b", "b"], 3) == 0.5

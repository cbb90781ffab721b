"""The relevance-floor harness (benchmarks/relevance_floor.py) measures what it says:
its metrics on hand-written prompts (the LoCoMo data never enters the tests), its
reproduction of memory.context against context itself, and its doctests."""

from __future__ import annotations

import doctest

from benchmarks import relevance_floor
from benchmarks.relevance_floor import Prompt, measure, pack

from tests.backends import BackendHandle


def test_the_harness_doctests_pass() -> None:
    result = doctest.testmod(relevance_floor, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_measure_counts_noise_only_on_prompts_with_nothing_in_scope() -> None:
    prompts = [
        Prompt("c1", "q1", frozenset({"a", "b"}), 1),
        Prompt("c1", "q2", frozenset({"c"}), 4),
        Prompt("c2", "q1", frozenset(), 0),
        Prompt("c2", "q2", frozenset(), 0),
    ]
    got = measure(prompts, [["a", "x", "y"], [], ["z", "w"], []])
    assert got["precision"] == round(1 / 5, 4)
    assert got["recall"] == round((0.5 + 0.0) / 2, 4)
    assert got["empty_answerable"] == 0.5
    assert got["noise_rate"] == 0.5 and got["noise_per_prompt"] == 1.0


async def test_pack_is_what_context_returns(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        for n in range(12):
            await ab.memory.put("user:bob", f"k{n}", f"Bob likes tea number {n} " + "x" * n * 3)
        hits = list(await ab.memory.search("bob tea number", prefix="user:bob", k=50))
        for floor in (0.3, 0.7, 0.9):
            for budget in (20, 60, 1000):
                ctx = await ab.memory.context(
                    "user:bob", "bob tea number", budget, k=50, min_score=floor
                )
                assert [m.key for m in ctx] == pack(hits, floor, budget)

"""Result containers iterate over their items, have len() and indexing (issue 12).

Before this, ``for hit in await ab.memory.search(...)`` iterated pydantic's
``(field, value)`` pairs without a word. Every public result that holds items
is covered here: SearchResult, DocumentSearchResult, MemoryContext and
ConsolidationReport. Their fields and JSON dumps stay as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abathur import (
    Abathur,
    ConsolidationReport,
    DocumentSearchResult,
    MemoryContext,
    SearchResult,
)
from tests.backends import BackendHandle


@pytest.fixture
async def keyword_ab(backend: BackendHandle):
    async with backend.open(embedder="none") as opened:
        yield opened


async def test_search_result_iterates_over_its_hits(keyword_ab: Abathur) -> None:
    ab = keyword_ab
    await ab.memory.put("user:alice", "lang", "Alice speaks French")
    await ab.memory.put("user:alice", "drink", "Alice drinks French press coffee")
    result = await ab.memory.search("french", prefix="user:alice", mode="keyword")
    assert isinstance(result, SearchResult)
    assert len(result) == 2
    assert [hit.key for hit in result] == [hit.key for hit in result.hits]
    assert result[0] == result.hits[0]
    assert result[-1].key == result.hits[-1].key
    assert [h.key for h in result[:1]] == [result.hits[0].key]
    assert list(result) == result.hits
    # The JSON dump is the same object as before: the fields, not a list.
    dumped = json.loads(result.model_dump_json())
    assert set(dumped) == {
        "query", "mode", "requested_mode", "is_degraded", "degraded_reason", "pending", "hits",
    }
    assert [h["key"] for h in dumped["hits"]] == [h.key for h in result]


async def test_an_empty_result_is_empty_and_falsy(keyword_ab: Abathur) -> None:
    result = await keyword_ab.memory.search("nothing", prefix="user:nobody", mode="keyword")
    assert len(result) == 0
    assert list(result) == []
    assert not result
    with pytest.raises(IndexError):
        result[0]


async def test_memory_context_iterates_over_its_memories(keyword_ab: Abathur) -> None:
    ab = keyword_ab
    await ab.memory.put("user:alice", "lang", "Alice speaks French")
    ctx = await ab.memory.context("user:alice", "french", max_tokens=100)
    assert isinstance(ctx, MemoryContext)
    assert len(ctx) == 1
    assert [m.key for m in ctx] == ["lang"]
    assert ctx[0].key == "lang"
    assert "memories" in json.loads(ctx.model_dump_json())


async def test_consolidation_report_iterates_over_its_actions(keyword_ab: Abathur) -> None:
    ab = keyword_ab
    await ab.memory.put("user:alice", "a", "Alice speaks French")
    await ab.memory.put("user:alice", "b", "Alice speaks French")
    report = await ab.memory.consolidate("user:alice", dry_run=True)
    assert isinstance(report, ConsolidationReport)
    assert len(report) == len(report.actions) == 1
    assert [a.reason for a in report] == ["duplicate"]
    assert report[0] == report.actions[0]


async def test_document_search_result_iterates_over_its_hits(
    backend: BackendHandle, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "restore.md").write_text("# Restore\n\nVerify the copy, then swap the file.\n")
    (docs / "tea.md").write_text("# Tea\n\nSteep green tea, then swap the cup.\n")
    async with backend.open(embedder="none") as ab:
        await ab.documents.sync(docs)
        result = await ab.documents.search("swap", k=5, mode="keyword")
    assert isinstance(result, DocumentSearchResult)
    assert len(result) == 2
    assert sorted(hit.path for hit in result) == ["restore.md", "tea.md"]
    assert result[0] == result.hits[0]
    assert "hits" in json.loads(result.model_dump_json())

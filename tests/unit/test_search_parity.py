"""Keyword, vector and hybrid search rank as SQLite ranks, on every backend (issue 14).

Each test writes one small fixed corpus through the public API on the
backend under test and on a SQLite file beside it (the reference), then
asks the same queries of both: the same keys (paths) in the same order.
On the sqlite backend this compares SQLite with itself; on postgres it is
the parity the PostgreSQL backend promises (BM25 as FTS5's bm25(), the
same tokenizer; exact cosine rescoring; the same RRF).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from abathur import Abathur
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder

MEMORIES = [
    ("user:al", "tea_pref", "green tea is my favourite drink"),
    ("user:al", "coffee", "I drink coffee every morning, never tea"),
    ("user:al", "ceremony", "tea tea tea: the tea ceremony takes hours and hours of practice"),
    ("user:al", "shoes", "running shoes for the marathon"),
    ("user:al", "daily", "he runs daily and enjoys running in the rain"),
    ("user:al", "fox", "the quick brown fox jumps over the lazy dog"),
    ("user:al", "dessert", "Crème brûlée recipe with vanilla and sugar"),
    ("user:al", "party", "e-mail the team about the tea party on friday"),
    ("user:al:work", "meeting", "Drinks after the meeting: tea or coffee? Tea, always."),
    ("user:al:work", "backup", "restore the nightly database backup before the meeting"),
    ("user:alice", "tea", "alice drinks tea too"),
    ("user:bob", "tea", "bob never drinks tea, only coffee"),
]

QUERIES = [
    "tea",
    "drink tea",
    "Running",
    "creme brulee",
    "e-mail party",
    "the",
    "coffee morning rain",
    "meeting tea",
    "database backup restore",
    "absent words",
]

DOCUMENTS = {
    "runbooks/backup.md": "# Backup restore\n\nSteps to restore a database backup.\n",
    "runbooks/disk.md": "# Disk full\n\nWhen the disk is full the database stops. Restore space.\n",
    "notes/tea.md": "# Tea\n\nGreen tea and the tea ceremony. Restore calm with tea.\n",
    "notes/e-mail.md": "# E-mail\n\nE-mail the operators about the backup.\n",
    "notes/running.md": "# Running\n\nHe runs daily; running shoes.\n",
}

DOC_QUERIES = ["restore", "backup database", "tea", "e-mail", "runs", "disk full database"]


async def _memory_rankings(ab: Abathur, prefixes: Sequence[str], mode: str) -> list[list[str]]:
    for namespace, key, text in MEMORIES:
        await ab.memory.put(namespace, key, text)
    await ab.embeddings.drain()
    out = []
    for prefix in prefixes:
        for query in QUERIES:
            result = await ab.memory.search(query, prefix=prefix, k=20, mode=mode)
            out.append([f"{hit.namespace}/{hit.key}" for hit in result.hits])
    return out


async def _document_rankings(ab: Abathur, root: Path, mode: str) -> list[list[str]]:
    await ab.documents.sync(root, patterns=["**/*.md"])
    await ab.embeddings.drain()
    out = []
    for query in DOC_QUERIES:
        result = await ab.documents.search(query, k=20, mode=mode)
        out.append([hit.path for hit in result.hits])
    return out


def _write_documents(root: Path) -> None:
    for rel, text in DOCUMENTS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
async def test_memory_search_ranks_as_sqlite(
    backend: BackendHandle, tmp_path: Path, mode: str
) -> None:
    prefixes = ["user:al", "user", "user:al:work"]
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        got = await _memory_rankings(ab, prefixes, mode)
    async with Abathur.open(
        tmp_path / "reference.db", embedder=WordHashEmbedder(), embed_worker=False
    ) as ref:
        want = await _memory_rankings(ref, prefixes, mode)
    cases = [(p, q) for p in prefixes for q in QUERIES]
    for case, g, w in zip(cases, got, want, strict=True):
        assert g == w, case
    if mode == "keyword":
        by_case = dict(zip(cases, got, strict=True))
        # Not vacuous: stemming, accents and the segment-aware prefix at work.
        assert by_case[("user:al", "Running")] == ["user:al/daily", "user:al/shoes"]
        assert by_case[("user:al", "creme brulee")] == ["user:al/dessert"]
        assert "user:alice/tea" not in by_case[("user:al", "tea")]
        assert by_case[("user:al", "absent words")] == []


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
async def test_document_search_ranks_as_sqlite(
    backend: BackendHandle, tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "docs"
    _write_documents(root)
    async with backend.open(embedder=WordHashEmbedder(), embed_worker=False) as ab:
        got = await _document_rankings(ab, root, mode)
    async with Abathur.open(
        tmp_path / "reference.db", embedder=WordHashEmbedder(), embed_worker=False
    ) as ref:
        want = await _document_rankings(ref, root, mode)
    for query, g, w in zip(DOC_QUERIES, got, want, strict=True):
        assert g == w, query
    if mode == "keyword":
        by_query: dict[str, Any] = dict(zip(DOC_QUERIES, got, strict=True))
        # The heading counts twice (FTS5's bm25 weights 2.0, 1.0).
        assert by_query["restore"][0] == "runbooks/backup.md"
        assert by_query["runs"][0] == "notes/running.md"

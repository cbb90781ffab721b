"""benchmarks/sync_files.py, the cold/warm sync benchmark, on 20 files: it runs and
its figures add up (every file added, every chunk embedded, warm syncs change nothing,
one edit re-embeds only what changed)."""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.sync_files import document, generate, measure


def test_documents_are_seeded_markdown_of_one_to_three_kilobytes(tmp_path: Path) -> None:
    size = generate(tmp_path, 30)
    again = generate(tmp_path / "again", 30)
    assert size == again, "the same seed writes the same tree"
    files = sorted(tmp_path.glob("d0/*.md"))
    assert len(files) == 30
    for path in files:
        text = path.read_text()
        assert text.startswith("# Document ") and 1000 <= len(text) <= 3200
    assert document(random.Random(1), 5) != document(random.Random(2), 5)


async def test_the_benchmark_reports_cold_warm_and_one_edit(tmp_path: Path) -> None:
    out = await measure(tmp_path / "bench", 20)
    cold = out["cold"]
    assert out["files"] == 20 and cold["chunks"] > 20
    assert cold["embedded"] == cold["chunks"], "every chunk embedded once, no cache hits"
    assert 0 < cold["tokens_max"] <= 256, "every chunk fits the bundled model's window"
    assert len(out["warm_s"]) == 2
    edit = out["one_edit"]
    assert edit["embedded"] >= 1 and edit["embedded"] < cold["chunks"]

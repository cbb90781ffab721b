"""Helpers of the archival tests (tests/unit/test_archival.py, test_archive_integrity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abathur.api import Abathur
from tests.backends import BackendHandle

#: Every policy at age 0: a run archives everything it may.
NOW_POLICIES: list[dict[str, Any]] = [
    {"kind": "sessions", "after_days": 0},
    {"kind": "memories", "after_days": 0},
    {"kind": "versions", "keep_versions": 2, "after_days": 0},
    {"kind": "tombstones", "after_days": 0},
]


def opener(
    where: BackendHandle | Path, policies: list[dict[str, Any]] | None = None, **kw: Any
) -> Any:
    """Open ``where`` (a test's backend, or a SQLite file for a sqlite_only test) to archive.

    No embedding worker, no pause between batches, ``NOW_POLICIES`` unless
    ``policies`` are given; use as ``async with``.
    """
    kw.setdefault("embedder", "none")
    kw.setdefault("archive_pause_ms", 0)
    kw["embed_worker"] = False
    kw["archive_policies"] = NOW_POLICIES if policies is None else policies
    if isinstance(where, BackendHandle):
        return where.open(**kw)
    return Abathur.open(where, **kw)

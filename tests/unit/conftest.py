"""Fixtures the unit tests of backups share (test_backup, test_backup_auth,
test_hostile_files): a populated database and a verified backup of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from abathur.ops.backup import Backup, create_backup
from tests.helpers import populate


@pytest.fixture
async def live(tmp_path: Path) -> Path:
    """A database with sessions, events, state, a task and memories."""
    path = tmp_path / "db" / "agent.db"
    path.parent.mkdir()
    await populate(path)
    return path


@pytest.fixture
def made(live: Path) -> Backup:
    return create_backup(live, dest=live.parent.parent / "backups")

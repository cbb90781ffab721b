"""What every SQLite store of one open database shares: the file and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from abathur.config import Settings

__all__ = ["SqliteContext"]


@dataclass(frozen=True)
class SqliteContext:
    """The file the connection belongs to and the settings it was opened with.

    Stores that keep per-file state outside SQLite (the numpy mirror of the
    vector chunks) key it by ``path``.
    """

    path: Path
    settings: Settings

"""What every PostgreSQL store of one open database shares: its URL and settings."""

from __future__ import annotations

from dataclasses import dataclass

from abathur.config import Settings

__all__ = ["PgContext"]


@dataclass(frozen=True)
class PgContext:
    """The server URL the connection belongs to and the settings it was opened with."""

    url: str
    settings: Settings

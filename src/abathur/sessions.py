"""SessionService (being written)."""

from __future__ import annotations

from abathur.db import Database


class SessionService:
    """Placeholder until the service lands."""

    def __init__(self, db: Database) -> None:
        self._db = db

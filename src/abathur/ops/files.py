"""The database file as the command line sees it, before opening an :class:`~abathur.api.Abathur`.

Whether a path can hold a database, whether one can be read there, and which
migrations it lacks, all read without creating or changing anything. The CLI
reaches the backend only through this module and :mod:`abathur.api`.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur.ops.files import check_db_path, plan_migrations
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "new.db"
    >>> check_db_path(path) == path
    True
    >>> plan = asyncio.run(plan_migrations(path))
    >>> plan.exists, plan.current, plan.is_current, path.exists()
    (False, 0, False, False)
"""

from __future__ import annotations

from pathlib import Path

from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.database import Database, MigrationPlan, check_db_path
from abathur.backends.sqlite.migrations import Migration
from abathur.backends.sqlite.probes import SqliteOpsKit
from abathur.errors import AbathurError
from abathur.stores.ops import OpsKit

__all__ = [
    "Migration",
    "MigrationPlan",
    "available_migrations",
    "check_db_path",
    "database_problem",
    "ops_kit",
    "plan_migrations",
]


async def plan_migrations(path: str | Path) -> MigrationPlan:
    """Read the schema version of ``path`` and list the migrations it lacks; creates nothing.

    Raises:
        InvalidInputError: ``path`` is a directory.
        SchemaError: the file is newer than this abathur.
        DatabaseError: the file exists but is not a readable database.
    """
    return await Database.plan_migrations(path)


def available_migrations() -> list[Migration]:
    """Every migration shipped with this abathur, in order."""
    return migrations.available()


def ops_kit(path: Path) -> OpsKit:
    """The backend machinery of the operations kit for the storage at ``path`` (a SQLite file)."""
    # Imported on use: the vec0 statements come from abathur.search (numpy).
    from abathur.ops.schema import VECTOR_TABLES

    return SqliteOpsKit(VECTOR_TABLES)


def database_problem(path: Path) -> AbathurError | None:
    """Why no database can be read at ``path``, or None when one can. Creates nothing."""
    try:
        ops_kit(path).check_readable(path)
    except AbathurError as exc:
        return exc
    return None

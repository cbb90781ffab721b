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
from typing import TYPE_CHECKING, cast

from abathur.backends.sqlite import migrations
from abathur.backends.sqlite.database import Database, MigrationPlan, check_db_path
from abathur.backends.sqlite.migrations import Migration
from abathur.backends.sqlite.probes import SqliteOpsKit
from abathur.config import PostgresUrl, Settings
from abathur.errors import AbathurError
from abathur.stores.ops import OpsKit

if TYPE_CHECKING:
    from abathur.backends.postgres.ops import PgOpsKit

#: What ``--db`` names: a SQLite file, or a PostgreSQL server's database.
Target = Path | PostgresUrl

__all__ = [
    "Migration",
    "MigrationPlan",
    "Target",
    "available_migrations",
    "check_db_path",
    "database_problem",
    "is_server",
    "ops_kit",
    "plan_migrations",
    "server_kit",
]


def is_server(db: object) -> bool:
    """True when ``db`` names a PostgreSQL database (a :class:`~abathur.config.PostgresUrl`)."""
    return isinstance(db, PostgresUrl)


def server_kit() -> PgOpsKit:
    """The PostgreSQL machinery of the operations kit (needs the ``postgres`` extra)."""
    # Imported on use: psycopg is an optional extra.
    from abathur.backends.postgres.ops import PgOpsKit

    return PgOpsKit()


async def plan_migrations(path: str | Path | PostgresUrl) -> MigrationPlan:
    """Read the schema version of ``path`` and list the migrations it lacks; creates nothing.

    On a PostgreSQL server the plan lists the server migrations; ``exists``
    is whether the database has abathur's schema yet.

    Raises:
        InvalidInputError: ``path`` is a directory.
        SchemaError: the file is newer than this abathur.
        DatabaseError: the file exists but is not a readable database.
    """
    if isinstance(path, PostgresUrl):
        import asyncio

        from abathur.backends.postgres.ops import plan_server_migrations

        exists, current, latest, pending = await asyncio.to_thread(
            plan_server_migrations, path, Settings()
        )
        # The plan's path is the URL here (shown redacted): a server has no file.
        return MigrationPlan(
            cast(Path, path),
            exists,
            current,
            latest,
            tuple(Migration(m.version, m.name, m.sql) for m in pending),
        )
    return await Database.plan_migrations(path)


def available_migrations() -> list[Migration]:
    """Every migration shipped with this abathur, in order."""
    return migrations.available()


def ops_kit(path: Path) -> OpsKit:
    """The backend machinery of the operations kit for the storage at ``path`` (a SQLite file)."""
    # Imported on use: the vec0 statements come from abathur.search (numpy).
    from abathur.ops.schema import VECTOR_TABLES

    return SqliteOpsKit(VECTOR_TABLES)


def database_problem(path: Target, settings: Settings | None = None) -> AbathurError | None:
    """Why no database can be read at ``path``, or None when one can. Creates nothing."""
    try:
        if isinstance(path, PostgresUrl):
            server_kit().check_readable(path, settings or Settings())
        else:
            ops_kit(path).check_readable(path)
    except AbathurError as exc:
        return exc
    return None

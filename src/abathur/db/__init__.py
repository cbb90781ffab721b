"""The database layer: connections, transactions and migrations. Imports no service."""

from abathur.db.connection import Versions, check_environment
from abathur.db.database import Database

__all__ = ["Database", "Versions", "check_environment"]

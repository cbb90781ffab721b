"""The database layer: connections, transactions and migrations. Imports no service."""

from abathur.backends.sqlite.connection import Versions, check_environment
from abathur.backends.sqlite.database import Database

__all__ = ["Database", "Versions", "check_environment"]

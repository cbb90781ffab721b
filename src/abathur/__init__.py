"""abathur: durable memory for AI agents in one SQLite file.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     async with Abathur.open(pathlib.Path(tempfile.mkdtemp()) / "agent.db") as ab:
    ...         await ab.memory.put("user:alice", "lang", {"value": "fr"}, type="semantic")
    ...         return (await ab.memory.get("user:alice", "lang")).version
    >>> asyncio.run(demo())
    1
"""

from abathur import errors
from abathur.api import Abathur
from abathur.config import Settings
from abathur.errors import (
    AbathurError,
    AlreadyExistsError,
    ClosedError,
    ConflictError,
    DatabaseBusyError,
    DatabaseError,
    EmbedderError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
    IncompatibleEnvironmentError,
    InvalidIdError,
    InvalidInputError,
    InvalidMemoryTypeError,
    InvalidNamespaceError,
    InvalidTransitionError,
    MemoryNotFoundError,
    NotFoundError,
    SchemaError,
    SessionNotFoundError,
    StaleSessionError,
    TaskNotFoundError,
    ValueNotSerializableError,
    ValueTooLargeError,
    VersionConflictError,
)
from abathur.models import (
    AuditRecord,
    AuditReport,
    ConsolidationAction,
    ConsolidationReport,
    Event,
    Memory,
    MemoryRef,
    Session,
    Task,
)

__version__ = "0.1.0"

__all__ = [
    "Abathur",
    "AbathurError",
    "AlreadyExistsError",
    "AuditRecord",
    "AuditReport",
    "ClosedError",
    "ConflictError",
    "ConsolidationAction",
    "ConsolidationReport",
    "DatabaseBusyError",
    "DatabaseError",
    "EmbedderError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "Event",
    "IncompatibleEnvironmentError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidMemoryTypeError",
    "InvalidNamespaceError",
    "InvalidTransitionError",
    "Memory",
    "MemoryNotFoundError",
    "MemoryRef",
    "NotFoundError",
    "SchemaError",
    "Session",
    "SessionNotFoundError",
    "Settings",
    "StaleSessionError",
    "Task",
    "TaskNotFoundError",
    "ValueNotSerializableError",
    "ValueTooLargeError",
    "VersionConflictError",
    "errors",
]

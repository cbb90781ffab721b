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
    CorruptBackupError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseInUseError,
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
    CompactReport,
    ConsolidationAction,
    ConsolidationReport,
    DrainReport,
    EmbeddingStatus,
    Event,
    Memory,
    MemoryRef,
    SearchHit,
    SearchResult,
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
    "CompactReport",
    "ConflictError",
    "ConsolidationAction",
    "ConsolidationReport",
    "CorruptBackupError",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseInUseError",
    "DrainReport",
    "EmbedderError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "EmbeddingStatus",
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
    "SearchHit",
    "SearchResult",
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

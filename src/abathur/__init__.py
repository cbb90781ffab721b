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

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

# Before any abathur module logs (through structlog): a library stays quiet
# (abathur.logs: records go to logging's "abathur" logger, with a NullHandler).
from abathur import logs as _logs

_logs.install_library_defaults()

# `import abathur` stays light: the CLI's --version and --help need nothing
# more, and the API pulls in pydantic, numpy, sqlite-vec... Each public name is
# imported on first use (PEP 562 __getattr__ below), from one of _SOURCES.
if _TYPE_CHECKING:
    from abathur import errors
    from abathur.api import Abathur
    from abathur.config import Settings
    from abathur.errors import (
        AbathurError,
        AlreadyExistsError,
        ArchiveNotFoundError,
        BackupKeyError,
        BackupSpaceError,
        BudgetExceededError,
        ClosedError,
        ConflictError,
        CorruptArchiveError,
        CorruptBackupError,
        DatabaseBusyError,
        DatabaseError,
        DatabaseInUseError,
        EmbedderError,
        EmbedderMismatchError,
        EmbedderUnavailableError,
        ImportConflictError,
        IncompatibleEnvironmentError,
        InvalidIdError,
        InvalidImportError,
        InvalidInputError,
        InvalidMemoryTypeError,
        InvalidNamespaceError,
        InvalidTransitionError,
        MemoryNotFoundError,
        NotFoundError,
        PermissionDeniedError,
        PoolExhaustedError,
        SchemaError,
        SessionNotFoundError,
        StaleSessionError,
        TaskNotFoundError,
        ValueNotSerializableError,
        ValueTooLargeError,
        VersionConflictError,
    )
    from abathur.models import (
        ArchivedItem,
        ArchiveEntry,
        ArchivePolicyResult,
        ArchiveRestoreReport,
        ArchiveRunReport,
        AuditRecord,
        AuditReport,
        BudgetStatus,
        CallStats,
        CompactReport,
        ConsolidationAction,
        ConsolidationReport,
        CostAdvice,
        CostLine,
        CostReport,
        DocumentHit,
        DocumentSearchResult,
        DrainReport,
        EmbeddingStatus,
        Event,
        ExportReport,
        GrowthSeries,
        ImportReport,
        Memory,
        MemoryContext,
        MemoryRef,
        NamedCount,
        PurgeReport,
        SearchHit,
        SearchResult,
        Session,
        Stats,
        SyncFailure,
        SyncReport,
        Task,
        TransferCounts,
    )

__version__ = "0.1.0"

__all__ = [
    "Abathur",
    "AbathurError",
    "AlreadyExistsError",
    "ArchiveEntry",
    "ArchiveNotFoundError",
    "ArchivePolicyResult",
    "ArchiveRestoreReport",
    "ArchiveRunReport",
    "ArchivedItem",
    "AuditRecord",
    "AuditReport",
    "BackupKeyError",
    "BackupSpaceError",
    "BudgetExceededError",
    "BudgetStatus",
    "CallStats",
    "ClosedError",
    "CompactReport",
    "ConflictError",
    "ConsolidationAction",
    "ConsolidationReport",
    "CorruptArchiveError",
    "CorruptBackupError",
    "CostAdvice",
    "CostLine",
    "CostReport",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseInUseError",
    "DocumentHit",
    "DocumentSearchResult",
    "DrainReport",
    "EmbedderError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "EmbeddingStatus",
    "Event",
    "ExportReport",
    "GrowthSeries",
    "ImportConflictError",
    "ImportReport",
    "IncompatibleEnvironmentError",
    "InvalidIdError",
    "InvalidImportError",
    "InvalidInputError",
    "InvalidMemoryTypeError",
    "InvalidNamespaceError",
    "InvalidTransitionError",
    "Memory",
    "MemoryContext",
    "MemoryNotFoundError",
    "MemoryRef",
    "NamedCount",
    "NotFoundError",
    "PermissionDeniedError",
    "PoolExhaustedError",
    "PurgeReport",
    "SchemaError",
    "SearchHit",
    "SearchResult",
    "Session",
    "SessionNotFoundError",
    "Settings",
    "StaleSessionError",
    "Stats",
    "SyncFailure",
    "SyncReport",
    "Task",
    "TaskNotFoundError",
    "TransferCounts",
    "ValueNotSerializableError",
    "ValueTooLargeError",
    "VersionConflictError",
    "errors",
]

# Where the public names live; a name added to __all__ must come from one of these
# (tests/unit/test_quiet.py checks the TYPE_CHECKING imports above against it).
_SOURCES = ("abathur.errors", "abathur.models", "abathur.config", "abathur.api")


def __getattr__(name: str) -> object:
    """Import a public name on first use (PEP 562) and keep it."""
    if name in __all__:
        for source in _SOURCES:
            module = _importlib.import_module(source)
            if name in globals():  # a submodule (``errors``) is set here by its import
                return globals()[name]
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'abathur' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The one exception tree of abathur.

Every error raised by a public call is an :class:`AbathurError` with a stable
``code`` (safe to match on, log and alert on) and a ``retryable`` flag (true
when the same call may succeed if simply tried again). Where a builtin fits,
the class also derives from it, so ``except ValueError`` or
``except LookupError`` keep working::

    AbathurError                                  abathur.error
    ├── InvalidInputError (ValueError)            invalid_input
    │   ├── InvalidIdError                        invalid_id
    │   ├── InvalidNamespaceError                 memory.invalid_namespace
    │   ├── InvalidMemoryTypeError                memory.invalid_type
    │   ├── ValueNotSerializableError             invalid_json
    │   ├── ValueTooLargeError                    value_too_large
    │   └── InvalidImportError                    import.invalid_line
    ├── NotFoundError (LookupError)               not_found
    │   ├── SessionNotFoundError                  session.not_found
    │   ├── MemoryNotFoundError                   memory.not_found
    │   ├── TaskNotFoundError                     task.not_found
    │   └── ArchiveNotFoundError                  archive.not_found
    ├── AlreadyExistsError                        already_exists
    │   └── ImportConflictError                   import.conflict
    ├── ConflictError                             conflict (retryable)
    │   ├── StaleSessionError                     session.stale (retryable)
    │   └── VersionConflictError                  memory.version_conflict (retryable)
    ├── InvalidTransitionError (ValueError)       invalid_transition
    ├── ClosedError (RuntimeError)                closed
    ├── EmbedderError                             embedder.error
    │   ├── EmbedderUnavailableError              embedder.unavailable (retryable)
    │   └── EmbedderMismatchError                 embedder.mismatch
    ├── CorruptBackupError                        backup.corrupt
    ├── CorruptArchiveError                       archive.corrupt
    ├── BackupKeyError (ValueError)               backup.key
    ├── BudgetExceededError                       budget.exceeded
    ├── PermissionDeniedError                     permission_denied
    └── DatabaseError                             db.error
        ├── DatabaseBusyError                     db.busy (retryable)
        │   └── PoolExhaustedError                db.pool_exhausted (retryable)
        ├── DatabaseInUseError                    db.in_use
        ├── SchemaError                           db.schema
        ├── IncompatibleEnvironmentError          db.incompatible_environment
        └── BackupSpaceError                      backup.no_space

Driver errors (apsw, psycopg) never reach a caller: ``abathur.backends.sqlite`` and
``abathur.backends.postgres`` translate them into :class:`DatabaseError` subclasses.
"""

from __future__ import annotations

__all__ = [
    "AbathurError",
    "AlreadyExistsError",
    "ArchiveNotFoundError",
    "BackupKeyError",
    "BackupSpaceError",
    "BudgetExceededError",
    "ClosedError",
    "ConflictError",
    "CorruptArchiveError",
    "CorruptBackupError",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseInUseError",
    "EmbedderError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "ImportConflictError",
    "IncompatibleEnvironmentError",
    "InvalidIdError",
    "InvalidImportError",
    "InvalidInputError",
    "InvalidMemoryTypeError",
    "InvalidNamespaceError",
    "InvalidTransitionError",
    "MemoryNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "PoolExhaustedError",
    "SchemaError",
    "SessionNotFoundError",
    "StaleSessionError",
    "TaskNotFoundError",
    "ValueNotSerializableError",
    "ValueTooLargeError",
    "VersionConflictError",
]


class AbathurError(Exception):
    """Base of every error abathur raises on purpose."""

    code: str = "abathur.error"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class InvalidInputError(AbathurError, ValueError):
    """An argument of a public call failed validation; nothing was written."""

    code = "invalid_input"


class InvalidIdError(InvalidInputError):
    """An id, app, user or key is blank, padded, too long, or has control characters."""

    code = "invalid_id"


class InvalidNamespaceError(InvalidInputError):
    """A namespace is empty, has an empty or padded segment, or is too long."""

    code = "memory.invalid_namespace"


class InvalidMemoryTypeError(InvalidInputError):
    """A memory type is not one of ``semantic``, ``episodic``, ``procedural``."""

    code = "memory.invalid_type"


class ValueNotSerializableError(InvalidInputError):
    """A value, state or metadata cannot be stored as JSON (sets, bytes, NaN, objects...)."""

    code = "invalid_json"


class ValueTooLargeError(InvalidInputError):
    """A serialised value is larger than ``Settings.max_value_bytes``."""

    code = "value_too_large"


class NotFoundError(AbathurError, LookupError):
    """The thing named does not exist (or is no longer live)."""

    code = "not_found"


class SessionNotFoundError(NotFoundError):
    """No session has this id."""

    code = "session.not_found"


class MemoryNotFoundError(NotFoundError):
    """No memory exists at this (namespace, key)."""

    code = "memory.not_found"


class TaskNotFoundError(NotFoundError):
    """No task has this id."""

    code = "task.not_found"


class ArchiveNotFoundError(NotFoundError):
    """No archive entry has this id (never archived, or restored already)."""

    code = "archive.not_found"


class AlreadyExistsError(AbathurError):
    """A create call used an id that is already taken."""

    code = "already_exists"


class ConflictError(AbathurError):
    """Someone else wrote first; re-read and try again."""

    code = "conflict"
    retryable = True


class StaleSessionError(ConflictError):
    """``expected_revision`` no longer matches the session's revision."""

    code = "session.stale"

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"session {session_id!r} is at revision {actual}, not the expected {expected}: "
            "re-read the session and append again"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class VersionConflictError(ConflictError):
    """``expected_version`` no longer matches the memory's current version."""

    code = "memory.version_conflict"

    def __init__(self, namespace: str, key: str, expected: int, actual: int | None) -> None:
        now = "does not exist" if actual is None else f"is at version {actual}"
        super().__init__(
            f"memory {namespace!r}/{key!r} {now}, not the expected version {expected}: "
            "re-read it and write again"
        )
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.actual = actual


class InvalidTransitionError(AbathurError, ValueError):
    """A lifecycle change the state machine does not allow.

    For example a terminated session made active again, or a finished task restarted.
    """

    code = "invalid_transition"


class ClosedError(AbathurError, RuntimeError):
    """The database (or service) was used after ``close()``."""

    code = "closed"


class EmbedderError(AbathurError):
    """An embedder failed in a way retrying will not fix (bad model, bad response)."""

    code = "embedder.error"


class EmbedderUnavailableError(EmbedderError):
    """The embedder cannot be reached or timed out; writes still succeed, search degrades."""

    code = "embedder.unavailable"
    retryable = True


class EmbedderMismatchError(EmbedderError):
    """The database was built with another embedder (name or dims); reindex to switch."""

    code = "embedder.mismatch"


class CorruptBackupError(AbathurError):
    """A backup failed verification (checksum, size, decompression, integrity or manifest).

    ``reason`` says which test failed: ``"missing"``, ``"manifest"``, ``"truncated"``,
    ``"checksum"``, ``"decompress"``, ``"integrity"``, ``"mismatch"`` (the contents
    differ from the manifest) or ``"authentication"`` (a backup key is configured and
    the manifest's HMAC does not match it, or is missing); nothing was restored.
    """

    code = "backup.corrupt"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with the failed test's ``reason``."""
        return {**super().to_dict(), "reason": self.reason}


class CorruptArchiveError(AbathurError):
    """An archive entry failed verification: checksum, dictionary, decompression or contents.

    ``entry_id`` names the entry; nothing was restored. Restore the database
    from a backup that verifies to get the entry back (runbook 05-corruption).
    """

    code = "archive.corrupt"

    def __init__(self, entry_id: int, message: str) -> None:
        super().__init__(message)
        self.entry_id = entry_id

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with the entry's id."""
        return {**super().to_dict(), "entry_id": self.entry_id}


class BudgetExceededError(AbathurError):
    """A ``block`` budget is used up: the embedder call was not made.

    Raised before the call (a vector search's query embedding, or
    ``ab.embeddings.drain()``); writes still succeed and their embedding jobs
    wait. ``budget`` names the budget, ``spent`` and ``limit`` are in its unit
    (``"usd"`` or ``"tokens"``) for the current ``period`` (``"day"`` or
    ``"month"``, UTC).
    """

    code = "budget.exceeded"

    def __init__(self, budget: str, *, period: str, unit: str, spent: float, limit: float) -> None:
        super().__init__(
            f"budget {budget} is used up: {spent:g} of {limit:g} {unit} this {period} (UTC); "
            "the embedder was not called. Raise the limit in Settings.budgets, or wait for "
            f"the next {period}"
        )
        self.budget = budget
        self.period = period
        self.unit = unit
        self.spent = spent
        self.limit = limit

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with the budget's numbers."""
        return {
            **super().to_dict(),
            "budget": self.budget,
            "period": self.period,
            "unit": self.unit,
            "spent": self.spent,
            "limit": self.limit,
        }


class DatabaseError(AbathurError):
    """The database could not do what was asked; the message says why."""

    code = "db.error"


class DatabaseBusyError(DatabaseError):
    """Another process held the write lock longer than ``busy_timeout``."""

    code = "db.busy"
    retryable = True


class PoolExhaustedError(DatabaseBusyError):
    """No pooled server connection came free within ``Settings.pg_pool_timeout_s``.

    PostgreSQL only: every connection of the pool (``Settings.pg_pool_size``)
    was busy with other calls of this process. Nothing was read or written;
    retry, lower the concurrency, or raise ``ABATHUR_PG_POOL_SIZE`` (within the
    server's ``max_connections``). A subclass of :class:`DatabaseBusyError`, so
    code that retries on ``db.busy`` retries on this too.
    """

    code = "db.pool_exhausted"
    retryable = True


class DatabaseInUseError(DatabaseError):
    """Another connection has the file open, so it cannot be replaced (restore without --force)."""

    code = "db.in_use"


class SchemaError(DatabaseError):
    """The file's schema is newer than this abathur, or a migration failed."""

    code = "db.schema"


class IncompatibleEnvironmentError(DatabaseError):
    """SQLite is older than 3.51.3, or sqlite-vec cannot be loaded.

    On PostgreSQL: the server is older than 15, or pgvector is missing or
    older than 0.8.4, or the driver (the ``postgres`` extra) is not installed.
    """

    code = "db.incompatible_environment"


class InvalidImportError(InvalidInputError):
    """A line of an import file is not a valid ``abathur-export/1`` record; nothing was imported.

    ``line`` is its 1-based line number; ``reason`` says what kind of problem:
    ``"json"``, ``"encoding"``, ``"format"`` (header or format version),
    ``"schema"``, ``"version_gap"``, ``"duplicate"``, ``"order"``,
    ``"truncated"``, ``"changed"``, or the code of the API rule it breaks
    (``"value_too_large"``, ``"memory.invalid_namespace"``, ``"invalid_id"``...).
    """

    code = "import.invalid_line"

    def __init__(self, file: str, line: int, problem: str, *, reason: str) -> None:
        super().__init__(f"{file} line {line}: {problem}; nothing was imported")
        self.file = file
        self.line = line
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with ``line`` and ``reason``."""
        return {**super().to_dict(), "line": self.line, "reason": self.reason}


class ImportConflictError(AlreadyExistsError):
    """An import record differs from what the database holds under its id; nothing was imported.

    ``line`` is the record's 1-based line number in the file.
    """

    code = "import.conflict"

    def __init__(self, file: str, line: int, problem: str) -> None:
        super().__init__(f"{file} line {line}: {problem}; nothing was imported")
        self.file = file
        self.line = line

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with ``line``."""
        return {**super().to_dict(), "line": self.line}


class BackupKeyError(InvalidInputError):
    """The backup key is unusable, or is not the key a backup needs; nothing was done.

    Raised when the configured key is malformed, too short or not random-looking,
    when both ``ABATHUR_BACKUP_KEY`` and a key file are set, when a key file cannot
    be read, when a backup carries an HMAC but no key is configured, and when it
    was made with another key (its ``key_id`` differs). The message never holds
    the key.
    """

    code = "backup.key"


class BackupSpaceError(DatabaseError):
    """Not enough free space for a backup (or for verifying or restoring one).

    ``directory`` is where the space ran out, ``needed`` how many bytes the
    operation needs at least, ``free`` how many were free; the partial files
    were removed.
    """

    code = "backup.no_space"

    def __init__(self, message: str, *, directory: str, needed: int, free: int) -> None:
        super().__init__(message)
        self.directory = directory
        self.needed = needed
        self.free = free

    def to_dict(self) -> dict[str, object]:
        """The error as the CLI prints it with ``--json``, with the sizes in bytes."""
        return {
            **super().to_dict(),
            "directory": self.directory,
            "needed_bytes": self.needed,
            "free_bytes": self.free,
        }


class PermissionDeniedError(AbathurError):
    """The caller may not do this: a read-only MCP token writing, a scope it does not hold.

    Nothing was read or written.
    """

    code = "permission_denied"

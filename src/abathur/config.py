"""Settings: one object, from keyword arguments and ``ABATHUR_*`` environment variables.

Precedence is the usual one: an argument beats the environment, which beats the
default. ``ABATHUR_DB`` names the database for the CLI and for
``Abathur.open()`` when no path is given: a file path (SQLite), or a
``postgresql://`` / ``postgres://`` URL (PostgreSQL, issue 14), which
``Settings.db`` holds as a :class:`PostgresUrl`, never as a ``Path`` (a
``Path`` would collapse the ``//``).

Example:
    >>> from abathur.config import Settings
    >>> Settings(synchronous="FULL").synchronous
    'FULL'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema, to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from abathur.errors import InvalidInputError
from abathur.redact import redact_url

__all__ = [
    "POSTGRES_SCHEMES",
    "ArchivePolicy",
    "Budget",
    "PostgresUrl",
    "Settings",
    "is_postgres_url",
    "load_settings",
    "settings_table",
]

#: URL schemes that name a PostgreSQL server (libpq accepts both).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(value: object) -> bool:
    """True when ``value`` is text (or a :class:`PostgresUrl`) naming a PostgreSQL server.

    Example:
        >>> is_postgres_url("postgres://db.internal/agents"), is_postgres_url("agent.db")
        (True, False)
    """
    if isinstance(value, PostgresUrl):
        return True
    return isinstance(value, str) and value.lower().startswith(POSTGRES_SCHEMES)


class PostgresUrl:
    """A PostgreSQL connection URL, kept whole, shown without its credentials.

    Not a ``str`` and not a ``Path``: ``str()``, ``repr()`` and f-strings give
    the redacted form (no ``user:password@``, no ``password=`` parameter), so
    a message or a log line built the usual way never carries the password.
    Only the backend asks for the real thing, with :meth:`reveal`.

    Example:
        >>> url = PostgresUrl("postgresql://app:s3cret@db.internal:5432/agents")
        >>> str(url), "s3cret" in repr(url)
        ('postgresql://***@db.internal:5432/agents', False)
        >>> url.reveal()
        'postgresql://app:s3cret@db.internal:5432/agents'
    """

    __slots__ = ("_url",)

    def __init__(self, url: str | PostgresUrl) -> None:
        if isinstance(url, PostgresUrl):
            url = url.reveal()
        if not isinstance(url, str) or not is_postgres_url(url):
            raise InvalidInputError(
                f"a PostgreSQL URL starts with {' or '.join(POSTGRES_SCHEMES)}, "
                f"got {redact_url(str(url))!r}"
            )
        self._url = url

    def reveal(self) -> str:
        """The URL with its credentials, for the driver only: never print or log it."""
        return self._url

    def __str__(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"PostgresUrl({str(self)!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PostgresUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(("PostgresUrl", self._url))

    def __reduce__(self) -> tuple[type[PostgresUrl], tuple[str]]:
        # Settings cross process boundaries pickled (multiprocessing tests, workers).
        return (PostgresUrl, (self._url,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Settings.db's own validator builds the instance; here: accept one,
        # and dump it as the redacted text in JSON (never the password).
        return core_schema.is_instance_schema(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="json"
            ),
        )


class ArchivePolicy(BaseModel):
    """What ``abathur archive run`` moves out of the hot tables (issue 4).

    Kinds:

    * ``sessions``: terminated sessions, with their events, ``after_days``
      after they were terminated; ``scope`` is an app.
    * ``memories``: whole memories (every version) whose current version
      expired ``after_days`` ago or more; with ``idle_days``, also live
      memories not written for that long. ``scope`` is a namespace prefix
      (whole segments), ``type`` a memory type.
    * ``tombstones``: whole deleted memories, ``after_days`` after the delete.
    * ``versions``: versions of a memory beyond its newest ``keep_versions``,
      once they are ``after_days`` old.
    * ``chunks``: document chunks of deleted files (see abathur.archival).

    When several policies of one kind match an item, the most specific wins:
    the longest scope, then one naming a type. ``after_days=None`` archives
    nothing, so a specific policy can exempt a scope from a general one.

    Example:
        >>> from abathur.config import ArchivePolicy, Settings
        >>> keep = ArchivePolicy(kind="sessions", scope="audit-app", after_days=None)
        >>> len(Settings(archive_policies=[keep]).archive_policies)
        1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["sessions", "memories", "tombstones", "versions", "chunks"]
    scope: str | None = Field(
        default=None, min_length=1, max_length=512,
        description="sessions: an app; memory kinds: a namespace prefix; None: everything.",
    )
    type: Literal["semantic", "episodic", "procedural"] | None = None
    after_days: float | None = Field(default=30.0, ge=0)
    idle_days: float | None = Field(default=None, gt=0)
    keep_versions: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _fits_kind(self) -> ArchivePolicy:
        if self.type is not None and self.kind in ("sessions", "chunks"):
            raise ValueError(f"a {self.kind} policy takes no memory type")
        if self.idle_days is not None and self.kind != "memories":
            raise ValueError("idle_days is for the memories kind only")
        if self.scope is not None and (
            self.scope != self.scope.strip() or any(ord(c) < 32 for c in self.scope)
        ):
            raise ValueError(f"scope {self.scope!r} has padding or control characters")
        if self.scope is not None and self.kind != "sessions" and "" in self.scope.split(":"):
            raise ValueError(f"scope {self.scope!r} has an empty namespace segment")
        return self


class Budget(BaseModel):
    """A spending limit on embedder calls, per app, per user or overall (issue 4).

    Spend is what ``usage_ledger`` holds since the start of the UTC day or
    month. A budget is used up once spend reaches a limit (``>=``); the call
    that crosses it is still made. Then ``action`` applies to every later call
    in the scope: ``warn`` logs ``budget.exceeded`` and counts a metric;
    ``block`` raises :class:`~abathur.errors.BudgetExceededError` before the
    call; ``degrade`` makes vector and hybrid search fall back to keyword.
    Under ``block`` and ``degrade`` writes still succeed and their embedding
    jobs wait in the queue until the budget allows them again.

    Example:
        >>> from abathur.config import Budget
        >>> Budget(scope="user", max_tokens=50_000, action="degrade").label
        'user:*/day'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Literal["app", "user", "all"] = "all"
    name: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="The app or user; None: every app (or user), each on its own.",
    )
    period: Literal["day", "month"] = "day"
    max_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    action: Literal["warn", "block", "degrade"] = "warn"

    @model_validator(mode="after")
    def _has_limit(self) -> Budget:
        if self.max_usd is None and self.max_tokens is None:
            raise ValueError("a budget needs max_usd or max_tokens (or both)")
        if self.scope == "all" and self.name is not None:
            raise ValueError("a budget with scope 'all' takes no name")
        return self

    @property
    def label(self) -> str:
        """How messages and metrics name the budget: ``app:helpdesk/day``."""
        if self.scope == "all":
            return f"all/{self.period}"
        return f"{self.scope}:{self.name or '*'}/{self.period}"


DEFAULT_ARCHIVE_POLICIES: tuple[ArchivePolicy, ...] = (
    ArchivePolicy(kind="sessions", after_days=30),
    ArchivePolicy(kind="memories", type="episodic", after_days=0),
    ArchivePolicy(kind="versions", keep_versions=10, after_days=7),
    ArchivePolicy(kind="tombstones", after_days=30),
    ArchivePolicy(kind="chunks", after_days=7),
)

# Local models cost nothing, but their calls still count tokens and time.
DEFAULT_PRICES: dict[str, float] = {"bundled/*": 0.0, "ollama/*": 0.0}


class Settings(BaseSettings):
    """Everything tunable about an abathur database and its services."""

    model_config = SettingsConfigDict(env_prefix="ABATHUR_", frozen=True, extra="forbid")

    db: Path | PostgresUrl = Field(
        default=Path("abathur.db"),
        # A URL's password is never shown: see PostgresUrl.
        description="Database file path, or a postgresql:// URL.",
    )
    synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL is durable against a process crash in WAL mode; FULL also "
        "against power loss, at the cost of an fsync per commit.",
    )
    busy_timeout_ms: int = Field(
        default=5000,
        ge=0,
        le=600_000,
        description="How long a write waits for another connection's lock before failing.",
    )
    wal_autocheckpoint: int = Field(
        default=1000, ge=0, description="Pages in the WAL before an automatic checkpoint."
    )
    cache_size_kib: int = Field(default=64_000, ge=0, description="Page cache per connection.")
    mmap_size: int = Field(
        default=268_435_456, ge=0, description="Bytes of the file memory-mapped."
    )
    readers: int = Field(default=4, ge=1, le=64, description="Read-only connections in the pool.")
    max_value_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest JSON value, state or metadata accepted."
    )
    auto_migrate: bool = Field(default=True, description="Apply pending migrations on open.")
    backup_before_migrate: bool = Field(
        default=True, description="Copy an existing file aside before migrating it."
    )
    backup_dir: Path | None = Field(
        default=None,
        description="Where 'abathur backup' writes and 'abathur health' looks for backups; "
        "None: a 'backups' directory beside the database file.",
    )
    backup_min_age_days: float = Field(
        default=1.0, ge=0, allow_inf_nan=False,
        description="'abathur backup' retention never deletes a backup younger than this "
        "(nor the newest two, nor a pinned one: 'backup --keep').",
    )
    # Authenticated backups (issue 11; abathur/ops/backup_key.py, runbooks/06).
    backup_key_file: Path | None = Field(
        default=None,
        description="A file holding the backup key (64+ hex digits: 32+ random bytes); "
        "backups are then signed (HMAC-SHA256) and verify/restore check the signature. "
        "Keep it away from the backups.",
    )
    backup_key: SecretStr | None = Field(
        default=None,
        description="The backup key itself ($ABATHUR_BACKUP_KEY), when a file is not an "
        "option; set this or backup_key_file, not both.",
    )
    backup_allow_unauthenticated: bool = Field(
        default=False,
        description="Verify and restore a backup without checking its HMAC (made before "
        "the key was set up, or the key is lost): checksums only. For one command "
        "('--allow-unauthenticated'), never in a service's environment.",
    )

    # Embeddings (issue 3). "bundled" is the offline MiniLM shipped in the
    # package; "ollama" uses ollama_model on ollama_host; "openai" any server
    # speaking OpenAI's /embeddings API; "none" disables vector search.
    embedder: Literal["bundled", "ollama", "openai", "none"] = Field(
        default="bundled",
        description="Who embeds: 'bundled' (offline MiniLM, in the package), 'ollama', "
        "'openai' (any OpenAI-compatible server) or 'none' (keyword search only).",
    )
    embed_batch_size: int = Field(default=64, ge=1, le=4096, description="Texts per embed call.")
    embed_worker: bool = Field(
        default=True,
        description="Drain the embedding queue in the background while open; off: another "
        "process (or 'embeddings.drain()') embeds.",
    )
    # repr=False: the URL may carry user:password@ (sent as basic auth); a
    # Settings repr in a log or a traceback must not show it.
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        repr=False,
        description="Ollama server URL; 'user:password@' in it is sent as basic auth.",
    )
    ollama_model: str = Field(default="nomic-embed-text", description="Ollama embedding model.")
    ollama_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one request.")
    ollama_batch_size: int = Field(default=32, ge=1, le=2048, description="Texts per request.")
    ollama_concurrency: int = Field(
        default=2, ge=1, le=64, description="Requests in flight at once."
    )
    ollama_retries: int = Field(
        default=3, ge=0, le=20, description="Retries after a timeout, 5xx, 408 or 429."
    )
    ollama_keep_alive: str = Field(
        default="5m", description="How long Ollama keeps the model loaded ('5m', '0', '-1')."
    )
    ollama_truncate: bool = Field(
        default=True, description="Let Ollama cut inputs longer than the model's context."
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="API root of an OpenAI-compatible server (the part before /embeddings).",
    )
    openai_model: str = Field(
        default="text-embedding-3-small", description="Embedding model on that server."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Bearer token sent to that server; never shown."
    )
    openai_dims: int | None = Field(
        default=None, ge=1, description="Vector length asked for ('dimensions'); None: the model's."
    )
    openai_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one request.")
    openai_batch_size: int = Field(default=64, ge=1, le=2048, description="Texts per request.")
    openai_concurrency: int = Field(
        default=2, ge=1, le=64, description="Requests in flight at once."
    )
    openai_retries: int = Field(
        default=3, ge=0, le=20, description="Retries after a timeout, 5xx, 408 or 429."
    )

    # Search (issue 3; see abathur/search.py for how these are used).
    search_oversample: int = Field(
        default=20, ge=1, le=1000,
        description="Vector search ranks k x this many candidates by their binary codes, "
        "then rescores them exactly; more is slower and closer to exact search.",
    )
    # 10, not the paper's 60: tuned on SciFact's train split only, k=10 was best
    # for documents (nDCG@10 0.730 vs 0.725) and memories (0.725 vs 0.716), and
    # 10..100 were all within 0.01 (benchmarks/results/beir_scifact_train_*.json).
    search_rrf_k: int = Field(
        default=10, ge=1, description="Reciprocal rank fusion constant of hybrid search."
    )
    vector_chunk_size: int = Field(
        default=256, ge=8, le=4096, multiple_of=8,
        description="Vectors per vec0 chunk; every tenant partition takes at least one chunk.",
    )
    vector_compact_ratio: float = Field(
        default=0.25, ge=0,
        description="The worker rebuilds a vector table when its dead rows pass this share of "
        "its live rows (and 1,000); 0: only on request.",
    )

    # Archival, costs and analytics (issue 4; abathur/archival.py, costs.py, analytics.py).
    archive_policies: tuple[ArchivePolicy, ...] = Field(
        default=DEFAULT_ARCHIVE_POLICIES,
        description="What 'abathur archive run' moves; ABATHUR_ARCHIVE_POLICIES takes JSON.",
    )
    archive_batch_size: int = Field(
        default=200, ge=1, le=100_000,
        description="Items moved per transaction: writers wait for one batch at most.",
    )
    archive_pause_ms: float = Field(
        default=5.0, ge=0, le=60_000,
        description="Pause between batches, so writers in other processes get the lock.",
    )
    prices: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="USD per million tokens, by 'provider/model' or 'provider/*'.",
    )
    budgets: tuple[Budget, ...] = Field(
        default=(), description="Spending limits; ABATHUR_BUDGETS takes JSON."
    )
    metrics_flush_s: float = Field(
        default=60.0, gt=0, description="How often call latencies are written to 'metrics'."
    )
    metrics_retention_days: float = Field(
        default=30.0, gt=0, description="Metrics windows older than this are deleted."
    )

    # PostgreSQL (issue 14; abathur/backends/postgres): used only when db is a URL.
    pg_pool_size: int = Field(
        default=10, ge=1, le=1000,
        description="PostgreSQL: connections in this process's pool (keep the sum over "
        "processes under the server's max_connections).",
    )
    pg_pool_timeout_s: float = Field(
        default=5.0, gt=0, le=600, allow_inf_nan=False,
        description="PostgreSQL: how long a call waits for a free pooled connection before "
        "failing with db.pool_exhausted (retryable).",
    )

    @field_validator("db", mode="before")
    @classmethod
    def _db_target(cls, value: object) -> object:
        # A URL must never become a Path: Path("postgresql://h/db") is
        # "postgresql:/h/db". Everything else goes on to Path's own validation.
        if isinstance(value, str) and is_postgres_url(value):
            return PostgresUrl(value)
        return value

    @property
    def db_file(self) -> Path | None:
        """The SQLite database file, or ``None`` when ``db`` is a PostgreSQL URL.

        Example:
            >>> Settings(db="agent.db").db_file, Settings(db="postgresql://h/x").db_file
            (PosixPath('agent.db'), None)
        """
        return self.db if isinstance(self.db, Path) else None

    def require_db_file(self, feature: str) -> Path:
        """The database file, for a ``feature`` that works on files only.

        Raises:
            InvalidInputError: ``db`` is a PostgreSQL server, which has no file;
                the message names ``feature``.
        """
        if isinstance(self.db, Path):
            return self.db
        raise InvalidInputError(
            f"{feature} works on a SQLite database file; {self.db} is a PostgreSQL server, "
            "where it is not available (issue 14)"
        )


def load_settings(**values: Any) -> Settings:
    """:class:`Settings` from ``values`` and the environment, or one clear error.

    The one place a pydantic ``ValidationError`` about settings becomes
    abathur's :class:`~abathur.errors.InvalidInputError`, naming each bad
    setting and why.

    Example:
        >>> load_settings(readers=2).readers
        2
        >>> load_settings(readers=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abathur.errors.InvalidInputError: invalid settings: readers: Input should be ...
    """
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidInputError(f"invalid settings: {problems}") from None


def settings_table() -> str:
    """The configuration table of docs/configuration.md, rendered from :class:`Settings`.

    One row per field: its ``ABATHUR_*`` variable, its default (as JSON, as the
    variable takes it) and its description. ``scripts/settings_table.py``
    writes it into the docs; ``tests/unit/test_docs.py`` fails when they drift.

    Returns:
        A markdown table.

    Example:
        >>> from abathur.config import settings_table
        >>> print(settings_table().splitlines()[2])
        | `ABATHUR_DB` | `abathur.db` | Database file path, or a postgresql:// URL. |
    """
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        # validated_data: pydantic 2.10 requires it with call_default_factory (later ones do not).
        default = field.get_default(call_default_factory=True, validated_data={})
        if default is None:
            shown = "none"
        elif isinstance(default, Path | str | PostgresUrl):
            shown = f"`{default}`"
        else:
            shown = f"`{json.dumps(to_jsonable_python(default, exclude_none=True))}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `ABATHUR_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"

"""Settings: one object, from keyword arguments and ``ABATHUR_*`` environment variables.

Precedence is the usual one: an argument beats the environment, which beats the
default. ``ABATHUR_DB`` names the database file for the CLI and for
``Abathur.open()`` when no path is given.

Example:
    >>> from abathur.config import Settings
    >>> Settings(synchronous="FULL").synchronous
    'FULL'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything tunable about an abathur database and its services."""

    model_config = SettingsConfigDict(env_prefix="ABATHUR_", frozen=True, extra="forbid")

    db: Path = Field(default=Path("abathur.db"), description="Database file path.")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL is durable against a process crash in WAL mode; FULL also "
        "against power loss, at the cost of an fsync per commit.",
    )
    busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    wal_autocheckpoint: int = Field(default=1000, ge=0)
    cache_size_kib: int = Field(default=64_000, ge=0, description="Page cache per connection.")
    mmap_size: int = Field(default=268_435_456, ge=0)
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

    # Embeddings (issue 3). "bundled" is the offline MiniLM shipped in the
    # package; "ollama" uses ollama_model on ollama_host; "none" disables
    # vector search (keyword search still works).
    embedder: Literal["bundled", "ollama", "none"] = "bundled"
    embed_batch_size: int = Field(default=64, ge=1, le=4096, description="Texts per embed call.")
    embed_worker: bool = Field(
        default=True, description="Drain the embedding queue in the background while open."
    )
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "nomic-embed-text"
    ollama_timeout_s: float = Field(default=30.0, gt=0)
    ollama_batch_size: int = Field(default=32, ge=1, le=2048)
    ollama_concurrency: int = Field(default=2, ge=1, le=64)
    ollama_retries: int = Field(default=3, ge=0, le=20)
    ollama_keep_alive: str = "5m"
    ollama_truncate: bool = True

    # Search (issue 3; see abathur/search.py for how these are used).
    search_oversample: int = Field(
        default=20, ge=1, le=1000,
        description="Vector search ranks k x this many candidates by their binary codes, "
        "then rescores them exactly; more is slower and closer to exact search.",
    )
    search_rrf_k: int = Field(
        default=60, ge=1, description="Reciprocal rank fusion constant of hybrid search."
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

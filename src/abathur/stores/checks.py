"""``CheckStore``: what ``abathur smoke`` asks of an open database, in one transaction.

The smoke run (:mod:`abathur.ops.smoke`) drives the public API like an
application would, then asks the backend a few questions only the backend
can answer: which engine it is, whether its schema is the one its
migrations build, whether the storage is intact, whether the hot queries
use their indexes, and what a run left behind. It judges the answers itself.

Example:
    >>> from abathur.stores.checks import ObjectCheck
    >>> check = ObjectCheck(version=7, latest=7, expected=12, missing=(), changed=())
    >>> check.is_current, check.runtime_missing
    (True, ())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["CheckStore", "EngineInfo", "ObjectCheck", "RunLeftovers"]


@dataclass(frozen=True)
class EngineInfo:
    """The engine under the database: ``"SQLite 3.51.3, sqlite-vec v0.1.9"``, and its schema."""

    description: str
    schema_version: int


@dataclass(frozen=True)
class ObjectCheck:
    """Tables (or indexes) present against those the migrations build.

    ``missing`` and ``changed`` name the objects the migrations create that
    are absent or defined otherwise; ``runtime`` counts the objects made at
    run time (vector tables sized by the embedder), ``runtime_missing`` the
    registered ones that are gone.
    """

    version: int
    latest: int
    expected: int
    missing: tuple[str, ...]
    changed: tuple[str, ...]
    runtime: int = 0
    runtime_missing: tuple[str, ...] = ()

    @property
    def is_current(self) -> bool:
        """True when the schema is at this abathur's latest migration."""
        return self.version == self.latest


@dataclass(frozen=True)
class RunLeftovers:
    """What is left of one smoke run after its cleanup (all zero and empty when clean)."""

    sessions: int
    memories: int
    documents: int
    document_roots: int
    vector_chunks: int
    # entity ids of the unredacted audit records written since the run began
    audit_entities: tuple[str, ...]


class CheckStore(Protocol):
    """The smoke run's questions to the backend, inside one read transaction."""

    def engine(self) -> EngineInfo:
        """The engine's name and versions, and the schema version of the database."""
        ...

    def schema_objects(self, kind: Literal["table", "index"]) -> ObjectCheck:
        """The database's tables or indexes against what its migrations build."""
        ...

    def integrity(self) -> tuple[list[str], str]:
        """The engine's own consistency check: (findings, one-line summary)."""
        ...

    def foreign_keys(self) -> tuple[list[str], str]:
        """Rows that point at a missing parent: (findings, one-line summary)."""
        ...

    def plan_problems(self) -> tuple[int, list[str]]:
        """How many hot queries were checked, and those that do not use their index."""
        ...

    def run_leftovers(
        self,
        *,
        app: str,
        user: str,
        namespace: str,
        audit_after: int,
        root: str | None,
        partition: str,
    ) -> RunLeftovers:
        """What remains of a run: sessions of ``app``/``user``, memories in ``namespace``
        or below, the document ``root`` and its documents, vectors of ``partition``,
        and the unredacted audit records after ``audit_after``."""
        ...

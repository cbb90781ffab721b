"""The :class:`Embedder` protocol every provider implements.

An embedder turns texts into fixed-size float vectors. abathur records the
embedder's ``name`` and ``dims`` in the database when it first embeds, and
refuses to mix vectors of two embedders in one file (``abathur reindex``
switches).

Providers raise only abathur errors: :class:`~abathur.errors.EmbedderUnavailableError`
when the service cannot be reached, times out or is overloaded (retrying may
help; writes still succeed and search falls back to keyword), and
:class:`~abathur.errors.EmbedderError` for everything retrying will not fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["EmbedResult", "Embedder"]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors plus what the call cost, for the usage ledger."""

    vectors: list[list[float]]
    tokens: int
    is_token_estimate: bool = False


@runtime_checkable
class Embedder(Protocol):
    """Something that embeds texts.

    Attributes:
        name: stable identity recorded in the database, ``"<provider>:<model>"``
            (e.g. ``"bundled:all-MiniLM-L6-v2"``, ``"ollama:nomic-embed-text"``).
        provider: ``"bundled"``, ``"ollama"``, ``"openai"``, ...
        model: the model name within the provider.
        dims: length of every vector.
    """

    # Read-only properties: a provider may compute them (Ollama learns its
    # dims from the first call) or set them as plain attributes.
    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def dims(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order (unit-normalised for cosine search)."""
        ...

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        """Like :meth:`embed`, also returning the tokens the call consumed."""
        ...

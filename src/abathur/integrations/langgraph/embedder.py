"""LangGraph's ``index["embed"]`` as an abathur :class:`~abathur.embeddings.Embedder`.

LangGraph stores take their embedding model in the index config: a LangChain
``Embeddings``, a sync or async function from texts to vectors, or a provider
string such as ``"openai:text-embedding-3-small"`` (which needs ``langchain``
and the provider's package). abathur embeds with the embedder its database was
opened with, and records that embedder's name and dims in the file, so
:func:`as_embedder` wraps LangGraph's ``embed`` as one. ``AbathurStore`` does it
for you when it opens the database itself; give the result to
``Abathur.open(embedder=...)`` when you open it.

The name recorded in the file is ``"langchain:"`` followed by the provider
string, the ``Embeddings`` class (and its ``model``, when it has one) or the
function's qualified name; pass ``name=`` to choose it. Opening the file later
with another name or dims is refused (``EmbedderMismatchError``) until it is
reindexed, as for any abathur embedder.

Example:
    >>> import asyncio
    >>> from abathur.integrations.langgraph import as_embedder
    >>> def embed(texts):
    ...     return [[float(len(t)), 1.0, 0, 0, 0, 0, 0, 0] for t in texts]
    >>> embedder = as_embedder(embed, dims=8)
    >>> embedder.name, embedder.dims
    ('langchain:abathur.integrations.langgraph.embedder.embed', 8)
    >>> [round(x, 3) for x in asyncio.run(embedder.embed(["abc"]))[0][:2]]
    [0.949, 0.316]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import ensure_embeddings

from abathur.embeddings.base import EmbedResult
from abathur.errors import EmbedderError, EmbedderUnavailableError, InvalidInputError

__all__ = ["LangChainEmbedder", "as_embedder"]

PROVIDER = "langchain"


def _identity(embed: object) -> str:
    if isinstance(embed, str):
        return embed
    if isinstance(embed, Embeddings):
        cls = type(embed)
        model = getattr(embed, "model", None) or getattr(embed, "model_name", None)
        name = f"{cls.__module__}.{cls.__qualname__}"
        return f"{name}:{model}" if isinstance(model, str) and model else name
    module = getattr(embed, "__module__", None) or "?"
    qualname = getattr(embed, "__qualname__", None) or type(embed).__qualname__
    return f"{module}.{qualname}"


class LangChainEmbedder:
    """An :class:`~abathur.embeddings.Embedder` calling a LangChain ``Embeddings``.

    Build it with :func:`as_embedder`. Vectors are scaled to unit length
    (abathur's search is cosine similarity either way). A connection error or
    a timeout from the model becomes
    :class:`~abathur.errors.EmbedderUnavailableError` (abathur retries later,
    search falls back to keyword); anything else
    :class:`~abathur.errors.EmbedderError`.

    Attributes:
        name: ``"langchain:<identity>"``, recorded in the database.
        provider: ``"langchain"``.
        model: the identity.
        dims: the vector length the model is declared to make.
        embeddings: the wrapped LangChain ``Embeddings``.
    """

    provider: str = PROVIDER

    def __init__(self, embeddings: Embeddings, *, dims: int, model: str) -> None:
        self.embeddings = embeddings
        self.dims = dims
        self.model = model
        self.name = f"{PROVIDER}:{model}"

    def __repr__(self) -> str:
        return f"LangChainEmbedder(name={self.name!r}, dims={self.dims})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in input order.

        Raises:
            EmbedderUnavailableError: the model could not be reached or timed out.
            EmbedderError: it failed otherwise, or returned vectors of the wrong
                number or length.

        Example:
            >>> import asyncio
            >>> from abathur.integrations.langgraph import as_embedder
            >>> e = as_embedder(lambda texts: [[3.0, 4.0] + [0.0] * 6 for _ in texts], dims=8)
            >>> asyncio.run(e.embed(["x"]))[0][:2]
            [0.6, 0.8]
        """
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        """Like :meth:`embed`; tokens are estimated (four characters a token).

        Raises:
            EmbedderUnavailableError: the model could not be reached or timed out.
            EmbedderError: it failed otherwise, or returned bad vectors.

        Example:
            >>> import asyncio
            >>> from abathur.integrations.langgraph import as_embedder
            >>> e = as_embedder(lambda texts: [[1.0] * 8 for _ in texts], dims=8)
            >>> r = asyncio.run(e.embed_with_usage(["twelve chars"]))
            >>> r.tokens, r.is_token_estimate
            (3, True)
        """
        batch = list(texts)
        if not batch:
            return EmbedResult(vectors=[], tokens=0, is_token_estimate=True)
        try:
            raw = await self.embeddings.aembed_documents(batch)
        except (ConnectionError, TimeoutError) as exc:
            raise EmbedderUnavailableError(f"{self.name} is unavailable: {exc!r}") from exc
        except Exception as exc:
            # A user's model raises whatever it raises; abathur's worker needs its own type.
            raise EmbedderError(f"{self.name} failed: {exc!r}") from exc
        if len(raw) != len(batch):
            raise EmbedderError(f"{self.name} returned {len(raw)} vectors for {len(batch)} texts")
        vectors = []
        for vector in raw:
            values = [float(x) for x in vector]
            if len(values) != self.dims:
                raise EmbedderError(
                    f"{self.name} returned a {len(values)}-dimensional vector; "
                    f"the index config says dims={self.dims}"
                )
            norm = math.sqrt(sum(x * x for x in values))
            vectors.append([x / norm for x in values] if norm else values)
        tokens = sum(math.ceil(len(t) / 4) for t in batch)
        return EmbedResult(vectors=vectors, tokens=tokens, is_token_estimate=True)


def as_embedder(
    embed: Embeddings | Callable[..., Any] | str, *, dims: int, name: str | None = None
) -> LangChainEmbedder:
    """Wrap LangGraph's ``index["embed"]`` as an abathur embedder.

    Args:
        embed: a LangChain ``Embeddings``, a function (sync or async) from a
            list of texts to a list of vectors, or a provider string
            (``"openai:text-embedding-3-small"``; needs ``langchain``).
        dims: the length of its vectors (a multiple of 8: abathur's binary
            index packs them into bytes).
        name: what identifies the model in the database (after
            ``"langchain:"``); default: derived from ``embed``.

    Returns:
        The embedder, for ``Abathur.open(embedder=...)``.

    Raises:
        InvalidInputError: ``dims`` is not a positive multiple of 8, ``name``
            is blank, or ``embed`` cannot be turned into ``Embeddings``.

    Example:
        >>> from abathur.integrations.langgraph import as_embedder
        >>> as_embedder(lambda texts: [[1.0] * 16 for _ in texts], dims=16, name="ones").name
        'langchain:ones'
    """
    if isinstance(dims, bool) or not isinstance(dims, int) or dims <= 0 or dims % 8:
        raise InvalidInputError(
            f"dims must be a positive multiple of 8 (abathur's binary index), got {dims!r}"
        )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidInputError(f"name must be a non-blank string, got {name!r}")
    try:
        embeddings = ensure_embeddings(embed)
    except Exception as exc:
        raise InvalidInputError(f"index 'embed' cannot be used: {exc}") from exc
    return LangChainEmbedder(embeddings, dims=dims, model=name or _identity(embed))

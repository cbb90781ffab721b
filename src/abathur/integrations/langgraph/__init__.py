"""LangGraph on abathur: ``AbathurStore``, a ``BaseStore`` for graphs' long-term memory.

Install with ``pip install 'abathur[langgraph]'`` (tested with langgraph 1.2.22
and langgraph-checkpoint 4.3.2). docs/integrations/langgraph.md is the guide;
:mod:`~abathur.integrations.langgraph.store` says how items are stored, and
the guide lists where abathur differs from LangGraph's ``InMemoryStore``, and why.
"""

try:
    import langgraph.store.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "abathur.integrations.langgraph needs LangGraph: pip install 'abathur[langgraph]'"
    ) from exc

from .embedder import LangChainEmbedder, as_embedder
from .namespaces import ROOT, from_key, from_namespace, to_key, to_namespace
from .store import MAX_NAMESPACES, REFRESH_STEP, AbathurStore

__all__ = [
    "MAX_NAMESPACES",
    "REFRESH_STEP",
    "ROOT",
    "AbathurStore",
    "LangChainEmbedder",
    "as_embedder",
    "from_key",
    "from_namespace",
    "to_key",
    "to_namespace",
]

"""Google ADK on abathur: session and memory services, and the ``abathur:`` URI scheme.

Install with ``pip install 'abathur[adk]'`` (tested with google-adk 2.13.0).
docs/integrations/adk.md is the guide; each module's docstring lists where
abathur differs from ADK's in-memory services, and why.
"""

try:
    import google.adk  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "abathur.integrations.adk needs Google ADK: pip install 'abathur[adk]'"
    ) from exc

from ._store import SCHEME, parse_uri
from .memory import MIN_SIMILARITY, NAMESPACE_PREFIX, AbathurMemoryService, namespace_for
from .registry import memory_service_factory, register, session_service_factory
from .sessions import EVENT_FORMAT, AbathurSessionService

__all__ = [
    "EVENT_FORMAT",
    "MIN_SIMILARITY",
    "NAMESPACE_PREFIX",
    "SCHEME",
    "AbathurMemoryService",
    "AbathurSessionService",
    "memory_service_factory",
    "namespace_for",
    "parse_uri",
    "register",
    "session_service_factory",
]

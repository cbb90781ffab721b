"""The ``abathur:`` URI scheme in ADK's service registry.

ADK 2.13 builds the services of ``adk web`` and ``adk api_server`` from
``--session_service_uri`` and ``--memory_service_uri`` through its service
registry. It discovers custom schemes only from the agents directory, never
from installed packages (it reads no entry points): a ``services.py`` there
runs before the services are built, so one line registers abathur::

    # my_agents/services.py
    from abathur.integrations.adk import register

    register()

and then::

    adk web --session_service_uri abathur:///srv/agent.db \\
            --memory_service_uri abathur:///srv/agent.db my_agents

A ``services.yaml`` naming the classes works too; ADK then calls
``AbathurSessionService(uri=..., agents_dir=...)``, which the services accept::

    services:
      - {scheme: abathur, type: session,
         class: abathur.integrations.adk.AbathurSessionService}
      - {scheme: abathur, type: memory,
         class: abathur.integrations.adk.AbathurMemoryService}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._store import SCHEME
from .memory import AbathurMemoryService
from .sessions import AbathurSessionService

if TYPE_CHECKING:
    from google.adk.cli.service_registry import ServiceRegistry

__all__ = ["memory_service_factory", "register", "session_service_factory"]


def session_service_factory(uri: str, **kwargs: Any) -> AbathurSessionService:
    """Build an :class:`AbathurSessionService` for ADK's service registry.

    Args:
        uri: an ``abathur:`` URI (see :func:`~abathur.integrations.adk.parse_uri`).
        **kwargs: what ADK passes along: ``agents_dir`` (unused) and the
            session database kwargs, taken as abathur settings.

    Returns:
        The service; the database opens on its first call.

    Raises:
        InvalidInputError: a bad URI or bad settings.

    Example:
        >>> from abathur.integrations.adk import session_service_factory
        >>> session_service_factory("abathur:///srv/agent.db", agents_dir=".").settings.db
        PosixPath('/srv/agent.db')
    """
    return AbathurSessionService(uri=uri, **kwargs)


def memory_service_factory(uri: str, **kwargs: Any) -> AbathurMemoryService:
    """Build an :class:`AbathurMemoryService` for ADK's service registry.

    Args:
        uri: an ``abathur:`` URI (see :func:`~abathur.integrations.adk.parse_uri`).
        **kwargs: what ADK passes along: ``agents_dir`` (unused).

    Returns:
        The service; the database opens on its first call.

    Raises:
        InvalidInputError: a bad URI or bad settings.

    Example:
        >>> from abathur.integrations.adk import memory_service_factory
        >>> memory_service_factory("abathur:agent.db?embedder=none").settings.embedder
        'none'
    """
    return AbathurMemoryService(uri=uri, **kwargs)


def register(registry: ServiceRegistry | None = None) -> None:
    """Register the ``abathur`` scheme for session and memory services.

    Idempotent. Call it from the agents directory's ``services.py`` (see the
    module docstring), or before building services yourself.

    Args:
        registry: the registry; ADK's process-wide one when not given.

    Example:
        >>> from google.adk.cli.service_registry import get_service_registry
        >>> from abathur.integrations.adk import AbathurSessionService, register
        >>> register()
        >>> service = get_service_registry().create_session_service("abathur:///srv/agent.db")
        >>> isinstance(service, AbathurSessionService), str(service.settings.db)
        (True, '/srv/agent.db')
    """
    if registry is None:
        from google.adk.cli.service_registry import get_service_registry

        registry = get_service_registry()
    registry.register_session_service(SCHEME, session_service_factory)
    registry.register_memory_service(SCHEME, memory_service_factory)

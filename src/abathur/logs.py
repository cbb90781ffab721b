"""Logging set-up. Library modules only call ``structlog.get_logger(__name__)``;
the CLI entry point or the host application calls :func:`configure` once.

Example:
    >>> from abathur import logs
    >>> logs.configure(json=True)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure", "redact_secrets"]

# Keys whose values never reach a log line, whatever the level.
_SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "authorization")


def redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: replace the value of any key that looks like a credential."""
    for key in event_dict:
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "[redacted]"
    return event_dict


def configure(*, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog for abathur.

    Args:
        json: JSON lines (production) when true, key=value when false; ``None``
            picks JSON unless stderr is a terminal.
        level: the lowest level written.
    """
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

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

from abathur.redact import redact

__all__ = ["configure", "redact_secrets"]

# Keys whose values never reach a log line, whatever the level.
_SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "authorization")


def redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: hide credentials, whatever key or text they hide in.

    The value of a key that looks like a credential's (``password``,
    ``api_key``...) is replaced whole; every other string value, the event and
    a formatted traceback included, goes through :func:`abathur.redact.redact`
    (a URL's userinfo, an ``Authorization`` header, ``token=...``).

    Example:
        >>> from abathur.logs import redact_secrets
        >>> redact_secrets(None, "info", {"event": "x", "password": "p", "url": "http://u:p@h"})
        {'event': 'x', 'password': '[redacted]', 'url': 'http://***@h'}
    """
    for key, value in event_dict.items():
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = redact(value)
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
            # After format_exc_info, so a traceback's text is redacted too.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

"""Logging set-up: quiet as a library, readable from the CLI.

Library modules only call ``structlog.get_logger(__name__)``. abathur never
configures output for its host: on import (:func:`install_library_defaults`,
unless structlog was configured already) the loggers named ``abathur...`` send
their records to the standard :mod:`logging` module, to
``logging.getLogger("abathur...")``, where a :class:`logging.NullHandler` keeps
them silent until the host configures logging (``logging.basicConfig()`` is
enough). Loggers with other names keep structlog's own defaults, so a host
that uses structlog unconfigured sees no change. Only the ``abathur`` command,
or a host that wants abathur's key=value / JSON lines, calls :func:`configure`.

A record sent to :mod:`logging` reads ``event key=value ...`` (values as JSON,
secrets redacted, a traceback on the lines after), and its ``abathur``
attribute holds the same fields as a dict, for a host's own formatter.

Example:
    >>> import logging
    >>> from abathur import logs
    >>> logging.getLogger("abathur").handlers
    [<NullHandler (NOTSET)>]
    >>> logs.configure(json=True)  # the CLI's choice: JSON lines on stderr
"""

from __future__ import annotations

import json as _json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from abathur.redact import redact

__all__ = ["configure", "install_library_defaults", "redact_secrets"]

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


# The root of abathur's loggers; its NullHandler is the library's only handler.
LOGGER_NAME = "abathur"


def _is_ours(logger: object) -> bool:
    return isinstance(logger, logging.Logger) and (
        logger.name == LOGGER_NAME or logger.name.startswith(LOGGER_NAME + ".")
    )


class _LibraryLoggerFactory:
    """``abathur...`` names get a stdlib logger; any other name structlog's default."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def __call__(self, *args: Any) -> Any:
        name = args[0] if args and isinstance(args[0], str) else None
        if name is not None and (name == LOGGER_NAME or name.startswith(LOGGER_NAME + ".")):
            return logging.getLogger(name)
        return self.fallback(*args)


def _render_for_logging(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of a stdlib logging call: ``event key=value`` as the message."""
    fields = dict(event_dict)
    traceback = fields.pop("exception", None)
    event = str(fields.pop("event", ""))
    pairs = " ".join(
        f"{key}={_json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in fields.items()
    )
    message = f"{event} {pairs}" if pairs else event
    if traceback:
        message = f"{message}\n{traceback}"
    return {"msg": message, "extra": {LOGGER_NAME: {"event": event, **fields}}}


class _Route:
    """Processor: abathur's records take the stdlib chain, others structlog's default one."""

    def __init__(self, ours: list[Any], others: list[Any]) -> None:
        self.ours = ours
        self.others = others

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        for processor in self.ours if _is_ours(logger) else self.others:
            event_dict = processor(logger, method, event_dict)
        return event_dict


def install_library_defaults() -> None:
    """Route abathur's structlog loggers to :mod:`logging`, silent by default.

    Called when :mod:`abathur` is imported; it changes nothing if structlog is
    configured already (by the host, or by :func:`configure`): then abathur's
    records follow that configuration. Calling it again restores the defaults
    (tests that reset structlog do).

    Example:
        >>> import logging, structlog
        >>> from abathur import logs
        >>> structlog.reset_defaults(); logs.install_library_defaults()
        >>> structlog.get_logger("abathur.demo").info("silent")  # NullHandler: nothing
    """
    root = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    if structlog.is_configured():
        return
    default = structlog.get_config()
    ours = [
        structlog.stdlib.filter_by_level,  # first: a record no handler wants costs nothing more
        structlog.contextvars.merge_contextvars,
        # After format_exc_info, so a traceback's text is redacted too.
        structlog.processors.format_exc_info,
        redact_secrets,
        _render_for_logging,
    ]
    structlog.configure(
        processors=[_Route(ours, list(default["processors"]))],
        wrapper_class=default["wrapper_class"],
        context_class=default["context_class"],
        logger_factory=_LibraryLoggerFactory(default["logger_factory"]),
        cache_logger_on_first_use=False,
    )

"""What the HTTP embedders (:mod:`~abathur.embeddings.ollama`,
:mod:`~abathur.embeddings.openai_compat`) share: argument checks, the TLS
context, the retry schedule and the unwrapping of a failed batch group.

Each provider keeps what is its own: the URL rules, the request, how it sorts
a server's answer into "retry" and "give up", and the wording of its messages.

Example:
    >>> from abathur.embeddings.http import backoff, check_int, check_texts
    >>> check_int("batch_size", 32, low=1)
    32
    >>> check_texts(("a", "b"))
    ['a', 'b']
    >>> 0.5 <= backoff(2, base_s=0.5, max_s=8.0) <= 1.0
    True
"""

from __future__ import annotations

import functools
import math
import random
import ssl
from collections.abc import Sequence

import httpx
import numpy as np
from numpy.typing import NDArray

from abathur.errors import EmbedderError, InvalidInputError

__all__ = [
    "RETRYABLE_4XX",
    "Transient",
    "backoff",
    "check_int",
    "check_seconds",
    "check_texts",
    "estimate_tokens",
    "first_error",
    "tls_context",
    "unit_rows",
]

#: The 4xx answers that mean "not now" rather than "never" (408, 429).
RETRYABLE_4XX = frozenset({408, 429})


class Transient(Exception):
    """A failure that retrying may fix; carries the reason and a server-given wait.

    Never reaches a caller: after the last attempt the provider raises
    :class:`~abathur.errors.EmbedderUnavailableError` with this reason.

    Example:
        >>> from abathur.embeddings.http import Transient
        >>> failure = Transient("HTTP 503: busy", retry_after=2.0)
        >>> str(failure), failure.retry_after
        ('HTTP 503: busy', 2.0)
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def check_int(what: str, value: object, *, low: int) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) of at least ``low``.

    Raises:
        InvalidInputError: naming ``what``, the value and the rule.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {value!r}")
    if value < low:
        raise InvalidInputError(f"{what} must be at least {low}, got {value}")
    return value


def check_seconds(what: str, value: object, *, positive: bool) -> float:
    """``value`` as a float of seconds: finite, at least 0 (above 0 if ``positive``).

    Raises:
        InvalidInputError: naming ``what``, the value and the rule.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidInputError(
            f"{what} must be {'greater than' if positive else 'at least'} 0, got {value}"
        )
    return float(value)


def check_texts(texts: object) -> list[str]:
    """The texts as a list, or :class:`~abathur.errors.InvalidInputError` naming what is wrong."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise InvalidInputError(
            f"texts must be a list of strings, got {type(texts).__name__}"
            + (" (wrap a single text in a list)" if isinstance(texts, str) else "")
        )
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{index}] is {type(text).__name__}, not str")
    return items


def estimate_tokens(texts: Sequence[str]) -> int:
    """About four characters a token: the count when a server reports none."""
    return sum(math.ceil(len(text) / 4) for text in texts)


def backoff(attempt: int, *, base_s: float, max_s: float) -> float:
    """The wait before retry number ``attempt`` (from 1): doubling from ``base_s``, at most
    ``max_s``, half of it random so clients that failed together do not retry together."""
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def first_error(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a failed group of batch requests: ours if there is one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [failures]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack[:0] = list(item.exceptions)
        else:
            leaves.append(item)
    for leaf in leaves:
        if isinstance(leaf, EmbedderError):
            return leaf
    return leaves[0] if leaves else failures


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS set-up, built once: it costs ~35 ms, and each call opens a client."""
    return httpx.create_ssl_context()


def unit_rows(matrix: NDArray[np.float64], *, where: str) -> list[list[float]]:
    """Each row of ``matrix`` scaled to length 1.

    Raises:
        EmbedderError: a row is all zeros or holds a non-finite number;
            ``where`` names the server and model in the message.

    Example:
        >>> import numpy as np
        >>> from abathur.embeddings.http import unit_rows
        >>> unit_rows(np.array([[3.0, 4.0]]), where="the server")
        [[0.6, 0.8]]
    """
    norms = np.linalg.norm(matrix, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise EmbedderError(f"{where} returned a zero or non-finite vector")
    rows: list[list[float]] = (matrix / norms[:, None]).tolist()
    return rows

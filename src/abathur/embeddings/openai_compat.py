"""An OpenAI-compatible provider: vectors from ``POST {base_url}/embeddings``.

Many servers speak this API: OpenAI itself, vLLM, llama.cpp's ``llama-server``,
LiteLLM, LocalAI, Text Embeddings Inference, and Ollama's ``/v1``. One server
can embed for every process on a machine (see docs/guides/memory-per-process.md).

:class:`OpenAICompatEmbedder` sends ``{"model": ..., "input": [...]}`` in
batches (``batch_size`` texts per request, at most ``concurrency`` requests at
once), reads ``{"data": [{"embedding": [...], "index": i}], "usage":
{"prompt_tokens": n}}``, and returns unit-length vectors in input order. The
usage ledger records provider ``openai`` and the model, so
``Settings.prices["openai/<model>"]`` prices the calls.

Failures come back as abathur errors only, as for the Ollama provider:

- connection refused or dropped, a timeout, HTTP 5xx, 408 or 429: retried with
  exponential backoff and jitter (a 429's ``Retry-After`` is honoured up to
  ``max_backoff_s``), then :class:`~abathur.errors.EmbedderUnavailableError`;
- HTTP 401/403 (the key), 404 (the model or the URL), any other 4xx, or an
  answer that is not an embeddings response: :class:`~abathur.errors.EmbedderError`
  at once.

The API key is sent as ``Authorization: Bearer ...`` and never appears in a
message, a log line or a repr; text the server sends back goes through
:func:`abathur.redact.echoed` (key masked, control characters removed, 200
characters at most).

Example:
    >>> from abathur.embeddings.openai_compat import OpenAICompatEmbedder
    >>> e = OpenAICompatEmbedder("text-embedding-3-small", api_key="sk-secret")
    >>> e.name, e.provider, e.base_url
    ('openai:text-embedding-3-small', 'openai', 'https://api.openai.com/v1')
    >>> "sk-secret" in repr(e)
    False
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import structlog

from abathur.embeddings.base import EmbedResult
from abathur.embeddings.http import (
    RETRYABLE_4XX,
    Transient,
    backoff,
    check_int,
    check_seconds,
    check_texts,
    estimate_tokens,
    first_error,
    tls_context,
    unit_rows,
)
from abathur.errors import EmbedderError, EmbedderUnavailableError, InvalidInputError
from abathur.redact import echoed, redact_url

if TYPE_CHECKING:
    from abathur.config import Settings

__all__ = ["OpenAICompatEmbedder"]

log = structlog.get_logger(__name__)


class OpenAICompatEmbedder:
    """Embeddings from a server that speaks OpenAI's ``/embeddings`` API.

    Args:
        model: the model name the server knows (``text-embedding-3-small``,
            ``nomic-embed-text``, ``BAAI/bge-small-en-v1.5``...).
        base_url: the API root, the part before ``/embeddings``
            (``https://api.openai.com/v1``, ``http://127.0.0.1:8080/v1``).
        api_key: sent as a bearer token; ``None`` sends no ``Authorization``
            header (most local servers need none).
        dims: the vector length wanted, sent as ``dimensions`` (models that
            support it return shorter vectors) and enforced on every answer.
            ``None`` sends nothing and learns the length from the first answer.
        batch_size: texts per request.
        concurrency: requests in flight at once, per call.
        timeout_s: client timeout (connect, read, write) of each request.
        retries: further attempts of a request after a transient failure.
        backoff_s: the first retry waits about this long; each next one twice as
            long (with jitter), at most ``max_backoff_s``.
        max_backoff_s: the longest wait between two attempts.

    Raises:
        InvalidInputError: an argument is out of range or of the wrong type.

    Example:
        >>> import asyncio
        >>> from abathur.embeddings.openai_compat import OpenAICompatEmbedder
        >>> from abathur.errors import EmbedderUnavailableError
        >>> e = OpenAICompatEmbedder("m", base_url="http://127.0.0.1:9/v1", retries=0)
        >>> try:
        ...     asyncio.run(e.embed(["hello"]))
        ... except EmbedderUnavailableError as err:
        ...     print(err.code, err.retryable)
        embedder.unavailable True
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dims: int | None = None,
        batch_size: int = 64,
        concurrency: int = 2,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip() or model != model.strip():
            raise InvalidInputError(
                f"openai model must be a non-blank name without surrounding spaces, got {model!r}"
            )
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = _check_base_url(base_url)
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise InvalidInputError("api_key must be a non-blank string or None")
        self._api_key = api_key
        if dims is not None:
            check_int("dims", dims, low=1)
        self._dims = dims
        self._wants_dims = dims
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.concurrency = check_int("concurrency", concurrency, low=1)
        self.retries = check_int("retries", retries, low=0)
        self.timeout_s = check_seconds("timeout_s", timeout_s, positive=True)
        self.backoff_s = check_seconds("backoff_s", backoff_s, positive=False)
        self.max_backoff_s = check_seconds("max_backoff_s", max_backoff_s, positive=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAICompatEmbedder:
        """Build the embedder ``Settings.openai_*`` describe.

        Args:
            settings: the database's settings (``openai_base_url``, ``openai_model``,
                ``openai_api_key``, ``openai_dims``, ``openai_timeout_s``,
                ``openai_batch_size``, ``openai_concurrency``, ``openai_retries``).

        Returns:
            The embedder.

        Raises:
            InvalidInputError: a setting is not usable (e.g. a base URL that is not http(s)).

        Example:
            >>> from abathur.config import Settings
            >>> from abathur.embeddings.openai_compat import OpenAICompatEmbedder
            >>> s = Settings(openai_base_url="http://127.0.0.1:8080/v1/", openai_model="bge")
            >>> e = OpenAICompatEmbedder.from_settings(s)
            >>> e.name, e.base_url, e.batch_size
            ('openai:bge', 'http://127.0.0.1:8080/v1', 64)
        """
        key = settings.openai_api_key
        return cls(
            settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            dims=settings.openai_dims,
            batch_size=settings.openai_batch_size,
            concurrency=settings.openai_concurrency,
            timeout_s=settings.openai_timeout_s,
            retries=settings.openai_retries,
        )

    @property
    def dims(self) -> int:
        """Length of every vector; 0 until the first answer when ``dims`` was not given."""
        return self._dims or 0

    def __repr__(self) -> str:
        return (
            f"OpenAICompatEmbedder(model={self.model!r}, base_url={self.base_url!r}, "
            f"dims={self.dims})"
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in input order.

        Args:
            texts: the texts (a list or tuple of ``str``; an empty one makes no request).

        Returns:
            ``len(texts)`` vectors of ``dims`` floats each.

        Raises:
            InvalidInputError: ``texts`` is a bare string or holds a non-string.
            EmbedderUnavailableError: the server could not be reached, timed out,
                dropped the connection or answered 5xx/408/429, on every attempt.
            EmbedderError: the key or the model was refused, or the answer broke
                the API's promises.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.openai_compat import OpenAICompatEmbedder
            >>> asyncio.run(OpenAICompatEmbedder("m").embed([]))
            []
        """
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        """Like :meth:`embed`, also returning the tokens the server counted.

        Tokens are the sum of ``usage.prompt_tokens`` (or ``total_tokens``) over
        the requests; when a server leaves usage out, that batch's tokens are
        estimated (about four characters a token) and ``is_token_estimate`` is true.

        Args:
            texts: the texts (a list or tuple of ``str``).

        Returns:
            :class:`~abathur.embeddings.base.EmbedResult` with the vectors and tokens.

        Raises:
            InvalidInputError: ``texts`` is a bare string or holds a non-string.
            EmbedderUnavailableError: as for :meth:`embed`.
            EmbedderError: as for :meth:`embed`.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.openai_compat import OpenAICompatEmbedder
            >>> asyncio.run(OpenAICompatEmbedder("m").embed_with_usage(()))
            EmbedResult(vectors=[], tokens=0, is_token_estimate=False)
        """
        items = check_texts(texts)
        if not items:
            return EmbedResult(vectors=[], tokens=0)
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        # One client per call: its connection pool belongs to the running event loop.
        async with httpx.AsyncClient(
            timeout=self.timeout_s, headers=headers, verify=tls_context()
        ) as client:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._embed_batch(client, b, gate)) for b in batches]
            except BaseExceptionGroup as failures:
                raise first_error(failures) from None
        vectors: list[list[float]] = []
        tokens = 0
        is_estimate = False
        for batch, task in zip(batches, tasks, strict=True):
            batch_vectors, counted = task.result()
            vectors.extend(batch_vectors)
            if counted is None:
                is_estimate = True
                counted = estimate_tokens(batch)
            tokens += counted
        log.debug(
            "embedder.openai.embedded",
            base_url=self.base_url,
            model=self.model,
            texts=len(items),
            batches=len(batches),
            tokens=tokens,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return EmbedResult(vectors=vectors, tokens=tokens, is_token_estimate=is_estimate)

    async def _embed_batch(
        self, client: httpx.AsyncClient, batch: list[str], gate: asyncio.Semaphore
    ) -> tuple[list[list[float]], int | None]:
        """One request with retries; the vectors and the server's token count."""
        async with gate:
            attempts = self.retries + 1
            for attempt in range(1, attempts + 1):
                try:
                    body = await self._request(client, batch)
                except Transient as transient:
                    if attempt == attempts:
                        log.warning(
                            "embedder.openai.unavailable",
                            base_url=self.base_url,
                            model=self.model,
                            attempts=attempts,
                            error=str(transient),
                        )
                        raise EmbedderUnavailableError(
                            f"the embeddings server at {self.base_url} (model {self.model!r}) "
                            f"is unavailable after {attempts} attempt"
                            f"{'s' if attempts > 1 else ''}: {transient}"
                        ) from None
                    delay = self._backoff(attempt, transient.retry_after)
                    log.warning(
                        "embedder.openai.retry",
                        base_url=self.base_url,
                        model=self.model,
                        attempt=attempt,
                        attempts=attempts,
                        delay_s=round(delay, 3),
                        error=str(transient),
                    )
                    await asyncio.sleep(delay)
                else:
                    return self._vectors(body, len(batch)), _tokens(body)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff_s, retry_after)
        return backoff(attempt, base_s=self.backoff_s, max_s=self.max_backoff_s)

    async def _request(self, client: httpx.AsyncClient, batch: list[str]) -> Any:
        """Send one batch; the decoded JSON answer, or one of our failures."""
        payload: dict[str, Any] = {"model": self.model, "input": batch}
        if self._wants_dims is not None:
            payload["dimensions"] = self._wants_dims
        url = f"{self.base_url}/embeddings"
        try:
            response = await client.post(url, json=payload)
        except httpx.TimeoutException as exc:
            raise Transient(
                f"no answer within {self.timeout_s:g}s ({type(exc).__name__})"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # Refused or dropped connections, reads and writes cut short: the
            # server may be restarting, so this is worth another attempt.
            raise Transient(
                f"connection failed ({type(exc).__name__}: {self._echo(exc) or 'no detail'})"
            ) from None
        except httpx.HTTPError as exc:
            raise EmbedderError(
                f"cannot send a request to {self.base_url}: {type(exc).__name__}: {self._echo(exc)}"
            ) from None
        if response.status_code != 200:
            raise self._refused(response)
        try:
            return response.json()
        except ValueError:
            raise EmbedderError(
                f"the server at {self.base_url} (model {self.model!r}) answered 200 with a "
                f"body that is not JSON: {self._echo(response.text)}"
            ) from None

    def _refused(self, response: httpx.Response) -> Exception:
        status, detail = response.status_code, self._echo(_error_text(response))
        if status >= 500 or status in RETRYABLE_4XX:
            return Transient(f"HTTP {status}: {detail}", _retry_after(response))
        where = f"the embeddings server at {self.base_url}"
        if status in (401, 403):
            return EmbedderError(
                f"{where} refused the API key (HTTP {status}: {detail}): check "
                "ABATHUR_OPENAI_API_KEY"
            )
        if status == 404:
            return EmbedderError(
                f"{where} has no model {self.model!r} or no /embeddings route (HTTP 404: "
                f"{detail}): check ABATHUR_OPENAI_MODEL and ABATHUR_OPENAI_BASE_URL (the "
                "part before /embeddings, often ending in /v1)"
            )
        return EmbedderError(
            f"{where} refused the request for model {self.model!r} (HTTP {status}: {detail})"
        )

    def _echo(self, text: object) -> str:
        """Outside text fit for a message or a log line, the API key masked."""
        return echoed(text, secrets=(self._api_key,) if self._api_key else ())

    def _vectors(self, body: Any, expected: int) -> list[list[float]]:
        """Check an answer against the API's promises and unit-normalise it."""
        where = f"the server at {self.base_url} (model {self.model!r})"
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(
            isinstance(item, dict) and isinstance(item.get("embedding"), list) for item in data
        ):
            raise EmbedderError(
                f"{where} sent an answer that is not an embeddings response "
                '({"data": [{"embedding": [...]}, ...]})'
            )
        if len(data) != expected:
            raise EmbedderError(f"{where} returned {len(data)} vectors for {expected} texts")
        indexes = [item.get("index") for item in data]
        if all(isinstance(i, int) and not isinstance(i, bool) for i in indexes):
            # The API does not promise the order of data, only each item's index.
            if sorted(indexes) != list(range(expected)):
                raise EmbedderError(f"{where} returned indexes {indexes} for {expected} texts")
            data = sorted(data, key=lambda item: item["index"])
        rows = [item["embedding"] for item in data]
        try:
            matrix = np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError):
            raise EmbedderError(
                f"{where} returned vectors of different lengths or non-numbers in one answer"
            ) from None
        width = matrix.shape[1] if matrix.ndim == 2 else 0
        if width == 0:
            raise EmbedderError(f"{where} returned empty vectors")
        if self._dims is None:
            self._dims = width
        elif width != self._dims:
            raise EmbedderError(
                f"{where} returned {width}-d vectors, expected {self._dims}-d: the model "
                "changed on the server or does not support those dimensions; "
                "reindex to switch models"
            )
        return unit_rows(matrix, where=where)


def _tokens(body: dict[str, Any]) -> int | None:
    """The prompt tokens an answer reports, or None when it reports none."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "total_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def _error_text(response: httpx.Response) -> str:
    """The message of an error answer: OpenAI's ``{"error": {"message"}}`` or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str):
        return message
    if isinstance(error, str):
        return error
    return response.text


def _retry_after(response: httpx.Response) -> float | None:
    """A ``Retry-After`` in seconds, when the server sent a usable one."""
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _check_base_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        got = repr(url) if isinstance(url, str) else type(url).__name__
        raise InvalidInputError(f"openai base_url must be a non-blank URL, got {got}")
    text = url.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidInputError(
            f"openai base_url {redact_url(text)!r} is not a valid URL"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"openai base_url {redact_url(text)!r} must be an http:// or https:// URL "
            "with a host name"
        )
    if parts.username is not None or parts.query or parts.fragment:
        # Credentials belong in api_key, which is sent as a header and masked.
        raise InvalidInputError(
            f"openai base_url {redact_url(text)!r} must carry no user, password, query or "
            "fragment: put the key in ABATHUR_OPENAI_API_KEY"
        )
    return text

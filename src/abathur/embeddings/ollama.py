"""The Ollama provider: vectors from ``POST /api/embed`` of a local or remote ``ollama serve``.

:class:`OllamaEmbedder` sends texts in batches (``batch_size`` per request, at
most ``concurrency`` requests at once) through the official client
(``ollama.AsyncClient.embed``) with an explicit ``truncate`` and
``keep_alive`` and a client timeout, and returns the vectors in input order,
unit-normalised.

Failures come back as abathur errors only, sorted by what retrying can change:

- connection refused or dropped, a timeout, HTTP 5xx, 408 or 429: retried with
  exponential backoff and jitter, then :class:`~abathur.errors.EmbedderUnavailableError`
  (writes still succeed; search falls back to keyword).
- the model is not pulled (404), a request the server refuses (other 4xx, e.g.
  an input longer than the context with ``truncate=False``), or a response
  that is not what the API promises (wrong number of vectors, vectors of
  different or unexpected lengths): :class:`~abathur.errors.EmbedderError`
  at once, with what to do about it.

A host may carry credentials (``https://user:password@ollama.example``): they
are sent as HTTP basic auth and never appear in a log line, an error or a repr.
Reserved characters in them (``#``, ``/``, ``?``, ``@``...) must be
percent-encoded; a host URL that cannot be parsed is an
:class:`~abathur.errors.InvalidInputError` that shows it as
``http://***@host:port``. Text from the server or the client (an error body,
a foreign exception's message) reaches messages and logs only through
:func:`abathur.redact.echoed`: credentials masked (the host's password, an
``Authorization`` header a proxy echoes back, ``OLLAMA_API_KEY``), control
characters removed, 200 characters at most.

Example:
    >>> from abathur.embeddings.ollama import OllamaEmbedder
    >>> e = OllamaEmbedder("nomic-embed-text", host="https://bob:s3cret@ollama.example:8443")
    >>> e.name, e.host
    ('ollama:nomic-embed-text', 'https://ollama.example:8443')
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx
import numpy as np
import ollama
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

__all__ = ["OllamaEmbedder"]

log = structlog.get_logger(__name__)

# Go's time.ParseDuration grammar: Ollama refuses any other keep_alive string with 400.
_GO_DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")
# RFC 3986: the authority of a URL ends at the first of these.
_AUTHORITY_END = re.compile(r"[/?#]")


class OllamaEmbedder:
    """Embeddings from an Ollama server.

    Args:
        model: an embedding model pulled on the server (``nomic-embed-text``,
            ``all-minilm``, ``mxbai-embed-large``...).
        host: the server's URL, e.g. ``http://127.0.0.1:11434``; may carry
            ``user:password@`` (sent as basic auth, never logged).
        dims: the vector length wanted. Sent as Ollama's ``dimensions`` (models
            that support it return shorter vectors) and enforced on every
            response. ``None`` learns it from the first response and enforces
            it from then on.
        batch_size: texts per request.
        concurrency: requests in flight at once, per call.
        timeout_s: client timeout (connect, read, write) of each request.
        retries: further attempts of a request after a transient failure.
        keep_alive: how long the server keeps the model loaded after a request:
            a Go duration (``"5m"``, ``"1h30m"``, ``"0"``) or seconds (a number,
            or a numeric string such as ``"-1"``; negative means forever).
        truncate: let the server cut inputs longer than the model's context;
            with ``False`` such an input fails with :class:`EmbedderError`.
        backoff_s: the first retry waits about this long; each next one twice as
            long (with jitter), at most ``max_backoff_s``.
        max_backoff_s: the longest wait between two attempts.

    Raises:
        InvalidInputError: an argument is out of range or of the wrong type.

    Example:
        >>> import asyncio
        >>> from abathur.embeddings.ollama import OllamaEmbedder
        >>> from abathur.errors import EmbedderUnavailableError
        >>> e = OllamaEmbedder("nomic-embed-text", host="http://127.0.0.1:9", retries=0)
        >>> e.name, e.provider, e.model, e.dims
        ('ollama:nomic-embed-text', 'ollama', 'nomic-embed-text', 0)
        >>> try:
        ...     asyncio.run(e.embed(["hello"]))
        ... except EmbedderUnavailableError as err:
        ...     print(err.code, err.retryable)
        embedder.unavailable True
    """

    provider = "ollama"

    def __init__(
        self,
        model: str,
        *,
        host: str = "http://127.0.0.1:11434",
        dims: int | None = None,
        batch_size: int = 32,
        concurrency: int = 2,
        timeout_s: float = 30.0,
        retries: int = 3,
        keep_alive: str | float = "5m",
        truncate: bool = True,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip() or model != model.strip():
            raise InvalidInputError(
                f"ollama model must be a non-blank name without surrounding spaces, got {model!r}"
            )
        self.model = model
        self.name = f"ollama:{model}"
        self.host, self._auth, self._secrets = _split_host(host)
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
        self.keep_alive = _check_keep_alive(keep_alive)
        if not isinstance(truncate, bool):
            raise InvalidInputError(f"truncate must be True or False, got {truncate!r}")
        self.truncate = truncate

    @classmethod
    def from_settings(cls, settings: Settings) -> OllamaEmbedder:
        """Build the embedder ``Settings.ollama_*`` describe.

        Args:
            settings: the database's settings (``ollama_host``, ``ollama_model``,
                ``ollama_timeout_s``, ``ollama_batch_size``, ``ollama_concurrency``,
                ``ollama_retries``, ``ollama_keep_alive``, ``ollama_truncate``).

        Returns:
            An embedder that learns ``dims`` from the server's first answer.

        Raises:
            InvalidInputError: a setting is not usable (e.g. a bad ``ollama_keep_alive``).

        Example:
            >>> from abathur.config import Settings
            >>> from abathur.embeddings.ollama import OllamaEmbedder
            >>> e = OllamaEmbedder.from_settings(Settings(ollama_model="all-minilm"))
            >>> e.name, e.batch_size, e.keep_alive, e.truncate
            ('ollama:all-minilm', 32, '5m', True)
        """
        return cls(
            settings.ollama_model,
            host=settings.ollama_host,
            batch_size=settings.ollama_batch_size,
            concurrency=settings.ollama_concurrency,
            timeout_s=settings.ollama_timeout_s,
            retries=settings.ollama_retries,
            keep_alive=settings.ollama_keep_alive,
            truncate=settings.ollama_truncate,
        )

    @property
    def dims(self) -> int:
        """Length of every vector; 0 until the first answer when ``dims`` was not given."""
        return self._dims or 0

    def __repr__(self) -> str:
        return f"OllamaEmbedder(model={self.model!r}, host={self.host!r}, dims={self.dims})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in input order.

        Args:
            texts: the texts (a list or tuple of ``str``; an empty one makes no request).

        Returns:
            ``len(texts)`` vectors of ``dims`` floats each.

        Raises:
            InvalidInputError: ``texts`` is a bare string or holds a non-string.
            EmbedderUnavailableError: the server could not be reached, timed out,
                dropped the connection or answered 5xx, on every attempt.
            EmbedderError: the model is not pulled, the server refused the
                request, or its answer broke the API's promises.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.ollama import OllamaEmbedder
            >>> e = OllamaEmbedder("nomic-embed-text", host="http://127.0.0.1:9", retries=0)
            >>> asyncio.run(e.embed([]))
            []
        """
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        """Like :meth:`embed`, also returning the tokens the server counted.

        Tokens are the sum of Ollama's ``prompt_eval_count`` over the requests;
        if the server leaves it out, the tokens of that batch are estimated
        (about four characters a token) and ``is_token_estimate`` is true.

        Args:
            texts: the texts (a list or tuple of ``str``).

        Returns:
            :class:`~abathur.embeddings.base.EmbedResult` with the vectors and tokens.

        Raises:
            InvalidInputError: ``texts`` is a bare string or holds a non-string.
            EmbedderUnavailableError: the server could not be reached, timed out,
                dropped the connection or answered 5xx, on every attempt.
            EmbedderError: the model is not pulled, the server refused the
                request, or its answer broke the API's promises.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.ollama import OllamaEmbedder
            >>> e = OllamaEmbedder("nomic-embed-text")
            >>> asyncio.run(e.embed_with_usage(()))
            EmbedResult(vectors=[], tokens=0, is_token_estimate=False)
        """
        items = check_texts(texts)
        if not items:
            return EmbedResult(vectors=[], tokens=0)
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.concurrency)
        # One client per call: its connection pool belongs to the running event
        # loop, and closing it here means no socket outlives the call.
        try:
            client = ollama.AsyncClient(
                host=self.host, timeout=self.timeout_s, auth=self._auth, verify=tls_context()
            )
        except Exception as exc:
            raise EmbedderError(
                f"cannot use ollama host {self.host}: {type(exc).__name__}: {self._echo(exc)}"
            ) from None
        async with client:
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
            "embedder.ollama.embedded",
            host=self.host,
            model=self.model,
            texts=len(items),
            batches=len(batches),
            tokens=tokens,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return EmbedResult(vectors=vectors, tokens=tokens, is_token_estimate=is_estimate)

    async def _embed_batch(
        self, client: ollama.AsyncClient, batch: list[str], gate: asyncio.Semaphore
    ) -> tuple[list[list[float]], int | None]:
        """One request with retries; the vectors and the server's token count."""
        async with gate:
            attempts = self.retries + 1
            for attempt in range(1, attempts + 1):
                try:
                    response = await self._request(client, batch)
                except Transient as transient:
                    if attempt == attempts:
                        log.warning(
                            "embedder.ollama.unavailable",
                            host=self.host,
                            model=self.model,
                            attempts=attempts,
                            error=str(transient),
                        )
                        raise EmbedderUnavailableError(
                            f"ollama at {self.host} (model {self.model!r}) is unavailable after "
                            f"{attempts} attempt{'s' if attempts > 1 else ''}: {transient}"
                        ) from None
                    delay = backoff(attempt, base_s=self.backoff_s, max_s=self.max_backoff_s)
                    log.warning(
                        "embedder.ollama.retry",
                        host=self.host,
                        model=self.model,
                        attempt=attempt,
                        attempts=attempts,
                        delay_s=round(delay, 3),
                        error=str(transient),
                    )
                    await asyncio.sleep(delay)
                else:
                    return self._vectors(response, len(batch)), response.prompt_eval_count
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _request(self, client: ollama.AsyncClient, batch: list[str]) -> ollama.EmbedResponse:
        """Send one batch; translate every client failure into ours."""
        try:
            return await client.embed(
                model=self.model,
                input=batch,
                truncate=self.truncate,
                keep_alive=self.keep_alive,
                dimensions=self._wants_dims,
            )
        except ollama.ResponseError as exc:
            raise self._refused(exc) from None
        except httpx.TimeoutException as exc:
            raise Transient(
                f"no answer within {self.timeout_s:g}s ({type(exc).__name__})"
            ) from None
        except ConnectionError as exc:
            # The client hides httpx's ConnectError behind a generic message;
            # the original (e.g. "Connection refused") is the useful part.
            raise Transient(f"cannot connect ({self._echo(_connect_failure(exc))})") from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise EmbedderError(
                f"cannot send a request to ollama at {self.host}: {type(exc).__name__}: "
                f"{self._echo(exc)}"
            ) from None
        except httpx.TransportError as exc:
            # RemoteProtocolError ("Server disconnected without sending a
            # response"), ReadError, WriteError: the connection broke mid-way.
            raise Transient(
                f"connection lost ({type(exc).__name__}: {self._echo(exc) or 'no detail'})"
            ) from None
        except (ValueError, httpx.HTTPError) as exc:
            # json.JSONDecodeError and pydantic's ValidationError are ValueErrors:
            # a 200 whose body is not the EmbedResponse the API documents.
            raise EmbedderError(
                f"ollama at {self.host} sent an answer that is not an embed response "
                f"(model {self.model!r}): {type(exc).__name__}: {self._echo(exc)}"
            ) from None
        except Exception as exc:
            raise EmbedderError(
                f"the ollama client failed talking to {self.host} (model {self.model!r}): "
                f"{type(exc).__name__}: {self._echo(exc)}"
            ) from None

    def _refused(self, exc: ollama.ResponseError) -> Exception:
        status, detail = exc.status_code, self._echo(exc.error)
        if status >= 500 or status in RETRYABLE_4XX:
            return Transient(f"HTTP {status}: {detail}")
        where = f"ollama at {self.host}"
        if status == 404:
            return EmbedderError(
                f"{where} has no model {self.model!r} ({detail}): run `ollama pull {self.model}` "
                "on that host, or choose a model it has"
            )
        if status in (401, 403):
            return EmbedderError(
                f"{where} refused the request (HTTP {status}: {detail}): check the "
                "credentials in the host URL or OLLAMA_API_KEY"
            )
        hint = ""
        if "context length" in detail:
            hint = ": shorten the text, or allow truncate=True"
        return EmbedderError(
            f"{where} refused the request for model {self.model!r} (HTTP {status}: {detail}){hint}"
        )

    def _echo(self, text: object) -> str:
        """Outside text fit for a message or a log line: see :func:`abathur.redact.echoed`."""
        # Read now, as the client does on every call: a key set later is hidden too.
        api_key = os.environ.get("OLLAMA_API_KEY", "")
        return echoed(text, secrets=(*self._secrets, api_key))

    def _vectors(self, response: ollama.EmbedResponse, expected: int) -> list[list[float]]:
        """Check an answer against the API's promises and unit-normalise it."""
        rows = response.embeddings
        where = f"ollama at {self.host} (model {self.model!r})"
        if len(rows) != expected:
            raise EmbedderError(f"{where} returned {len(rows)} vectors for {expected} texts")
        try:
            matrix = np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError):
            lengths = sorted({len(row) for row in rows})
            raise EmbedderError(
                f"{where} returned vectors of different lengths {lengths} in one answer"
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


def _connect_failure(exc: BaseException) -> str:
    """The operating system's reason under a connect failure, e.g. "Connection refused"."""
    reason = ""
    seen: BaseException | None = exc.__context__ or exc
    for _ in range(8):  # the chain is short; bound it anyway
        if seen is None:
            break
        if isinstance(seen, OSError) and isinstance(seen.errno, int):
            reason = os.strerror(seen.errno)
        elif not reason and str(seen):
            reason = str(seen)
        seen = seen.__cause__ or seen.__context__
    return reason or type(exc).__name__


def _split_host(host: object) -> tuple[str, httpx.BasicAuth | None, tuple[str, ...]]:
    """(URL without credentials, basic auth from its userinfo, the secrets to never show)."""
    if not isinstance(host, str) or not host.strip():
        got = repr(host) if isinstance(host, str) else type(host).__name__
        raise InvalidInputError(f"ollama host must be a non-blank URL, got {got}")
    text = host.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        text, scheme, rest = f"http://{text}", "http", text

    def invalid(why: str) -> InvalidInputError:
        # Never urllib's own message: it can quote a piece of the password
        # ("Port could not be cast to integer value as 'S3C'").
        return InvalidInputError(f"ollama host {redact_url(text)!r} is not a valid URL: {why}")

    hint = (
        "percent-encode reserved characters in the user name and password "
        "('#' as %23, '/' as %2F, '?' as %3F, '@' as %40, '%' as %25)"
    )
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    if "@" in rest[len(authority) :]:
        # An '@' past the authority: a password holding an unencoded '/', '?'
        # or '#' cut the authority short. Guessing where it ends could send the
        # password as a host name or a path, so refuse instead.
        raise invalid(f"its user name or password holds a '#', '/' or '?': {hint}")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        why = "the port is not a number from 0 to 65535" if "Port" in str(exc) else "malformed"
        raise invalid(why + (f"; {hint}" if "@" in authority else "")) from None
    if scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"ollama host {redact_url(text)!r} must be an http:// or https:// URL with a host name"
        )
    hostport = parts.netloc.rpartition("@")[2]
    if port is None and not sep:
        # Like `ollama` itself: a bare host name means Ollama's port, not 80.
        hostport = f"{hostport}:11434"
    # Userinfo is dropped from the URL (the client would drop it silently
    # anyway) and sent as basic auth instead; query and fragment mean nothing here.
    shown = f"{scheme}://{hostport}{parts.path.rstrip('/')}"
    auth = None
    secrets: tuple[str, ...] = ()
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = httpx.BasicAuth(user, password)
        # What a server or proxy could echo back: the password as written and
        # decoded, and the Authorization header's token.
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        secrets = (password, parts.password or "", token)
    return shown, auth, secrets


def _check_keep_alive(value: object) -> str | float:
    """A Go duration string, or seconds; a numeric string becomes a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInputError(
            f"keep_alive must be a duration like '5m' or seconds, got {value!r}"
        )
    if isinstance(value, str):
        text = value.strip()
        if _GO_DURATION.fullmatch(text):
            return text
        if _NUMBER.fullmatch(text):
            # Ollama parses a JSON string with Go's ParseDuration, which refuses
            # "-1" ("missing unit"); as a number it means seconds (-1: forever).
            number = float(text)
            return int(number) if number.is_integer() else number
        raise InvalidInputError(
            f"keep_alive {value!r} is not a duration: use e.g. '30s', '5m', '1h', '0', or -1"
        )
    if not math.isfinite(value):
        raise InvalidInputError(f"keep_alive must be finite, got {value!r}")
    return value

"""Redaction: credentials never leave abathur in a message, an error, a log line or JSON.

The one place that knows what a secret looks like (issue 11, item 11). Three
functions, for three kinds of text:

- :func:`redact` for any text: it masks the credentials it recognises (the
  userinfo of a URL, an ``Authorization`` header or a bearer/basic token,
  ``api_key=``-like parameters) and any known secret it is given.
- :func:`redact_url` for a URL shown to a person, valid or not: no userinfo,
  no secret query parameter.
- :func:`echoed` for text that came from outside (an HTTP error body, a
  foreign exception's message): control characters and terminal escapes
  removed, whitespace collapsed, redacted, then capped (200 characters).

Masking errs on the side of hiding: ``key: value`` text whose key merely looks
like a credential's loses its value too. The embedder builds its messages with
these functions, and :func:`abathur.logs.redact_secrets` runs :func:`redact`
over every string a log line carries.

Example:
    >>> from abathur.redact import echoed, redact, redact_url
    >>> redact_url("http://alice:S3C#r/t?x@127.0.0.1:11434")
    'http://***@127.0.0.1:11434'
    >>> redact("proxy echoed Authorization: Basic YWxpY2U6czNjcmV0 and api_key=sk-12345")
    'proxy echoed Authorization: Basic *** and api_key=***'
    >>> echoed("\\x1b[31mboom\\x1b[0m\\r\\n  for hunter2", secrets=["hunter2"])
    'boom for ***'
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Iterable

__all__ = ["BODY_LIMIT", "MASK", "echoed", "redact", "redact_url"]

MASK = "***"
# Characters of outside text kept in a message: enough to see what went wrong,
# not a whole proxy error page.
BODY_LIMIT = 200
# A known secret shorter than this is not searched for: masking every "a" or
# "ab" in a message would hide more than it protects.
_MIN_SECRET = 3

# Bounded repetitions throughout, so a long hostile body cannot make these slow.
# scheme://userinfo@ : up to the last '@' of a run without spaces or quotes, so
# a password holding an unencoded '/', '?' or '#' is covered whole.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://)(?:[^\s@\"'<>`]{0,512}@)+")
# Header-like "Authorization: Basic abc", "x-api-key=abc": the scheme stays.
_HEADER = re.compile(
    r"(?i)(?<![a-z0-9_\-])((?:proxy-)?authorization|x-api-key|api-key|x-auth-token)"
    r"(\"?\s{0,8}[:=]\s{0,8}\"?)"
    r"((?:basic|bearer|digest|token|negotiate|ntlm)\s{1,8})?([^\s\"',;&]{1,4096})"
)
# Cookies: every pair, to the end of the line.
_COOKIE = re.compile(
    r"(?i)(?<![a-z0-9_\-])((?:set-)?cookie)(\"?\s{0,8}[:=]\s{0,8})[^\r\n\"]{1,4096}"
)
# A token after its scheme, wherever it appears.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s{1,8})([A-Za-z0-9._~+/\-]{8,4096}=*)")
# key=value or "key": "value" where the key names a credential.
_PARAM = re.compile(
    r"(?i)(?<![a-z0-9_.\-])([a-z0-9_.\-]{0,64}"
    r"(?:api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|token|secret|password|passwd|"
    r"pwd|passphrase|credentials?|signature|auth))"
    r"(\"?\s{0,8}[=:]\s{0,8}\"?)(?!\*\*\*)([^\s\"'&,;<>]{1,4096})"
)
_ANSI = re.compile(r"\x1b(?:\[[0-?]{0,32}[ -/]{0,8}[@-~]|\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)?|.)?")


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it shows masked as ``***``.

    Args:
        text: any text (a message, a log value, a URL).
        secrets: exact strings to mask wherever they appear (a password, a
            token), also in their percent-encoded form; those shorter than 3
            characters are ignored.

    Returns:
        The text, otherwise unchanged.

    Example:
        >>> from abathur.redact import redact
        >>> redact("GET http://bob:pw@host/x?token=abc123 failed: S3cr3t!", secrets=["S3cr3t!"])
        'GET http://***@host/x?token=*** failed: ***'
        >>> redact("nothing secret here")
        'nothing secret here'
    """
    for secret in _known(secrets):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: m[1] + MASK + "@", text)
    text = _HEADER.sub(lambda m: m[1] + m[2] + (m[3] or "") + MASK, text)
    text = _COOKIE.sub(lambda m: m[1] + m[2] + MASK, text)
    text = _SCHEME_TOKEN.sub(lambda m: m[1] + m[2] + MASK, text)
    return _PARAM.sub(lambda m: m[1] + m[2] + MASK, text)


def redact_url(url: str) -> str:
    """A URL as it may be shown: no user name or password, no secret parameter.

    Works on text that is not a valid URL too: everything up to the last
    ``@`` after the scheme counts as userinfo (a password with an unencoded
    ``#``, ``/`` or ``?`` is still hidden whole).

    Example:
        >>> from abathur.redact import redact_url
        >>> redact_url("https://bob:p%40ss@ollama.example:8443/api?api_key=sk-1&x=1")
        'https://***@ollama.example:8443/api?api_key=***&x=1'
        >>> redact_url("gpu-box:11434")
        'gpu-box:11434'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    return redact(f"{scheme}{sep}{rest}")


def echoed(text: object, *, secrets: Iterable[str] = (), limit: int = BODY_LIMIT) -> str:
    """Outside text made fit for a message: one clean line, redacted, at most ``limit`` long.

    Terminal escapes and control characters go, runs of whitespace become one
    space, credentials are masked (:func:`redact`), and only then is the text
    cut, so a cut never leaves half a secret.

    Args:
        text: what came from outside (``str()`` of anything else).
        secrets: as for :func:`redact`.
        limit: the most characters returned (``...`` marks a cut).

    Example:
        >>> from abathur.redact import echoed
        >>> echoed("<html>\\n" + "x" * 500, limit=20)
        '<html> xxxxxxxxxx...'
    """
    known = _known(secrets)
    raw = text if isinstance(text, str) else str(text)
    for secret in known:
        raw = raw.replace(secret, MASK)
    raw = _ANSI.sub("", raw)
    cleaned = "".join(_visible(ch) for ch in raw)
    line = redact(" ".join(cleaned.split()), secrets=known)
    return line if len(line) <= limit else line[: max(0, limit - 3)] + "..."


def _visible(ch: str) -> str:
    # Cc: controls (\x00-\x1f, \x7f-\x9f); Cf: format characters such as the
    # bidi overrides that reorder what a terminal shows; Cs: lone surrogates,
    # which are not UTF-8; Zl/Zp: line and paragraph separators.
    return " " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch


def _known(secrets: Iterable[str]) -> list[str]:
    """The secrets to mask, with their percent-encoded forms, longest first."""
    found: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= _MIN_SECRET:
            found.add(secret)
            found.add(urllib.parse.quote(secret, safe=""))
    return sorted(found, key=len, reverse=True)

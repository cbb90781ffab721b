"""DocumentService: directories of markdown kept in sync with their chunks: ``ab.documents``.

:meth:`DocumentService.sync` makes the index of a directory (a *root*) match
the files under it that its glob patterns select (DESIGN.md §5, issue 3):

1. **Walk** the root once (symlinked directories are not entered; a symlinked
   file is read only if it resolves to a regular file inside the root), and
   keep the files a pattern matches and no ``exclude`` pattern does.
2. **Skip what did not change.** A file whose size and mtime are what was
   stored is not read; otherwise it is read and its sha256 decides. Bad files
   (binary, unreadable, invalid UTF-8, over ``max_file_bytes``, symlink loops
   or links out of the root, a file or directory name that is not UTF-8) are
   reported in ``failed`` and skipped, never fatal.
3. **Chunk** the markdown along its headings (:func:`chunk_markdown`): each
   chunk keeps its heading path (``Backups > Restore``) as context, and is cut
   at paragraph, line, sentence or word boundaries so that heading and text
   together fit the bundled MiniLM's 256 word pieces (counted with its own
   tokenizer), with a few pieces of overlap between neighbours.
4. **Write** in small transactions (a few dozen files each, never one lock for
   the whole tree): a changed file keeps the chunks whose content hash is
   unchanged, with their vectors; new chunks take a vector from the embedding
   cache when one exists (a renamed file, an edit undone) or queue an
   embedding job; chunks of deleted or no longer matched files are removed.
   ``chunks_fts`` follows ``chunks`` by triggers.

The embedding worker (``ab.embeddings``) embeds queued chunks in the
background; ``await ab.embeddings.drain()`` waits for it. :meth:`search`
ranks chunks by keyword, vector or both (:mod:`abathur.search`), and
:meth:`watch` keeps a root in sync as its files change.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from abathur import Abathur
    >>> async def demo():
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         docs = pathlib.Path(tmp) / "docs"
    ...         docs.mkdir()
    ...         (docs / "backup.md").write_text("# Backups\\n\\nRun `abathur backup` nightly.\\n")
    ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
    ...             first = await ab.documents.sync(docs)
    ...             again = await ab.documents.sync(docs)
    ...             found = await ab.documents.search("nightly backup", mode="keyword")
    ...             return first.added, again.unchanged, found.hits[0].heading
    >>> asyncio.run(demo())
    (['backup.md'], 1, 'Backups')
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import json
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import apsw
import numpy as np
import structlog

from abathur import audit
from abathur.backends.sqlite import Database
from abathur.embeddings.bundled import MAX_TOKENS
from abathur.embeddings.queue import cancel, content_hash, enqueue
from abathur.errors import ClosedError, EmbedderError, InvalidInputError, NotFoundError
from abathur.memory import HYBRID_DEPTH, MAX_SEARCH_K
from abathur.models import (
    DocumentHit,
    DocumentSearchResult,
    SearchMode,
    SyncFailure,
    SyncReport,
)
from abathur.search import (
    SEARCH_MODES,
    IndexItem,
    IndexKind,
    VectorFilter,
    cached_similarity,
    check_min_score,
    check_query,
    defer_vector_delete,
    fts_query,
    insert_vector,
    resolve_mode,
    rrf,
    term_coverage,
    vector_search,
)
from abathur.values import check_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from abathur.embeddings.queue import EmbeddingService

__all__ = [
    "CHUNK_KIND",
    "CHUNK_OVERLAP_TOKENS",
    "CHUNK_TOKENS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_PATTERNS",
    "EMBED_TOKENS",
    "SQL_CHUNKS_OF_DOCUMENT",
    "SQL_CHUNK_KEYWORD_SEARCH",
    "SQL_DOCUMENTS_OF_ROOT",
    "SQL_DOCUMENT_BY_PATH",
    "SQL_ROOT_BY_PATH",
    "Chunk",
    "DocumentService",
    "DocumentWatch",
    "chunk_markdown",
    "keyword_search_params",
]

log = structlog.get_logger(__name__)

DEFAULT_PATTERNS: tuple[str, ...] = ("**/*.md",)
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_FILE_BYTES_LIMIT = 1024 * 1024 * 1024
MAX_PATTERNS = 256

# Word pieces a chunk's embedded text (heading path + text) may hold: the
# bundled MiniLM reads 256, [CLS] and [SEP] included, and ignores the rest.
EMBED_TOKENS = MAX_TOKENS - 2
# A chunk's own text stays under this: MiniLM was trained on inputs of up to
# 128 pieces and embeds long ones far slower (issue 3: ~35/s at 256 pieces),
# so chunks are kept short, leaving room for the heading path.
CHUNK_TOKENS = 160
CHUNK_OVERLAP_TOKENS = 24  # pieces the next chunk of a section repeats
HEADING_TOKENS = 48  # a longer heading path loses its outer titles
_HEADING_SEP = " > "

# A stored size and mtime are trusted only when the file was last modified at
# least this long before it was read (file systems with coarse timestamps can
# give a file rewritten in the same tick the same mtime: git's "racy clean").
_RACY_NS = 2_000_000_000

# Files per write transaction, and chunks: each transaction stays short.
_BATCH_FILES = 32
_BATCH_CHUNKS = 512
_BATCH_REMOVALS = 64

KIND_NAME = "chunk"
VEC_TABLE = "chunks_vec"

# ---------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------

SQL_ROOT_BY_PATH = "SELECT id FROM document_roots WHERE path = ?"
SQL_ROOT_INSERT = "INSERT INTO document_roots (path, created_at) VALUES (?, ?) RETURNING id"
SQL_ROOT_SYNCED = "UPDATE document_roots SET synced_at = ? WHERE id = ?"
# forget, last: the root row goes only once no document of it is left.
SQL_ROOT_FORGET = (
    "DELETE FROM document_roots WHERE id = ? "
    "AND NOT EXISTS (SELECT 1 FROM documents WHERE root_id = document_roots.id)"
)

# sync: what is known of a root's files (the UNIQUE (root_id, path) index).
SQL_DOCUMENTS_OF_ROOT = (
    "SELECT path, content_hash, size, mtime_ns, status, error, synced_at FROM documents "
    "WHERE root_id = ?"
)
# sync, per file, inside its write: the UNIQUE (root_id, path) index.
SQL_DOCUMENT_BY_PATH = (
    "SELECT id, content_hash, status, error, size, mtime_ns FROM documents "
    "WHERE root_id = ? AND path = ?"
)
SQL_DOCUMENT_INSERT = (
    "INSERT INTO documents (root_id, path, content_hash, size, mtime_ns, status, error, "
    "chunks, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
SQL_DOCUMENT_UPDATE = (
    "UPDATE documents SET content_hash = ?, size = ?, mtime_ns = ?, status = ?, error = ?, "
    "chunks = ?, synced_at = ? WHERE id = ?"
)
SQL_DOCUMENT_TOUCH = "UPDATE documents SET size = ?, mtime_ns = ?, synced_at = ? WHERE id = ?"
SQL_DOCUMENT_DELETE = "DELETE FROM documents WHERE id = ?"

# A document's chunks in order: index chunks_by_document.
SQL_CHUNKS_OF_DOCUMENT = (
    "SELECT id, content_hash, ordinal FROM chunks WHERE document_id = ? ORDER BY ordinal"
)
SQL_CHUNK_INSERT = (
    "INSERT INTO chunks (document_id, ordinal, heading, text, content_hash, tokens) "
    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
SQL_CHUNK_ORDINAL = "UPDATE chunks SET ordinal = ? WHERE id = ?"
SQL_CHUNK_DELETE = "DELETE FROM chunks WHERE id = ?"

# Per write: the recorded embedder, and whether the chunks' vector table exists yet.
SQL_INDEX_STATE = (
    "SELECT (SELECT value FROM meta WHERE key = 'embedder.name'), "
    "EXISTS (SELECT 1 FROM vector_tables WHERE name = 'chunks_vec')"
)

_SQL_CHUNK_ITEMS = (
    "SELECT c.id, c.heading, c.text, d.root_id FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id"
)
SQL_CHUNK_ITEMS_BY_ID = _SQL_CHUNK_ITEMS + " WHERE c.id IN (SELECT value FROM json_each(?))"
SQL_LIVE_CHUNK_ITEMS = _SQL_CHUNK_ITEMS + " ORDER BY c.id"

# documents.search, keyword ranking: FTS5 finds the words, the joins apply the
# root and path-prefix filters; no window, every match passing them is ranked.
# The heading counts twice: it names what the chunk is about. Params: the
# MATCH expression, root id, root id, prefix, prefix, prefix + '/', prefix +
# '0' ('0' is the character after '/'), limit. See keyword_search_params.
SQL_CHUNK_KEYWORD_SEARCH = (
    "SELECT c.id, -bm25(chunks_fts, 2.0, 1.0) AS score "
    "FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE chunks_fts MATCH ? AND (? IS NULL OR d.root_id = ?) "
    "AND (? IS NULL OR d.path = ? OR (d.path >= ? AND d.path < ?)) "
    "ORDER BY score DESC, c.id LIMIT ?"
)
# documents.search, vector ranking under a path prefix: the chunk ids allowed.
SQL_ALLOWED_CHUNKS = (
    "SELECT c.id FROM documents AS d JOIN chunks AS c ON c.document_id = d.id "
    "WHERE (? IS NULL OR d.root_id = ?) AND (d.path = ? OR (d.path >= ? AND d.path < ?))"
)
# documents.search(fresh=True): the embedding jobs of chunks (of one root, or
# of every root when :root_id is NULL), and how many wait
# (DocumentSearchResult.pending). The queue is read first (CROSS JOIN): it is
# small when the worker keeps up.
_SQL_PENDING_WHERE = (
    "FROM embedding_queue AS q CROSS JOIN chunks AS c ON c.id = q.ref_id "
    "JOIN documents AS d ON d.id = c.document_id "
    "WHERE q.kind = :kind AND q.failed_at IS NULL AND (:root_id IS NULL OR d.root_id = :root_id)"
)
SQL_PENDING_CHUNK_JOBS = (
    "SELECT q.id, q.kind, q.ref_id, q.content_hash "
    + _SQL_PENDING_WHERE
    + " ORDER BY q.id LIMIT :limit"
)
SQL_PENDING_CHUNKS = "SELECT count(*) " + _SQL_PENDING_WHERE

SQL_HITS = (
    "SELECT c.id, c.heading, c.text, c.ordinal, d.path, r.path FROM chunks AS c "
    "JOIN documents AS d ON d.id = c.document_id "
    "JOIN document_roots AS r ON r.id = d.root_id "
    "WHERE c.id IN (SELECT value FROM json_each(?))"
)


# ---------------------------------------------------------------------------
# Word pieces: the bundled MiniLM's own tokenizer, loaded alone (no model)
# ---------------------------------------------------------------------------

_tokenizer: Tokenizer | None = None
_tokenizer_failed = False
_tokenizer_lock = threading.Lock()
# The fallback when the tokenizer cannot be loaded: an over-count for
# English (a word piece averages ~4 characters; this counts one per 3 letters,
# one per digit and one per other character).
_PSEUDO_PIECE = re.compile(r"[A-Za-z]{1,3}|\S")


def _load_tokenizer() -> Tokenizer | None:
    global _tokenizer, _tokenizer_failed
    if _tokenizer is None and not _tokenizer_failed:
        with _tokenizer_lock:
            if _tokenizer is None and not _tokenizer_failed:
                try:
                    from tokenizers import Tokenizer

                    text = (
                        resources.files("abathur.embeddings")
                        .joinpath("model", "tokenizer.json")
                        .read_text("utf-8")
                    )
                    tokenizer = Tokenizer.from_str(text)
                    tokenizer.no_padding()
                    tokenizer.no_truncation()
                    _tokenizer = tokenizer
                # tokenizers raises plain Exception on a bad file.
                except Exception as exc:
                    _tokenizer_failed = True
                    log.warning("documents.tokenizer_unavailable", error=str(exc))
    return _tokenizer


def _pieces(texts: list[str]) -> list[list[tuple[int, int]]]:
    """The character spans of each text's word pieces ([CLS]/[SEP] not included)."""
    if not texts:
        return []
    tokenizer = _load_tokenizer()
    if tokenizer is None:
        return [[m.span() for m in _PSEUDO_PIECE.finditer(text)] for text in texts]
    return [e.offsets for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


# ---------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------


class Chunk(NamedTuple):
    """One piece of a markdown document, as stored and embedded.

    Attributes:
        heading: the heading path, outermost first (``"Backups > Restore"``;
            ``""`` before the first heading).
        text: the chunk's own text.
        tokens: word pieces of :attr:`embedded`, [CLS] and [SEP] not counted.
    """

    heading: str
    text: str
    tokens: int

    @property
    def embedded(self) -> str:
        """What the embedder reads: the heading path, a blank line, the text."""
        return _embedded(self.heading, self.text)


def _embedded(heading: str, text: str) -> str:
    return f"{heading}\n\n{text}" if heading else text


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# A paragraph line that cannot be the text of a setext heading: a list item,
# quote or table row, whose '---' below is a thematic break or a table rule.
_NOT_SETEXT_TEXT = re.compile(r"^ {0,3}(?:[-*+>|]|\d+[.)])")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = frozenset(".!?:;")


def _sections(text: str) -> list[tuple[list[str], str]]:
    """Split markdown into (heading titles, body) in reading order.

    ATX (``## Title``) and setext (``Title`` over ``===``/``---``) headings
    start a section; ``#`` lines inside fenced code blocks do not. A YAML
    front matter block is body text of the first section.
    """
    lines = text.split("\n")
    sections: list[tuple[list[str], str]] = []
    titles: list[tuple[int, str]] = []
    body: list[str] = []
    start = 0
    if lines and lines[0].rstrip() == "---":
        for end in range(1, len(lines)):
            if lines[end].rstrip() in ("---", "..."):
                body.extend(lines[: end + 1])
                start = end + 1
                break
    fence: str | None = None

    def close() -> None:
        if "".join(body).strip():
            sections.append(([title for _, title in titles], "\n".join(body).strip("\n")))
        body.clear()

    def open_(level: int, title: str) -> None:
        close()
        while titles and titles[-1][0] >= level:
            titles.pop()
        titles.append((level, title.strip()))

    for line in lines[start:]:
        if fence is not None:
            body.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        opened = _FENCE.match(line)
        if opened:
            fence = opened[1]
            body.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            open_(len(atx[1]), atx[2] or "")
            continue
        setext = _SETEXT.match(line)
        if setext and body and body[-1].strip() and not _NOT_SETEXT_TEXT.match(body[-1]):
            # The heading's text is the paragraph just above the underline.
            first = len(body)
            while first > 0 and body[first - 1].strip():
                first -= 1
            paragraph = [part.strip() for part in body[first:]]
            del body[first:]
            open_(1 if setext[1][0] == "=" else 2, " ".join(paragraph))
            continue
        body.append(line)
    close()
    return sections


def _boundary(body: str, spans: list[tuple[int, int]], i: int) -> int:
    """How good a cut before piece ``i`` is: 4 blank line, 3 line, 2 sentence, 1 word, 0 none."""
    gap = body[spans[i - 1][1] : spans[i][0]]
    if not gap:
        return 0
    if "\n" in gap:
        return 4 if _BLANK_LINE.search(gap) else 3
    if body[spans[i - 1][0] : spans[i - 1][1]] in _SENTENCE_END:
        return 2
    return 1


def _cut(
    body: str, spans: list[tuple[int, int]], budget: int, overlap: int
) -> list[tuple[int, int, bool]]:
    """Piece ranges ``[start, end)`` of at most ``budget`` pieces covering ``spans``.

    Each cut is the best boundary (:func:`_boundary`) in the last half of the
    budget, the latest on a tie. The next range starts up to ``overlap``
    pieces back, at the best boundary there. The flag is true when a range
    starts or ends inside a word (its pieces must be counted again).
    """
    count = len(spans)
    ranges: list[tuple[int, int, bool]] = []
    start, start_in_word = 0, False
    while True:
        if count - start <= budget:
            ranges.append((start, count, start_in_word))
            return ranges
        best, end = -1, start + budget
        for i in range(start + max(1, budget // 2), start + budget + 1):
            score = _boundary(body, spans, i)
            if score >= best:
                best, end = score, i
        ranges.append((start, end, start_in_word or best == 0))
        following, following_score = end, best
        top = 0
        for j in range(max(start + 1, end - overlap), end):
            score = _boundary(body, spans, j)
            if score > top:
                top, following, following_score = score, j, score
        start, start_in_word = following, following_score == 0


def _heading(titles: list[str]) -> str:
    """The heading path, its outer titles dropped until it fits HEADING_TOKENS."""
    titles = [t for t in titles if t]
    while titles:
        heading = _HEADING_SEP.join(titles)
        spans = _pieces([heading])[0]
        if len(spans) <= HEADING_TOKENS:
            return heading
        if len(titles) == 1:
            return heading[: spans[HEADING_TOKENS - 1][1]]
        titles = titles[1:]
    return ""


def _chunk_texts(texts: Sequence[str]) -> list[list[Chunk]]:
    """:func:`chunk_markdown` of many documents, with one tokenizer call for all."""
    sections = [_sections(text.replace("\r\n", "\n").replace("\r", "\n")) for text in texts]
    headings: dict[tuple[str, ...], str] = {}
    for document in sections:
        for titles, _ in document:
            headings.setdefault(tuple(titles), "")
    keys = list(headings)
    # Most heading paths fit; only the few that do not are cut one by one.
    for key, spans in zip(
        keys, _pieces([_HEADING_SEP.join(t for t in k if t) for k in keys]), strict=True
    ):
        joined = _HEADING_SEP.join(t for t in key if t)
        headings[key] = joined if len(spans) <= HEADING_TOKENS else _heading(list(key))
    heading_tokens = dict(
        zip(headings.values(), map(len, _pieces(list(headings.values()))), strict=True)
    )
    bodies = _pieces([body for document in sections for _, body in document])
    position = 0
    chunked: list[list[Chunk]] = []
    for document in sections:
        chunks: list[Chunk] = []
        for titles, body in document:
            spans = bodies[position]
            position += 1
            if not spans:
                continue
            heading = headings[tuple(titles)]
            used = heading_tokens[heading]
            budget = max(16, min(CHUNK_TOKENS, EMBED_TOKENS - used))
            for start, end, recount in _cut(body, spans, budget, CHUNK_OVERLAP_TOKENS):
                text = body[spans[start][0] : spans[end - 1][1]]
                tokens = used + end - start
                if recount:
                    text, tokens = _fit(heading, text)
                chunks.append(Chunk(heading, text, tokens))
        chunked.append(chunks)
    return chunked


def _fit(heading: str, text: str) -> tuple[str, int]:
    """Count a chunk cut inside a word again, and shorten it if it no longer fits."""
    while True:
        tokens = len(_pieces([_embedded(heading, text)])[0])
        if tokens <= EMBED_TOKENS or len(text) <= 1:
            return text, tokens
        text = text[: max(1, len(text) * EMBED_TOKENS // tokens - 1)]


def chunk_markdown(text: str) -> list[Chunk]:
    """Split a markdown document into chunks along its headings.

    Each section (the text under a heading, down to the next heading) is cut
    into chunks of at most :data:`CHUNK_TOKENS` word pieces, at the best
    boundary available (blank line, line, sentence, word); neighbours in a
    section share up to :data:`CHUNK_OVERLAP_TOKENS` pieces. A chunk's
    heading path and text together stay within :data:`EMBED_TOKENS` pieces,
    what the bundled MiniLM reads. Empty sections make no chunk.

    Args:
        text: the document.

    Returns:
        The chunks in reading order.

    Example:
        >>> from abathur.documents import chunk_markdown
        >>> doc = "# Backups\\nNightly.\\n\\n## Restore\\nStop writers first.\\n"
        >>> [(c.heading, c.text) for c in chunk_markdown(doc)]
        [('Backups', 'Nightly.'), ('Backups > Restore', 'Stop writers first.')]
        >>> chunk_markdown(doc)[1].embedded
        'Backups > Restore\\n\\nStop writers first.'
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    return _chunk_texts([text])[0]


# ---------------------------------------------------------------------------
# Globs
# ---------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated relative paths: ``**`` spans directories, ``*`` and
    ``?`` stay within one, ``[...]`` is a character class."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                inner = pattern[i + 1 : end]
                negate = inner.startswith("!")
                inner = inner[1:] if negate else inner
                out.append("[" + ("^/" if negate else "") + inner.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


class _Reach(NamedTuple):
    """Where a glob can match: in ``base`` ('' for the root) and, if ``deep``, below it."""

    base: str
    deep: bool


def _reach(pattern: str) -> _Reach:
    parts = pattern.split("/")
    literal = list(itertools.takewhile(lambda part: not set(part) & set("*?["), parts[:-1]))
    rest = parts[len(literal) :]
    return _Reach("/".join(literal), len(rest) > 1 or "**" in rest[0])


def _may_hold(directory: str, reaches: Sequence[_Reach]) -> bool:
    """True if some glob can match a file in ``directory`` or below it (walk pruning)."""
    for base, deep in reaches:
        if base == directory or base.startswith(directory + "/"):
            return True
        if deep and (not base or directory.startswith(base + "/")):
            return True
    return False


def _check_patterns(value: object, what: str, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(
            f"{what} must be a list of glob strings such as ['**/*.md'], got {type(value).__name__}"
        )
    patterns = tuple(value)
    if not patterns and not allow_empty:
        raise InvalidInputError(f"{what} must name at least one glob")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInputError(f"{what} has {len(patterns)} globs; the limit is {MAX_PATTERNS}")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidInputError(f"{what} must hold strings, got {type(pattern).__name__}")
        if not pattern.strip() or pattern != pattern.strip():
            raise InvalidInputError(f"{what}: glob {pattern!r} is blank or padded")
        if any(ord(ch) < 32 or ch == "\x7f" for ch in pattern):
            raise InvalidInputError(f"{what}: glob {pattern!r} contains a control character")
        check_text(pattern, f"{what}: glob")
        if pattern.startswith("/") or "\\" in pattern:
            raise InvalidInputError(
                f"{what}: glob {pattern!r} must be relative to the root, with '/' separators"
            )
        if any(part in ("", ".", "..") for part in pattern.split("/")):
            raise InvalidInputError(
                f"{what}: glob {pattern!r} has an empty, '.' or '..' segment; globs select "
                "files under the root, never outside it"
            )
    return patterns


def _check_int(value: object, what: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidInputError(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


def _check_root(root: object, *, must_exist: bool = True) -> Path:
    """The root as a resolved absolute path: an existing directory, unless ``must_exist`` is off.

    ``forget`` passes ``must_exist=False``: the directory may be gone, and it
    resolves to the path sync recorded as long as no symlink on the way changed.
    """
    if not isinstance(root, str | os.PathLike):
        raise InvalidInputError(f"root must be a path, got {type(root).__name__}")
    text = os.fspath(root)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise InvalidInputError(f"root {text!r} is not a usable path")
    # Checked before resolving too: resolve() itself fails on a lone surrogate
    # that no byte decodes to, with a UnicodeEncodeError.
    _check_utf8_root(text)
    try:
        resolved = Path(text).resolve(strict=must_exist)
    except FileNotFoundError:
        raise NotFoundError(f"root {text!r} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidInputError(f"root {text!r} cannot be resolved: {exc}") from None
    if must_exist and not resolved.is_dir():
        raise InvalidInputError(f"root {text!r} is not a directory")
    _check_utf8_root(str(resolved))
    return resolved


def _check_utf8_root(path: str) -> None:
    bad = _not_utf8(path)
    if bad is not None:
        # Paths are stored as UTF-8 text; this one cannot be, so it cannot be a root.
        raise InvalidInputError(
            f"root '{_printable(path)}' is not valid UTF-8 ({bad}): rename the directory"
        )


def _check_prefix(prefix: object) -> str | None:
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise InvalidInputError(f"path_prefix must be a string, got {type(prefix).__name__}")
    check_text(prefix, "path_prefix")
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    if (
        not trimmed
        or trimmed.startswith("/")
        or any(ord(ch) < 32 or ch == "\x7f" for ch in trimmed)
        or any(part in ("", ".", "..") for part in trimmed.split("/"))
    ):
        raise InvalidInputError(
            f"path_prefix {prefix!r} must be a relative path such as 'runbooks' or "
            "'docs/ops', without empty, '.' or '..' segments"
        )
    return trimmed


# ---------------------------------------------------------------------------
# Walking and reading (worker threads)
# ---------------------------------------------------------------------------


class _Known(NamedTuple):
    """What the database holds about one file."""

    content_hash: str
    size: int
    mtime_ns: int
    status: str
    error: str | None
    synced_at: float


@dataclass
class _Walk:
    files: list[str] = field(default_factory=list)  # relative paths, sorted
    unlisted: list[str] = field(default_factory=list)  # directories that could not be read
    failed: list[SyncFailure] = field(default_factory=list)


def _walk(
    root: str,
    patterns: Sequence[re.Pattern[str]],
    reaches: Sequence[_Reach],
    excludes: Sequence[re.Pattern[str]],
    skip: frozenset[str],
) -> _Walk:
    """The files under ``root`` the patterns select. Symlinked directories are not entered."""
    found = _Walk()

    def unreadable(error: OSError) -> None:
        where = os.path.relpath(error.filename or root, root).replace(os.sep, "/")
        found.unlisted.append(where)
        found.failed.append(
            SyncFailure(path=_printable(where), reason=f"cannot list directory: {_why(error)}")
        )

    def misnamed(rel: str, name: str, what: str) -> bool:
        # Reported, never stored: the rest of the tree syncs (issue 11, item 5).
        bad = _not_utf8(name)
        if bad is not None:
            which = "it" if what == "file" else "the files under it"
            reason = f"{what} name is not valid UTF-8 ({bad}): rename it to sync {which}"
            found.failed.append(SyncFailure(path=_printable(rel), reason=reason))
        return bad is not None

    def wanted_dir(rel: str) -> bool:
        if any(x.match(rel) or x.match(rel + "/") for x in excludes):
            return False
        return _may_hold(rel, reaches)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if wanted_dir(rel_dir + d) and not misnamed(rel_dir + d, d, "directory")
        )
        for name in filenames:
            rel = rel_dir + name
            if os.path.join(dirpath, name) in skip:
                continue
            if (
                any(p.match(rel) for p in patterns)
                and not any(x.match(rel) for x in excludes)
                and not misnamed(rel, name, "file")
            ):
                found.files.append(rel)
    found.files.sort()
    return found


def _not_utf8(name: str) -> str | None:
    """Where a file name from the OS is not UTF-8 ("byte 0xff at offset 3"), or None if it is.

    Python hands such a name over surrogate-escaped; SQLite text, JSON and
    terminals take only real UTF-8, so it can be reported but never stored.
    """
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(name)
        raw.decode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        return "it holds a lone surrogate"
    except UnicodeDecodeError as exc:
        return f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    return "it holds a lone surrogate"  # pragma: no cover - fsencode round-trips


def _printable(name: str) -> str:
    """A name as valid UTF-8 for reports and messages: bytes that are not UTF-8 as ``\\xff``."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _why(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symlink loop"
    return error.strerror or type(error).__name__


@dataclass
class _Examined:
    """One file after the thread looked at it."""

    path: str
    outcome: str  # 'failed' | 'unchanged' | 'touch' | 'content'
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    text: str = ""
    reason: str = ""
    chunks: list[Chunk] = field(default_factory=list)


def _examine(root: str, rel: str, known: _Known | None, max_bytes: int) -> _Examined:
    """Stat, pre-check, read, hash and decode one file (chunking comes after)."""
    full = os.path.join(root, *rel.split("/"))
    try:
        info = os.lstat(full)
        target = full
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.path.realpath(full, strict=True)
            except OSError as exc:
                reason = "broken symlink" if exc.errno == errno.ENOENT else _why(exc)
                return _Examined(rel, "failed", reason=reason)
            if not target.startswith(root + os.sep):
                return _Examined(rel, "failed", reason="symlink points outside the root")
            info = os.stat(target)
        if not stat.S_ISREG(info.st_mode):
            return _Examined(rel, "failed", reason="not a regular file")
        if info.st_size > max_bytes:
            return _Examined(
                rel,
                "failed",
                size=info.st_size,
                mtime_ns=info.st_mtime_ns,
                reason=f"{info.st_size} bytes, over the {max_bytes}-byte limit",
            )
        if (
            known is not None
            and known.status == "indexed"
            and known.size == info.st_size
            and known.mtime_ns == info.st_mtime_ns
            and info.st_mtime_ns < known.synced_at * 1e9 - _RACY_NS
        ):
            return _Examined(rel, "unchanged", size=info.st_size, mtime_ns=info.st_mtime_ns)
        # O_NOFOLLOW: the path checked above is the one read, even if swapped
        # for a link since; O_NONBLOCK: a FIFO swapped in cannot hang us.
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return _Examined(rel, "failed", reason="not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(max_bytes + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return _Examined(rel, "failed", reason=_why(exc))
    size, mtime_ns = len(data), info.st_mtime_ns
    if size > max_bytes:
        return _Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"over the {max_bytes}-byte limit",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        return _Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"binary file (NUL byte at offset {nul})",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Examined(
            rel,
            "failed",
            size=size,
            mtime_ns=mtime_ns,
            reason=f"invalid UTF-8 at byte {exc.start}",
        )
    digest = hashlib.sha256(data).hexdigest()
    if known is not None and known.status == "indexed" and known.content_hash == digest:
        return _Examined(rel, "touch", size=size, mtime_ns=mtime_ns, content_hash=digest)
    return _Examined(
        rel,
        "content",
        size=size,
        mtime_ns=mtime_ns,
        content_hash=digest,
        text=text.removeprefix("\ufeff"),
    )


def _examine_batch(
    root: str, paths: list[str], known: dict[str, _Known], max_bytes: int
) -> list[_Examined]:
    examined = [_examine(root, rel, known.get(rel), max_bytes) for rel in paths]
    readable = [e for e in examined if e.outcome == "content"]
    for item, chunks in zip(readable, _chunk_texts([e.text for e in readable]), strict=True):
        item.chunks, item.text = chunks, ""
    return examined


# ---------------------------------------------------------------------------
# Writing (inside one write transaction)
# ---------------------------------------------------------------------------


@dataclass
class _Tally:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[SyncFailure] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    queued: int = 0

    def add(self, other: _Tally) -> None:
        self.added += other.added
        self.changed += other.changed
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.chunks_added += other.chunks_added
        self.chunks_removed += other.chunks_removed
        self.chunks_kept += other.chunks_kept
        self.queued += other.queued

    def report(self, root: str, started: float) -> SyncReport:
        """What a sync (or a forget) of ``root`` begun at ``started`` (perf_counter) did."""
        return SyncReport(
            root=root,
            added=sorted(self.added),
            changed=sorted(self.changed),
            removed=sorted(self.removed),
            unchanged=self.unchanged,
            failed=sorted(self.failed, key=lambda f: f.path),
            chunks_added=self.chunks_added,
            chunks_removed=self.chunks_removed,
            chunks_kept=self.chunks_kept,
            embeddings_queued=self.queued,
            seconds=round(time.perf_counter() - started, 6),
        )

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "failed": len(self.failed),
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
        }


class _Indexing:
    """Keeps the embedding queue and chunks_vec in step with one write's chunks.

    As for memories (abathur.memory): whether vectors are kept at all (an
    embedder configured in this process, or one recorded in the file) is read
    inside the write, so a write from any process keeps them right.
    chunks_fts needs nothing here: triggers on chunks keep it.
    """

    def __init__(self, conn: apsw.Connection, *, configured: bool, held: bool = False) -> None:
        ((model, has_table),) = conn.execute(SQL_INDEX_STATE).fetchall()
        self.model: str | None = model
        self.has_table = bool(has_table) and model is not None
        self.vectors = configured or model is not None
        self.held = held  # a probe's write: its jobs wait for the probe's own drain

    def add(
        self,
        conn: apsw.Connection,
        tally: _Tally,
        doc_id: int,
        root_id: int,
        ordinal: int,
        chunk: Chunk,
        text_hash: str,
        now: float,
    ) -> None:
        ((chunk_id,),) = conn.execute(
            SQL_CHUNK_INSERT,
            (doc_id, ordinal, chunk.heading, chunk.text, text_hash, chunk.tokens),
        ).fetchall()
        tally.chunks_added += 1
        if not self.vectors:
            return
        item = _item(chunk_id, chunk.heading, chunk.text, root_id)
        # A text embedded before (a renamed file, an edit undone) needs no job.
        if self.has_table and insert_vector(
            conn, VEC_TABLE, item, model=self.model or "", content_hash=text_hash
        ):
            return
        enqueue(conn, KIND_NAME, chunk_id, text_hash, now, held=self.held)
        tally.queued += 1

    def remove(self, conn: apsw.Connection, tally: _Tally, chunk_id: int) -> None:
        # A chunk has a queued job or a vector, never both.
        if self.vectors and not cancel(conn, KIND_NAME, chunk_id) and self.has_table:
            defer_vector_delete(conn, VEC_TABLE, chunk_id)
        conn.execute(SQL_CHUNK_DELETE, (chunk_id,))
        tally.chunks_removed += 1


def _relevance(
    conn: apsw.Connection,
    used: SearchMode,
    query: str,
    vector: np.ndarray | None,
    model: str | None,
    found: list[tuple[tuple[Any, ...], float]],
    cosine: dict[int, float],
) -> list[float]:
    """Each hit's ``relevance``, as :func:`abathur.memory._relevance` does for memories.

    Vector: the cosine. Hybrid: the cosine from the vector ranking or the
    embedding cache, else (not embedded yet) the keyword relevance. Keyword:
    the share of the query's words in the chunk's heading and text.
    """
    texts = [f"{row[1]} {row[2]}" for row, _ in found]
    if used == "keyword":
        return term_coverage(conn, query, texts)
    out: list[float | None] = [cosine.get(row[0]) for row, _ in found]
    missing = [i for i, value in enumerate(out) if value is None]
    if missing and vector is not None and model is not None:
        hashes = {i: content_hash(_embedded(found[i][0][1], found[i][0][2])) for i in missing}
        similar = cached_similarity(conn, model, vector, list(hashes.values()))
        for i, text_hash in hashes.items():
            out[i] = similar.get(text_hash)
    missing = [i for i, value in enumerate(out) if value is None]
    if missing:
        coverage = term_coverage(conn, query, [texts[i] for i in missing])
        for i, value in zip(missing, coverage, strict=True):
            out[i] = value
    return [0.0 if value is None else value for value in out]


def _item(chunk_id: int, heading: str, text: str, root_id: int) -> IndexItem:
    # One vec0 partition per root: a search within a root reads only its chunks.
    return IndexItem(
        id=chunk_id,
        text=_embedded(heading, text),
        scope=str(root_id),
        type_code=0,
        expires=math.inf,
    )


def _load_items(conn: apsw.Connection, ids: Sequence[int], now: float) -> list[IndexItem]:
    if not _has_chunks_table(conn):
        return []
    rows = conn.execute(SQL_CHUNK_ITEMS_BY_ID, (json.dumps(list(ids)),)).fetchall()
    return [_item(*row) for row in rows]


def _live_items(conn: apsw.Connection) -> Iterator[IndexItem]:
    # A file not migrated yet (opened with auto_migrate=False) has no chunks.
    if not _has_chunks_table(conn):
        return
    cursor = conn.execute(SQL_LIVE_CHUNK_ITEMS)
    while rows := list(itertools.islice(cursor, 1000)):
        yield from (_item(*row) for row in rows)


def _has_chunks_table(conn: apsw.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'chunks'"
        ).fetchall()
    )


CHUNK_KIND = IndexKind(name=KIND_NAME, vec_table=VEC_TABLE, load=_load_items, live=_live_items)


def _write_document(
    conn: apsw.Connection,
    index: _Indexing,
    tally: _Tally,
    root_id: int,
    item: _Examined,
    now: float,
) -> bool:
    """Bring one file's rows in line with what was read; False if nothing needed writing."""
    rows = conn.execute(SQL_DOCUMENT_BY_PATH, (root_id, item.path)).fetchall()
    current = rows[0] if rows else None
    if item.outcome == "failed":
        tally.failed.append(SyncFailure(path=item.path, reason=item.reason))
        if current is None:
            conn.execute(
                SQL_DOCUMENT_INSERT,
                (root_id, item.path, "", item.size, item.mtime_ns, "failed", item.reason, 0, now),
            ).fetchall()
            return True
        doc_id, _, status, error, size, mtime_ns = current
        if (status, error, size, mtime_ns) == ("failed", item.reason, item.size, item.mtime_ns):
            return False
        _remove_chunks(conn, index, tally, doc_id)
        conn.execute(
            SQL_DOCUMENT_UPDATE,
            ("", item.size, item.mtime_ns, "failed", item.reason, 0, now, doc_id),
        )
        return True
    if current is not None and current[2] == "indexed" and current[1] == item.content_hash:
        # Read again with the same content (or another sync got here first).
        tally.unchanged += 1
        conn.execute(SQL_DOCUMENT_TOUCH, (item.size, item.mtime_ns, now, current[0]))
        return True
    if current is None:
        ((doc_id,),) = conn.execute(
            SQL_DOCUMENT_INSERT,
            (
                root_id,
                item.path,
                item.content_hash,
                item.size,
                item.mtime_ns,
                "indexed",
                None,
                len(item.chunks),
                now,
            ),
        ).fetchall()
        tally.added.append(item.path)
    else:
        doc_id = current[0]
        (tally.changed if current[2] == "indexed" else tally.added).append(item.path)
        conn.execute(
            SQL_DOCUMENT_UPDATE,
            (
                item.content_hash,
                item.size,
                item.mtime_ns,
                "indexed",
                None,
                len(item.chunks),
                now,
                doc_id,
            ),
        )
    # Chunks whose embedded text is unchanged stay, with their vectors; the
    # rest go, and the new ones come in.
    old: dict[str, list[int]] = {}
    order: dict[int, int] = {}
    for chunk_id, text_hash, ordinal in conn.execute(SQL_CHUNKS_OF_DOCUMENT, (doc_id,)).fetchall():
        old.setdefault(text_hash, []).append(chunk_id)
        order[chunk_id] = ordinal
    for ordinal, chunk in enumerate(item.chunks):
        text_hash = content_hash(chunk.embedded)
        kept = old.get(text_hash)
        if kept:
            chunk_id = kept.pop(0)
            if order[chunk_id] != ordinal:
                conn.execute(SQL_CHUNK_ORDINAL, (ordinal, chunk_id))
            tally.chunks_kept += 1
        else:
            index.add(conn, tally, doc_id, root_id, ordinal, chunk, text_hash, now)
    for leftovers in old.values():
        for chunk_id in leftovers:
            index.remove(conn, tally, chunk_id)
    return True


def _remove_chunks(conn: apsw.Connection, index: _Indexing, tally: _Tally, doc_id: int) -> None:
    for chunk_id, _, _ in conn.execute(SQL_CHUNKS_OF_DOCUMENT, (doc_id,)).fetchall():
        index.remove(conn, tally, chunk_id)


def _remove_document(
    conn: apsw.Connection, index: _Indexing, tally: _Tally, root_id: int, path: str
) -> bool:
    rows = conn.execute(SQL_DOCUMENT_BY_PATH, (root_id, path)).fetchall()
    if not rows:
        return False
    doc_id, _, status, *_ = rows[0]
    _remove_chunks(conn, index, tally, doc_id)
    conn.execute(SQL_DOCUMENT_DELETE, (doc_id,))
    if status == "indexed":
        tally.removed.append(path)
    return True


# ---------------------------------------------------------------------------
# Search helpers
# ---------------------------------------------------------------------------


def _prefix_params(prefix: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    if prefix is None:
        return None, None, None, None
    return prefix, prefix, prefix + "/", prefix + "0"


def keyword_search_params(
    query: str, *, root_id: int | None = None, path_prefix: str | None = None, k: int = 5
) -> tuple[Any, ...]:
    """The parameters :meth:`DocumentService.search` binds to :data:`SQL_CHUNK_KEYWORD_SEARCH`.

    So a test can ``EXPLAIN QUERY PLAN`` the exact keyword query that ships.

    Example:
        >>> from abathur.documents import keyword_search_params
        >>> keyword_search_params("restore backup", path_prefix="runbooks", k=3)
        ('"restore" OR "backup"', None, None, 'runbooks', 'runbooks', 'runbooks/', 'runbooks0', 3)
    """
    words = fts_query(query)
    if words is None:
        raise InvalidInputError(f"query {query!r} has no word to search for")
    return (words, root_id, root_id, *_prefix_params(path_prefix), k)


# ---------------------------------------------------------------------------
# Watching
# ---------------------------------------------------------------------------


class DocumentWatch:
    """A root kept in sync in the background: what :meth:`DocumentService.watch` returns.

    Every change under the root that could matter (a file a pattern matches,
    a directory, anything deleted) starts a sync, debounced so a burst of
    changes makes one. A failed sync is logged and the watch goes on.

    Attributes:
        root: the watched directory, resolved.
        patterns: the globs synced.
        syncs: syncs run so far (the initial one included).
        last_report: the last sync's report.
        last_error: the last error a sync or the watcher raised, if any.
    """

    def __init__(
        self,
        service: DocumentService,
        root: Path,
        patterns: tuple[str, ...],
        exclude: tuple[str, ...],
        max_file_bytes: int,
        debounce_ms: int,
    ) -> None:
        self._service = service
        self.root = root
        self.patterns = patterns
        self._exclude = exclude
        self._max_file_bytes = max_file_bytes
        self._debounce_ms = debounce_ms
        self.syncs = 0
        self.last_report: SyncReport | None = None
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._compiled = [_glob_regex(p) for p in patterns]
        self._excludes = [_glob_regex(p) for p in exclude]

    @property
    def is_running(self) -> bool:
        """True until :meth:`stop` (or the database closing) ends the watch."""
        return self._task is not None and not self._task.done()

    def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"abathur-watch {self.root}")

    async def _sync(self) -> None:
        try:
            report = await self._service.sync(
                self.root,
                self.patterns,
                exclude=self._exclude,
                max_file_bytes=self._max_file_bytes,
            )
        except ClosedError:
            self._stop.set()
            return
        except Exception as exc:  # a sync error must not end the watch
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("documents.watch_sync_failed", root=str(self.root))
            return
        self.syncs += 1
        self.last_report = report
        self.last_error = None

    def _wanted(self, change: object, path: str) -> bool:
        import watchfiles

        if path in self._service._own_files:
            return False
        if change == watchfiles.Change.deleted or os.path.isdir(path):
            return True
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return any(p.match(rel) for p in self._compiled) and not any(
            x.match(rel) for x in self._excludes
        )

    async def _run(self) -> None:
        import watchfiles

        delay = 0.5
        caught_up = False
        while not self._stop.is_set():
            try:
                async for changes in watchfiles.awatch(
                    self.root,
                    watch_filter=self._wanted,
                    debounce=self._debounce_ms,
                    step=min(50, self._debounce_ms),
                    stop_event=self._stop,
                    rust_timeout=500,
                    yield_on_timeout=True,
                    recursive=True,
                ):
                    delay = 0.5
                    # The watcher is live from its first yield: one more sync
                    # catches what changed between the initial sync and now.
                    if changes or not caught_up:
                        caught_up = True
                        await self._sync()
            except Exception as exc:  # the root vanished, too many watches...
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("documents.watch_failed", root=str(self.root), error=self.last_error)
            # The watcher ended or failed: start it again, backing off.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(30.0, delay * 2)

    async def stop(self) -> None:
        """Stop watching (a sync in progress finishes first). Idempotent.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             watch = await ab.documents.watch(tmp)
            ...             await watch.stop()
            ...             return watch.is_running
            >>> asyncio.run(demo())
            False
        """
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._service._watches.discard(self)

    async def __aenter__(self) -> DocumentWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------


class DocumentService:
    """Directories of markdown files, chunked, indexed and searchable: ``ab.documents``.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> from abathur import Abathur
        >>> async def demo():
        ...     with tempfile.TemporaryDirectory() as tmp:
        ...         (pathlib.Path(tmp) / "a.md").write_text("# A\\n\\nalpha\\n")
        ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
        ...             return (await ab.documents.sync(tmp)).added
        >>> asyncio.run(demo())
        ['a.md']
    """

    def __init__(self, db: Database, embeddings: EmbeddingService | None = None) -> None:
        self._db = db
        self._embeddings = embeddings
        self._lock = asyncio.Lock()
        self._watches: set[DocumentWatch] = set()
        path = os.path.realpath(db.path)
        # The database's own files: never synced, and never a reason to sync.
        self._own_files = frozenset(path + suffix for suffix in ("", "-wal", "-shm", "-journal"))

    async def sync(
        self,
        root: str | os.PathLike[str],
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        *,
        exclude: Sequence[str] | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        progress: Callable[[int, int], object] | None = None,
    ) -> SyncReport:
        """Make the index of ``root`` match the files the patterns select under it.

        Files are compared with what the last sync stored: unchanged ones
        (same size and mtime, or the same sha256) are not chunked again; new
        and changed ones are chunked (:func:`chunk_markdown`) and only their
        new chunks are embedded (queued for the worker, or taken from the
        embedding cache); files deleted, renamed or no longer matched lose
        their chunks. Bad files are reported in ``failed``, never raised:
        binary (a NUL byte), unreadable, invalid UTF-8, over
        ``max_file_bytes``, not a regular file, a broken symlink, a symlink
        loop or a symlink to a file outside the root, a file or directory
        whose name is not UTF-8 (reported with such bytes as ``\\xff``; a
        path must be UTF-8 text to be stored). Symlinked directories are not
        entered. A directory that cannot be listed is reported too,
        and the files known under it are kept. The work is written in small
        transactions, so readers and other writers are never held up for long.

        Args:
            root: the directory to sync. Its resolved path identifies it: a
                later sync of the same directory updates the same documents.
            patterns: globs relative to ``root`` (``**`` spans directories,
                ``*`` stays within one); default ``["**/*.md"]``.
            exclude: globs of files (or directories, pruned whole) to leave out.
            max_file_bytes: larger files are reported in ``failed`` (default 2 MiB).
            progress: called as ``progress(files_done, files_total)`` as the
                sync goes (from the event loop; its result is ignored).

        Returns:
            A :class:`~abathur.models.SyncReport`.

        Raises:
            NotFoundError: ``root`` does not exist.
            InvalidInputError: ``root`` is not a directory or its path is not
                UTF-8, a glob is blank,
                absolute or has a ``..`` segment, ``patterns`` is not a list,
                or ``max_file_bytes`` is out of range.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         root = pathlib.Path(tmp) / "docs"
            ...         (root / "ops").mkdir(parents=True)
            ...         (root / "ops" / "restore.md").write_text("# Restore\\n\\nVerify first.\\n")
            ...         (root / "blob.md").write_bytes(b"\\x00\\x01")
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             report = await ab.documents.sync(root, ["**/*.md"])
            ...             (root / "ops" / "restore.md").unlink()
            ...             again = await ab.documents.sync(root, ["**/*.md"])
            ...             return report.added, report.failed[0].reason, again.removed
            >>> asyncio.run(demo())
            (['ops/restore.md'], 'binary file (NUL byte at offset 0)', ['ops/restore.md'])
        """
        started = time.perf_counter()
        resolved = _check_root(root)
        patterns = _check_patterns(patterns, "patterns", allow_empty=False)
        excluded = _check_patterns(exclude or (), "exclude", allow_empty=True)
        max_bytes = _check_int(
            max_file_bytes, "max_file_bytes", minimum=1, maximum=MAX_FILE_BYTES_LIMIT
        )
        if progress is not None and not callable(progress):
            raise InvalidInputError(f"progress must be callable, got {type(progress).__name__}")
        if self._db.is_closed:
            raise ClosedError(f"database {str(self._db.path)!r} is closed")
        root_text = str(resolved)
        async with self._lock:
            root_id = await self._root_id(root_text)
            known = await self._db.read(
                lambda conn: {
                    path: _Known(*rest)
                    for path, *rest in conn.execute(SQL_DOCUMENTS_OF_ROOT, (root_id,))
                }
            )
            walk = await asyncio.to_thread(
                _walk,
                root_text,
                [_glob_regex(p) for p in patterns],
                [_reach(p) for p in patterns],
                [_glob_regex(p) for p in excluded],
                self._own_files,
            )
            tally = _Tally(failed=list(walk.failed))
            total = len(walk.files)
            done = 0
            if progress is not None:
                progress(0, total)
            pending: list[_Examined] = []
            for batch in _batched(walk.files, _BATCH_FILES):
                examined = await asyncio.to_thread(
                    _examine_batch, root_text, batch, known, max_bytes
                )
                for item in examined:
                    if item.outcome == "unchanged":
                        tally.unchanged += 1
                    else:
                        pending.append(item)
                if len(pending) >= _BATCH_FILES or sum(len(e.chunks) for e in pending) >= (
                    _BATCH_CHUNKS
                ):
                    tally.add(await self._write(root_id, root_text, pending))
                    pending = []
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if pending:
                tally.add(await self._write(root_id, root_text, pending))
            seen = set(walk.files)
            gone = [
                path
                for path in sorted(known)
                if path not in seen and not _under_any(path, walk.unlisted)
            ]
            for batch in _batched(gone, _BATCH_REMOVALS):
                tally.add(await self._remove(root_id, root_text, batch))
        if tally.queued and self._embeddings is not None:
            self._embeddings._notify()
        report = tally.report(root_text, started)
        log.info(
            "documents.synced",
            root=root_text,
            added=len(report.added),
            changed=len(report.changed),
            removed=len(report.removed),
            unchanged=report.unchanged,
            failed=len(report.failed),
            queued=report.embeddings_queued,
            seconds=report.seconds,
        )
        return report

    async def forget(self, root: str | os.PathLike[str]) -> SyncReport:
        """Take a synced directory out of the index: its documents, chunks, vectors and root.

        Nothing on disk is read or touched, so the directory may be gone
        already. Every document of the root is removed as :meth:`sync`
        removes a deleted file (its chunks, their keyword rows, their vectors
        and pending embedding jobs), in the same small transactions; the last
        one deletes the root itself, with an audit record
        (``documents.forget``). Interrupted, it can simply be run again.
        Memories and the embedding cache are not affected.

        Args:
            root: the directory as it was synced (resolved the same way).

        Returns:
            A :class:`~abathur.models.SyncReport` with the documents in
            ``removed`` and their chunks in ``chunks_removed``.

        Raises:
            InvalidInputError: ``root`` is not a usable path.
            NotFoundError: no sync ever recorded this directory.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         docs = pathlib.Path(tmp) / "docs"
            ...         docs.mkdir()
            ...         (docs / "tea.md").write_text("# Tea\\n\\nSteep green tea for 2 minutes.\\n")
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             await ab.documents.sync(docs)
            ...             gone = await ab.documents.forget(docs)
            ...             found = await ab.documents.search("green tea", mode="keyword")
            ...             return gone.removed, gone.chunks_removed, found.hits
            >>> asyncio.run(demo())
            (['tea.md'], 1, [])
        """
        started = time.perf_counter()
        root_text = str(_check_root(root, must_exist=False))
        if self._db.is_closed:
            raise ClosedError(f"database {str(self._db.path)!r} is closed")
        async with self._lock:
            rows = await self._db.read(
                lambda conn: conn.execute(SQL_ROOT_BY_PATH, (root_text,)).fetchall()
            )
            if not rows:
                raise NotFoundError(
                    f"root {root_text!r} was never synced into this database (nothing to forget)"
                )
            root_id = int(rows[0][0])
            paths = await self._db.read(
                lambda conn: sorted(
                    path for (path, *_) in conn.execute(SQL_DOCUMENTS_OF_ROOT, (root_id,))
                )
            )
            tally = _Tally()
            for batch in _batched(paths, _BATCH_REMOVALS):
                tally.add(await self._remove(root_id, root_text, batch))

            def write(conn: apsw.Connection) -> None:
                conn.execute(SQL_ROOT_FORGET, (root_id,))
                if conn.changes():
                    counts = {"documents": len(paths), "chunks_removed": tally.chunks_removed}
                    audit.append(
                        conn, "documents.forget", "document_root", root_text, counts,
                        at=time.time(),
                    )

            await self._db.write(write)
        report = tally.report(root_text, started)
        log.info(
            "documents.forgot",
            root=root_text,
            removed=len(report.removed),
            chunks_removed=report.chunks_removed,
            seconds=report.seconds,
        )
        return report

    async def _root_id(self, root: str) -> int:
        rows = await self._db.read(lambda conn: conn.execute(SQL_ROOT_BY_PATH, (root,)).fetchall())
        if rows:
            return int(rows[0][0])

        def write(conn: apsw.Connection) -> int:
            rows = conn.execute(SQL_ROOT_BY_PATH, (root,)).fetchall()
            if rows:
                return int(rows[0][0])
            now = time.time()
            ((root_id,),) = conn.execute(SQL_ROOT_INSERT, (root, now)).fetchall()
            audit.append(conn, "documents.add_root", "document_root", root, {}, at=now)
            return int(root_id)

        return await self._db.write(write)

    def _configured(self) -> bool:
        return self._embeddings is not None and self._embeddings.is_configured

    async def _write(self, root_id: int, root: str, items: list[_Examined]) -> _Tally:
        configured = self._configured()
        held = self._embeddings is not None and self._embeddings.is_probe

        def write(conn: apsw.Connection) -> _Tally:
            now = time.time()
            tally = _Tally()
            index = _Indexing(conn, configured=configured, held=held)
            wrote = False
            for item in items:
                wrote = _write_document(conn, index, tally, root_id, item, now) or wrote
            if wrote:
                conn.execute(SQL_ROOT_SYNCED, (now, root_id))
                audit.append(conn, "documents.sync", "document_root", root, tally.counts(), at=now)
            return tally

        return await self._db.write(write)

    async def _remove(self, root_id: int, root: str, paths: list[str]) -> _Tally:
        configured = self._configured()

        def write(conn: apsw.Connection) -> _Tally:
            now = time.time()
            tally = _Tally()
            index = _Indexing(conn, configured=configured)
            wrote = False
            for path in paths:
                wrote = _remove_document(conn, index, tally, root_id, path) or wrote
            if wrote:
                conn.execute(SQL_ROOT_SYNCED, (now, root_id))
                audit.append(conn, "documents.sync", "document_root", root, tally.counts(), at=now)
            return tally

        return await self._db.write(write)

    async def search(
        self,
        query: str,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        path_prefix: str | None = None,
        root: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        fresh: bool = False,
    ) -> DocumentSearchResult:
        """Find the document chunks that best match ``query``.

        Modes as for :meth:`MemoryService.search`: ``"keyword"`` (FTS5 BM25
        over headings and text, headings weighing double), ``"vector"``
        (cosine similarity of embeddings) or ``"hybrid"`` (reciprocal rank
        fusion of both). Filters apply before ranking. When the query cannot
        be embedded, vector and hybrid fall back to keyword and the result
        says so (``mode``, ``is_degraded``, ``degraded_reason``). Chunks
        written a moment ago are found by keyword at once and by vector once
        embedded (``await ab.embeddings.drain()`` waits for that, and
        ``result.pending`` counts the chunks in scope still waiting). With
        ``fresh=True`` (vector and hybrid) the chunks of ``root`` (of every
        root when none is given) still waiting are embedded inline first, as
        :meth:`MemoryService.search` does.

        ``min_score`` keeps, of the ``k`` best chunks, those whose
        ``relevance`` is at least that much: the cosine similarity to the
        query in vector and hybrid mode, the share of the query's words in
        the heading and text in keyword mode, as for
        :meth:`MemoryService.search`. No floor by default.

        Args:
            query: what to look for, in words (never FTS syntax).
            k: at most this many hits (1..1000).
            mode: ``"hybrid"`` (default), ``"keyword"`` or ``"vector"``.
            path_prefix: only documents at or under this relative path, whole
                segments (``"runbooks"`` covers ``runbooks/a.md``, not
                ``runbooks-old/a.md``).
            root: only documents of this synced directory (none match if it
                was never synced).
            min_score: the relevance floor, a number in [-1, 1]; ``None``
                (default): none.
            fresh: embed the waiting chunks in scope before searching.

        Returns:
            A :class:`~abathur.models.DocumentSearchResult`, hits best first;
            it iterates over its hits.

        Raises:
            InvalidInputError: the query is not a string, is blank or longer
                than 8192 characters; the mode is unknown; k is out of range;
                min_score is not a number in [-1, 1]; fresh is not a bool;
                or the path prefix or root is not a usable path.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         root = pathlib.Path(tmp)
            ...         (root / "restore.md").write_text(
            ...             "# Restore\\n\\nVerify the copy, stop writers, then swap the file.\\n")
            ...         (root / "tea.md").write_text("# Tea\\n\\nSteep green tea for 2 minutes.\\n")
            ...         async with Abathur.open(root / "d.db", embed_worker=False) as ab:
            ...             await ab.documents.sync(root)
            ...             await ab.embeddings.drain()
            ...             found = await ab.documents.search("bring the database back", k=1)
            ...             return found.mode, [(hit.path, hit.heading) for hit in found.hits]
            >>> asyncio.run(demo())
            ('hybrid', [('restore.md', 'Restore')])
        """
        check_query(query)
        _check_int(k, "k", minimum=1, maximum=MAX_SEARCH_K)
        if not isinstance(mode, str) or mode not in SEARCH_MODES:
            raise InvalidInputError(f"mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
        prefix = _check_prefix(path_prefix)
        floor = check_min_score(min_score)
        if not isinstance(fresh, bool):
            raise InvalidInputError(f"fresh must be a bool, got {type(fresh).__name__}")
        root_text: str | None = None
        if root is not None:
            if not isinstance(root, str | os.PathLike):
                raise InvalidInputError(f"root must be a path, got {type(root).__name__}")
            raw = os.fspath(root)
            if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
                raise InvalidInputError(f"root {raw!r} is not a usable path")
            _check_utf8_root(raw)
            root_text = os.path.realpath(raw)

        vector: np.ndarray | None = None
        reason: str | None = None
        if mode != "keyword":
            if self._embeddings is None:
                reason = "no embedder is attached to this document service"
            else:
                if fresh and self._embeddings.is_configured:
                    await self._embed_scope(self._embeddings, root_text)
                vector, reason = await self._embeddings._embed_query(query)
        settings = self._db.settings
        embedder = None if self._embeddings is None else self._embeddings.embedder
        model = None if embedder is None else embedder.name

        def read(
            conn: apsw.Connection,
        ) -> tuple[SearchMode, str | None, int, list[DocumentHit]]:
            used, why = resolve_mode(conn, VEC_TABLE, mode, vector, reason)
            root_id: int | None = None
            if root_text is not None:
                rows = conn.execute(SQL_ROOT_BY_PATH, (root_text,)).fetchall()
                if not rows:
                    return used, why, 0, []
                root_id = int(rows[0][0])
            pending = 0
            if mode != "keyword" and _has_chunks_table(conn):
                params = {"kind": KIND_NAME, "root_id": root_id}
                pending = conn.execute(SQL_PENDING_CHUNKS, params).fetchall()[0][0]
            depth = k if used != "hybrid" else max(HYBRID_DEPTH, 2 * k)
            rankings: list[list[tuple[int, float]]] = []
            if used in ("keyword", "hybrid"):
                words = fts_query(query)
                rankings.append(
                    conn.execute(
                        SQL_CHUNK_KEYWORD_SEARCH,
                        (words, root_id, root_id, *_prefix_params(prefix), depth),
                    ).fetchall()
                    if words is not None
                    else []
                )
            if used in ("vector", "hybrid"):
                assert vector is not None
                allowed: list[int] | None = None
                if prefix is not None:
                    allowed = [
                        chunk_id
                        for (chunk_id,) in conn.execute(
                            SQL_ALLOWED_CHUNKS,
                            (root_id, root_id, *_prefix_params(prefix)[1:]),
                        )
                    ]
                where = VectorFilter(
                    now=time.time(),
                    partition=None if root_id is None else str(root_id),
                    allowed_ids=allowed,
                )
                rankings.append(
                    vector_search(
                        conn,
                        VEC_TABLE,
                        vector,
                        n=depth,
                        candidates=k * settings.search_oversample,
                        where=where,
                    )
                )
            if used == "hybrid":
                ranked = rrf(
                    [[item for item, _ in ranking] for ranking in rankings],
                    k=settings.search_rrf_k,
                )[:k]
            else:
                ranked = rankings[0][:k]
            rows = conn.execute(SQL_HITS, (json.dumps([item for item, _ in ranked]),)).fetchall()
            by_id = {row[0]: row for row in rows}
            # A chunk removed since it was indexed (a pending vector delete) is left out.
            found = [(by_id[item], score) for item, score in ranked if item in by_id]
            cosine = dict(rankings[-1]) if used != "keyword" else {}
            relevance = _relevance(conn, used, query, vector, model, found, cosine)
            hits = []
            for ((_, heading, text, ordinal, path, root_path), score), rel in zip(
                found, relevance, strict=True
            ):
                if floor is not None and rel < floor:
                    continue
                hits.append(
                    DocumentHit.model_construct(
                        root=root_path,
                        path=path,
                        heading=heading,
                        text=text,
                        ordinal=ordinal,
                        score=float(score),
                        relevance=rel,
                    )
                )
            return used, why, pending, hits

        used, why, pending, hits = await self._db.read(read)
        return DocumentSearchResult.model_construct(
            query=query,
            mode=used,
            requested_mode=mode,
            is_degraded=used != mode,
            degraded_reason=why if used != mode else None,
            pending=pending,
            hits=hits,
        )

    async def _embed_scope(self, embeddings: EmbeddingService, root_text: str | None) -> None:
        """Embed, inline, the chunks of a root (or all) still waiting (``fresh=True``).

        An embedder that fails leaves them waiting: the search then runs on
        what is embedded and ``pending`` says how many it could not see.
        """

        def root_of(conn: apsw.Connection) -> int | Literal[False] | None:
            if not _has_chunks_table(conn):
                return False
            if root_text is None:
                return None
            rows = conn.execute(SQL_ROOT_BY_PATH, (root_text,)).fetchall()
            return int(rows[0][0]) if rows else False

        root_id = await self._db.read(root_of)
        if root_id is False:
            return  # nothing synced there: nothing waits
        select = (SQL_PENDING_CHUNK_JOBS, {"kind": KIND_NAME, "root_id": root_id})
        try:
            await embeddings._embed_now(select)
        except EmbedderError as exc:
            log.warning("documents.fresh_failed", error=exc.message)

    async def watch(
        self,
        root: str | os.PathLike[str],
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        *,
        exclude: Sequence[str] | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        debounce_ms: int = 500,
    ) -> DocumentWatch:
        """Sync ``root`` now, then again whenever its files change, in the background.

        Changes are seen with watchfiles (inotify, FSEvents...) and grouped:
        a sync starts once no new change has come for ``debounce_ms`` (or
        after at most that long). Errors are logged and kept on the handle
        (``last_error``); the watch goes on. Closing the database stops it.

        Args:
            root: as for :meth:`sync`.
            patterns: as for :meth:`sync`.
            exclude: as for :meth:`sync`.
            max_file_bytes: as for :meth:`sync`.
            debounce_ms: how long changes are gathered into one sync (1..60000).

        Returns:
            A running :class:`DocumentWatch`; ``await watch.stop()`` ends it.

        Raises:
            NotFoundError, InvalidInputError: as for :meth:`sync`, or
                ``debounce_ms`` is out of range.
            ClosedError: the database is closed.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         async with Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none") as ab:
            ...             watch = await ab.documents.watch(tmp, debounce_ms=50)
            ...             (pathlib.Path(tmp) / "new.md").write_text("# New\\n\\nhello\\n")
            ...             for _ in range(200):
            ...                 if watch.last_report and watch.last_report.added:
            ...                     break
            ...                 await asyncio.sleep(0.05)
            ...             await watch.stop()
            ...             return watch.last_report.added
            >>> asyncio.run(demo())
            ['new.md']
        """
        resolved = _check_root(root)
        checked = _check_patterns(patterns, "patterns", allow_empty=False)
        excluded = _check_patterns(exclude or (), "exclude", allow_empty=True)
        max_bytes = _check_int(
            max_file_bytes, "max_file_bytes", minimum=1, maximum=MAX_FILE_BYTES_LIMIT
        )
        debounce = _check_int(debounce_ms, "debounce_ms", minimum=1, maximum=60_000)
        handle = DocumentWatch(self, resolved, checked, excluded, max_bytes, debounce)
        handle.last_report = await self.sync(
            resolved, checked, exclude=excluded, max_file_bytes=max_bytes
        )
        handle.syncs = 1
        handle._start()
        self._watches.add(handle)
        return handle

    async def close(self) -> None:
        """Stop every watch of this service; :meth:`Abathur.close` calls it. Idempotent.

        Example:
            >>> import asyncio, tempfile, pathlib
            >>> from abathur import Abathur
            >>> async def demo():
            ...     with tempfile.TemporaryDirectory() as tmp:
            ...         ab = await Abathur.open(pathlib.Path(tmp) / "d.db", embedder="none")
            ...         watch = await ab.documents.watch(tmp)
            ...         await ab.close()
            ...         return watch.is_running
            >>> asyncio.run(demo())
            False
        """
        for handle in list(self._watches):
            await handle.stop()


def _batched(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _under_any(path: str, directories: Sequence[str]) -> bool:
    return any(d == "." or path.startswith(d + "/") for d in directories)

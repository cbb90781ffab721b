"""Markdown cut into chunks along its headings, sized for the bundled MiniLM.

See :func:`chunk_markdown`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from abathur.documents.tokens import pieces
from abathur.embeddings.bundled import MAX_TOKENS
from abathur.errors import InvalidInputError

__all__ = [
    "CHUNK_OVERLAP_TOKENS",
    "CHUNK_TOKENS",
    "EMBED_TOKENS",
    "HEADING_TOKENS",
    "Chunk",
    "chunk_markdown",
    "chunk_texts",
    "embedded_text",
]

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
        return embedded_text(self.heading, self.text)


def embedded_text(heading: str, text: str) -> str:
    """What the embedder reads of a chunk: the heading path, a blank line, the text."""
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
        spans = pieces([heading])[0]
        if len(spans) <= HEADING_TOKENS:
            return heading
        if len(titles) == 1:
            return heading[: spans[HEADING_TOKENS - 1][1]]
        titles = titles[1:]
    return ""


def chunk_texts(texts: Sequence[str]) -> list[list[Chunk]]:
    """:func:`chunk_markdown` of many documents, with one tokenizer call for all."""
    sections = [_sections(text.replace("\r\n", "\n").replace("\r", "\n")) for text in texts]
    headings: dict[tuple[str, ...], str] = {}
    for document in sections:
        for titles, _ in document:
            headings.setdefault(tuple(titles), "")
    keys = list(headings)
    # Most heading paths fit; only the few that do not are cut one by one.
    for key, spans in zip(
        keys, pieces([_HEADING_SEP.join(t for t in k if t) for k in keys]), strict=True
    ):
        joined = _HEADING_SEP.join(t for t in key if t)
        headings[key] = joined if len(spans) <= HEADING_TOKENS else _heading(list(key))
    heading_tokens = dict(
        zip(headings.values(), map(len, pieces(list(headings.values()))), strict=True)
    )
    bodies = pieces([body for document in sections for _, body in document])
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
        tokens = len(pieces([embedded_text(heading, text)])[0])
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
    return chunk_texts([text])[0]

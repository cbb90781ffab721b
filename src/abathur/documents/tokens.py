"""Word pieces: the bundled MiniLM's own tokenizer, loaded alone (no model).

Chunking counts what a chunk costs the embedder in the embedder's own units.
When the tokenizer cannot be loaded, a pseudo count that over-counts English
stands in for it.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["load_tokenizer", "pieces"]

log = structlog.get_logger(__name__)

_tokenizer: Tokenizer | None = None
_tokenizer_failed = False
_tokenizer_lock = threading.Lock()
# The fallback when the tokenizer cannot be loaded: an over-count for
# English (a word piece averages ~4 characters; this counts one per 3 letters,
# one per digit and one per other character).
_PSEUDO_PIECE = re.compile(r"[A-Za-z]{1,3}|\S")


def load_tokenizer() -> Tokenizer | None:
    """The bundled MiniLM's tokenizer, loaded once; None if it cannot be (logged once)."""
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


def pieces(texts: list[str]) -> list[list[tuple[int, int]]]:
    """The character spans of each text's word pieces ([CLS]/[SEP] not included)."""
    if not texts:
        return []
    tokenizer = load_tokenizer()
    if tokenizer is None:
        return [[m.span() for m in _PSEUDO_PIECE.finditer(text)] for text in texts]
    return [e.offsets for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

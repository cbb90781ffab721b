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

from abathur.documents.chunking import (
    CHUNK_OVERLAP_TOKENS,
    CHUNK_TOKENS,
    EMBED_TOKENS,
    Chunk,
    chunk_markdown,
)
from abathur.documents.search import CHUNK_KIND
from abathur.documents.service import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_PATTERNS,
    DocumentService,
)
from abathur.documents.watch import DocumentWatch

__all__ = [
    "CHUNK_KIND",
    "CHUNK_OVERLAP_TOKENS",
    "CHUNK_TOKENS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_PATTERNS",
    "EMBED_TOKENS",
    "Chunk",
    "DocumentService",
    "DocumentWatch",
    "chunk_markdown",
]

"""documents.sync / search / watch: real files in temporary directories.

Most tests embed with ``WordHashEmbedder``, the countable test double of
tests/unit/test_embedding_queue.py, so they can prove what was (not) sent to the
embedder; the semantic test runs the real bundled MiniLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abathur import (
    Abathur,
    DocumentSearchResult,
    InvalidInputError,
    NotFoundError,
    SyncReport,
)
from abathur.backends.sqlite.documents import (
    SQL_CHUNKS_OF_DOCUMENT,
    SQL_DOCUMENT_BY_PATH,
    SQL_DOCUMENTS_OF_ROOT,
    SQL_ROOT_BY_PATH,
)
from abathur.backends.sqlite.search import SQL_CHUNK_KEYWORD_SEARCH, chunk_keyword_params
from abathur.documents import (
    CHUNK_OVERLAP_TOKENS,
    EMBED_TOKENS,
    chunk_markdown,
)
from abathur.documents.tokens import load_tokenizer
from abathur.memory import rebuild_keyword_index
from abathur.ops.integrity import rebuild_derived_indexes, run_checks
from abathur.stores.documents import (
    ChunkEntry,
    ChunkHit,
    ChunkRef,
    DocumentFile,
    DocumentRow,
    DocumentState,
)
from tests.backends import BackendHandle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged


@pytest.fixture
def embedder() -> WordHashEmbedder:
    return WordHashEmbedder()


@pytest.fixture
async def dab(backend: BackendHandle, embedder: WordHashEmbedder):
    """An Abathur with the countable test embedder and no worker: tests drain explicitly."""
    async with backend.open(embedder=embedder, embed_worker=False) as opened:
        yield opened


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    return root


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def rows(ab: Abathur, sql: str, params: tuple = ()) -> list[tuple]:
    return await ab.db.read(lambda tx: tx.conn.execute(sql, params).fetchall())


async def count(ab: Abathur, table: str) -> int:
    return (await rows(ab, f"SELECT count(*) FROM {table}"))[0][0]


THREE_SECTIONS = """# Operations

Backups run every night at two.

## Restore

Stop the writers, verify the copy, then swap the file in.

## Rollback

Deploy the previous release and run the smoke suite.
"""


# --------------------------------------------------------------------------- chunking


def test_chunks_follow_headings_and_keep_the_heading_path() -> None:
    text = (
        "Intro before any heading.\n\n"
        "# Guide\n\nTop text.\n\n"
        "## Install\n\nRun make.\n\n"
        "### Linux\n\nUse apt.\n\n"
        "## Use\n\nCall it.\n\n"
        "Setext title\n============\n\nUnder setext.\n\n"
        "Sub\n---\nUnder sub.\n"
    )
    assert [(c.heading, c.text) for c in chunk_markdown(text)] == [
        ("", "Intro before any heading."),
        ("Guide", "Top text."),
        ("Guide > Install", "Run make."),
        ("Guide > Install > Linux", "Use apt."),
        ("Guide > Use", "Call it."),
        ("Setext title", "Under setext."),
        ("Setext title > Sub", "Under sub."),
    ]


def test_code_fences_front_matter_and_breaks_are_not_headings() -> None:
    text = (
        "---\ntitle: Runbook\n---\n\n"
        "# Real\n\n"
        "```sh\n# a shell comment, not a heading\n```\n\n"
        "~~~\n## nor this\n~~~\n\n"
        "- a list item\n---\n\n"
        "#hashtag is text\n"
    )
    chunks = chunk_markdown(text)
    assert [c.heading for c in chunks] == ["", "Real"]
    assert chunks[0].text == "---\ntitle: Runbook\n---"
    assert "# a shell comment" in chunks[1].text and "## nor this" in chunks[1].text
    assert "#hashtag is text" in chunks[1].text


def test_empty_sections_and_documents_make_no_chunk() -> None:
    assert chunk_markdown("") == []
    assert chunk_markdown("# Only\n\n## Headings\n") == []
    assert chunk_markdown("\r\n\r\n   \n") == []


def test_every_chunk_fits_the_model_and_the_text_is_covered() -> None:
    tokenizer = load_tokenizer()
    assert tokenizer is not None, "the bundled tokenizer must load"
    sentence = "The operator restores the verified backup before traffic returns. "
    long_title = " ".join(f"Chapter{i}" for i in range(80))
    text = "\n".join(
        [
            "# Long paragraphs",
            "",
            sentence * 120,
            "",
            "## One line without any sentence end " + "word " * 900,
            "",
            "## Code",
            "```",
            *(f"line_{i} = compute({i}, {i * 7})" for i in range(300)),
            "```",
            f"## {long_title}",
            "",
            "東京の天気は晴れです。" * 200,
            "",
            "## A giant word",
            "",
            "x" * 30_000 + " tail",
            "",
            "## Unicode",
            "",
            "Café naïve résumé, «quotes» and emoji 🙂 " * 80,
        ]
    )
    chunks = chunk_markdown(text)
    assert len(chunks) > 20
    for chunk in chunks:
        pieces = len(tokenizer.encode(chunk.embedded).ids)  # [CLS] and [SEP] included
        assert pieces <= EMBED_TOKENS + 2 == 256, (pieces, chunk.heading[:40], chunk.text[:60])
        assert chunk.tokens == pieces - 2
    # Nothing is lost: every word of the source appears in some chunk.
    joined = "\n".join(c.text for c in chunks)
    for word in ("restores", "line_299", "compute(150,", "tail", "emoji", "天気"):
        assert word in joined
    # A title too long alone is cut; a long path loses its outer titles first.
    assert any(c.heading.startswith("Chapter0 Chapter1 ") for c in chunks)
    nested = chunk_markdown(f"# {long_title}\n\n## Middle part\n\n### Inner part\n\nbody text\n")
    assert [(c.heading, c.text) for c in nested] == [("Middle part > Inner part", "body text")]


def test_neighbouring_chunks_of_a_section_overlap() -> None:
    sentences = [f"Sentence number {i} talks about item {i}." for i in range(200)]
    chunks = chunk_markdown("# Long\n\n" + " ".join(sentences))
    assert len(chunks) >= 4
    for before, after in itertools.pairwise(chunks):
        # The next chunk starts with a sentence the previous one ends with.
        first_sentence = after.text.split(". ")[0]
        assert first_sentence in before.text
        assert len(first_sentence.split()) <= CHUNK_OVERLAP_TOKENS
        # And cuts fall between sentences.
        assert before.text.endswith(".")


# --------------------------------------------------------------------------- sync basics


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_sync_indexes_files_and_a_second_sync_embeds_nothing(
    dab: Abathur, docs: Path, embedder: WordHashEmbedder
) -> None:
    write(docs, "ops.md", THREE_SECTIONS)
    write(docs, "guide/start.md", "# Start\n\nInstall with make.\n")
    write(docs, "notes.txt", "not markdown")
    report = await dab.documents.sync(docs, ["**/*.md"])
    assert isinstance(report, SyncReport)
    assert report.root == str(docs.resolve())
    assert report.added == ["guide/start.md", "ops.md"]
    assert (report.changed, report.removed, report.unchanged, report.failed) == ([], [], 0, [])
    assert report.chunks_added == 4 == report.embeddings_queued
    assert await count(dab, "embedding_queue") == 4
    drained = await dab.embeddings.drain()
    assert (drained.embedded, drained.calls) == (4, 1)

    usage_before = await count(dab, "usage_ledger")
    calls_before = embedder.calls
    again = await dab.documents.sync(docs, ["**/*.md"])
    assert (again.added, again.changed, again.removed, again.unchanged) == ([], [], [], 2)
    assert (again.chunks_added, again.chunks_removed, again.embeddings_queued) == (0, 0, 0)
    assert await count(dab, "embedding_queue") == 0
    assert (await dab.embeddings.drain()).embedded == 0
    assert embedder.calls == calls_before
    assert await count(dab, "usage_ledger") == usage_before


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_a_resync_after_touching_files_rereads_but_writes_no_chunk(
    dab: Abathur, docs: Path
) -> None:
    path = write(docs, "a.md", THREE_SECTIONS)
    await dab.documents.sync(docs)
    chunks = await rows(dab, "SELECT id, content_hash FROM chunks ORDER BY id")
    future = time.time() + 100
    os.utime(path, (future, future))
    report = await dab.documents.sync(docs)
    assert (report.unchanged, report.changed, report.chunks_added) == (1, [], 0)
    assert await rows(dab, "SELECT id, content_hash FROM chunks ORDER BY id") == chunks
    (mtime_ns,) = (await rows(dab, "SELECT mtime_ns FROM documents"))[0]
    assert mtime_ns == path.stat().st_mtime_ns


async def test_a_recently_written_file_is_hashed_even_with_its_old_size_and_mtime(
    dab: Abathur, docs: Path
) -> None:
    # Same size, mtime put back: the pre-check would say "unchanged", but the
    # file was synced less than 2 s after it was written, so the hash decides.
    path = write(docs, "a.md", "# A\n\nalpha beta\n")
    stamp = path.stat().st_mtime_ns
    await dab.documents.sync(docs)
    path.write_text("# A\n\ngamma zeta\n")
    os.utime(path, ns=(stamp, stamp))
    report = await dab.documents.sync(docs)
    assert report.changed == ["a.md"]
    hits = await dab.documents.search("gamma", mode="keyword")
    assert [h.path for h in hits.hits] == ["a.md"]


async def test_an_old_file_with_unchanged_size_and_mtime_is_not_read(
    dab: Abathur, docs: Path
) -> None:
    path = write(docs, "a.md", "# A\n\nalpha beta\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    await dab.documents.sync(docs)
    stamp = path.stat().st_mtime_ns
    path.write_text("# A\n\ngamma zeta\n")  # same length
    os.utime(path, ns=(stamp, stamp))
    report = await dab.documents.sync(docs)
    assert (report.unchanged, report.changed) == (1, [])  # the fast pre-check, by design


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_a_changed_file_re_embeds_only_its_changed_chunks(
    dab: Abathur, docs: Path, embedder: WordHashEmbedder
) -> None:
    path = write(docs, "ops.md", THREE_SECTIONS)
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    before = dict(await rows(dab, "SELECT heading, id FROM chunks"))
    vectors_before = set(await rows(dab, "SELECT item_id, cache_id FROM chunks_vec"))
    embedder.texts.clear()

    path.write_text(THREE_SECTIONS.replace("smoke suite", "smoke suite twice"))
    report = await dab.documents.sync(docs)
    assert report.changed == ["ops.md"]
    assert (report.chunks_kept, report.chunks_added, report.chunks_removed) == (2, 1, 1)
    assert report.embeddings_queued == 1
    drained = await dab.embeddings.drain()
    assert (drained.embedded, drained.calls) == (1, 1)
    assert embedder.texts == [
        "Operations > Rollback\n\nDeploy the previous release and run the smoke suite twice."
    ]
    after = dict(await rows(dab, "SELECT heading, id FROM chunks"))
    assert after["Operations"] == before["Operations"]
    assert after["Operations > Restore"] == before["Operations > Restore"]
    assert after["Operations > Rollback"] != before["Operations > Rollback"]
    kept = {(i, c) for i, c in vectors_before if i != before["Operations > Rollback"]}
    assert kept <= set(await rows(dab, "SELECT item_id, cache_id FROM chunks_vec"))


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_a_section_moved_keeps_its_chunk_and_order_follows_the_file(
    dab: Abathur, docs: Path, embedder: WordHashEmbedder
) -> None:
    path = write(docs, "a.md", "# A\n\nfirst part\n\n# B\n\nsecond part\n")
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    embedder.texts.clear()
    path.write_text("# B\n\nsecond part\n\n# A\n\nfirst part\n")
    report = await dab.documents.sync(docs)
    assert (report.chunks_kept, report.chunks_added, report.embeddings_queued) == (2, 0, 0)
    ordered = await rows(dab, "SELECT heading FROM chunks ORDER BY ordinal")
    assert ordered == [("B",), ("A",)]
    assert (await dab.embeddings.drain()).embedded == 0 and embedder.texts == []


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_deleted_files_lose_chunks_fts_rows_jobs_and_vectors(
    dab: Abathur, docs: Path
) -> None:
    write(docs, "keep.md", "# Keep\n\nkept words\n")
    gone = write(docs, "gone.md", "# Gone\n\nvanishing words\n")
    queued = write(docs, "queued.md", "# Queued\n\nnever embedded\n")
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    gone.unlink()
    await dab.documents.sync(docs)
    queued.unlink()
    write(docs, "later.md", "# Later\n\nlater words\n")
    report = await dab.documents.sync(docs)  # queued.md's job is still waiting
    assert report.removed == ["queued.md"] and report.added == ["later.md"]
    assert [p for (p,) in await rows(dab, "SELECT path FROM documents ORDER BY path")] == [
        "keep.md",
        "later.md",
    ]
    assert (await dab.documents.search("vanishing", mode="keyword")).hits == []
    assert (await dab.documents.search("never", mode="keyword")).hits == []
    await dab.embeddings.drain()
    live = {i for (i,) in await rows(dab, "SELECT id FROM chunks")}
    assert {i for (i,) in await rows(dab, "SELECT item_id FROM chunks_vec")} == live
    assert await count(dab, "embedding_queue") == 0
    fts = await rows(dab, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'vanishing'")
    assert fts == [(0,)]
    report = await run_checks_async(dab)
    assert report.is_ok, report


async def run_checks_async(ab: Abathur):
    return await asyncio.to_thread(run_checks, ab.path)


async def test_a_renamed_file_moves_without_calling_the_embedder(
    dab: Abathur, docs: Path, embedder: WordHashEmbedder
) -> None:
    old = write(docs, "old/name.md", THREE_SECTIONS)
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    calls = embedder.calls
    (docs / "new").mkdir()
    old.rename(docs / "new" / "name.md")
    report = await dab.documents.sync(docs)
    assert (report.added, report.removed) == (["new/name.md"], ["old/name.md"])
    assert (report.chunks_added, report.embeddings_queued) == (3, 0)  # vectors from the cache
    assert (await dab.embeddings.drain()).embedded == 0
    assert embedder.calls == calls
    found = await dab.documents.search("previous release smoke", mode="vector", k=1)
    assert [h.path for h in found.hits] == ["new/name.md"]


async def test_files_no_longer_matched_or_excluded_are_removed(dab: Abathur, docs: Path) -> None:
    write(docs, "a.md", "# A\n\nalpha\n")
    write(docs, "drafts/b.md", "# B\n\nbeta\n")
    write(docs, "deep/er/c.md", "# C\n\ngamma\n")
    assert (await dab.documents.sync(docs)).added == ["a.md", "deep/er/c.md", "drafts/b.md"]
    report = await dab.documents.sync(docs, exclude=["drafts/**"])
    assert report.removed == ["drafts/b.md"] and report.unchanged == 2
    report = await dab.documents.sync(docs, ["*.md"])  # the top level only
    assert report.removed == ["deep/er/c.md"] and report.unchanged == 1
    report = await dab.documents.sync(docs, ["**/c.md", "drafts/*.md"])
    assert report.added == ["deep/er/c.md", "drafts/b.md"] and report.removed == ["a.md"]


async def test_two_roots_are_kept_apart(dab: Abathur, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, "a.md", "# A\n\nshared word apple\n")
    write(two, "a.md", "# A\n\nshared word banana\n")
    await dab.documents.sync(one)
    await dab.documents.sync(two)
    (one / "a.md").unlink()
    assert (await dab.documents.sync(one)).removed == ["a.md"]
    hits = (await dab.documents.search("shared word", mode="keyword")).hits
    assert [(h.root, h.path) for h in hits] == [(str(two.resolve()), "a.md")]


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_many_files_are_written_in_small_transactions(dab: Abathur, docs: Path) -> None:
    for i in range(100):
        write(docs, f"f{i:03}.md", f"# File {i}\n\nbody {i}\n")
    report = await dab.documents.sync(docs)
    assert len(report.added) == 100
    batches = await rows(dab, "SELECT count(*) FROM audit_log WHERE action = 'documents.sync'")
    assert batches[0][0] >= 4  # at most 32 files per write transaction
    seen: list[tuple[int, int]] = []
    await dab.documents.sync(docs, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 100) and seen[-1] == (100, 100)


async def test_a_sync_that_changes_nothing_writes_nothing(dab: Abathur, docs: Path) -> None:
    path = write(docs, "a.md", "# A\n\nalpha\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    write(docs, "bad.md", "").write_bytes(b"\xff\xfe")
    await dab.documents.sync(docs)
    async with assert_unchanged(dab):
        report = await dab.documents.sync(docs)
    assert report.unchanged == 1 and [f.path for f in report.failed] == ["bad.md"]


# --------------------------------------------------------------------------- bad files


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_bad_files_are_reported_and_skipped(dab: Abathur, docs: Path, tmp_path: Path) -> None:
    good = write(docs, "good.md", "# Good\n\nfine text\n")
    os.utime(good, (time.time() - 3600, time.time() - 3600))  # no re-hash on the next sync
    (docs / "binary.md").write_bytes(b"# looks like\x00binary")
    (docs / "latin1.md").write_bytes("# Café\n".encode("latin-1"))
    (docs / "huge.md").write_text("# Huge\n\n" + "x" * 5000)
    (docs / "loop.md").symlink_to(docs / "loop2.md")
    (docs / "loop2.md").symlink_to(docs / "loop.md")
    (docs / "broken.md").symlink_to(docs / "missing-target.md")
    outside = write(tmp_path, "secret.md", "# Secret\n\noutside the root\n")
    (docs / "escape.md").symlink_to(outside)
    (docs / "inside.md").symlink_to(docs / "good.md")
    os.mkfifo(docs / "pipe.md")
    (docs / "up").symlink_to(tmp_path, target_is_directory=True)  # a directory link: not entered
    (docs / "dir.md").mkdir()
    report = await dab.documents.sync(docs, max_file_bytes=1000)
    reasons = {f.path: f.reason for f in report.failed}
    assert reasons == {
        "binary.md": "binary file (NUL byte at offset 12)",
        "latin1.md": "invalid UTF-8 at byte 5",
        "huge.md": "5008 bytes, over the 1000-byte limit",
        "loop.md": "symlink loop",
        "loop2.md": "symlink loop",
        "broken.md": "broken symlink",
        "escape.md": "symlink points outside the root",
        "pipe.md": "not a regular file",
    }
    assert report.added == ["good.md", "inside.md"]
    paths = {p for (p,) in await rows(dab, "SELECT path FROM documents WHERE status = 'indexed'")}
    assert paths == {"good.md", "inside.md"}
    assert (await dab.documents.search("outside", mode="keyword")).hits == []
    # Reported again while they stay bad, without writing anything.
    async with assert_unchanged(dab):
        again = await dab.documents.sync(docs, max_file_bytes=1000)
    assert {f.path for f in again.failed} == set(reasons)


def bytes_path(directory: Path, name: bytes) -> Path:
    """``directory / name`` for a name that is not UTF-8 (Python holds it surrogate-escaped)."""
    return Path(os.fsdecode(os.fsencode(directory) + b"/" + name))


async def test_a_file_or_directory_name_that_is_not_utf8_is_reported_and_the_rest_sync(
    dab: Abathur, docs: Path
) -> None:
    # Issue 11, item 5: one such name made every sync die with UnicodeEncodeError.
    for rel, text in (("good.md", "plain words here"), ("sub/ok.md", "plain words too")):
        hour_ago = time.time() - 3600  # old enough not to be re-hashed on the rerun
        os.utime(write(docs, rel, f"# {rel}\n\n{text}\n"), (hour_ago, hour_ago))
    bytes_path(docs, b"bad\xff.md").write_bytes(b"# Bad\n\nunreachable words\n")
    bad_dir = bytes_path(docs, b"dir\xfe")
    bad_dir.mkdir()
    (bad_dir / "inside.md").write_text("# Inside\n\nunreachable words\n")
    (docs / "sub" / os.fsdecode(b"x\xc3(.md")).write_bytes(b"# X\n")  # a broken 2-byte sequence
    (docs / os.fsdecode(b"skip\xff.txt")).write_bytes(b"not matched")  # no pattern: not reported

    report = await dab.documents.sync(docs)
    assert report.added == ["good.md", "sub/ok.md"]
    assert {f.path: f.reason for f in report.failed} == {
        "bad\\xff.md": "file name is not valid UTF-8 (byte 0xff at offset 3): rename it to sync it",
        "dir\\xfe": "directory name is not valid UTF-8 (byte 0xfe at offset 3): rename it to "
        "sync the files under it",
        "sub/x\\xc3(.md": "file name is not valid UTF-8 (byte 0xc3 at offset 1): rename it to "
        "sync it",
    }
    # Every string of the report is printable UTF-8: it goes into JSON and terminals.
    json.dumps(report.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
    assert [h.path for h in (await dab.documents.search("plain words", mode="keyword")).hits] == [
        "good.md",
        "sub/ok.md",
    ]
    assert (await dab.documents.search("unreachable", mode="keyword")).hits == []

    # A rerun reports the same, writes nothing, and a forget takes the rest out.
    async with assert_unchanged(dab):
        again = await dab.documents.sync(docs)
    assert again.failed == report.failed and again.unchanged == 2 and again.added == []
    gone = await dab.documents.forget(docs)
    assert gone.removed == ["good.md", "sub/ok.md"]


async def test_a_root_whose_name_is_not_utf8_is_refused_with_a_printable_message(
    dab: Abathur, docs: Path
) -> None:
    root = bytes_path(docs, b"r\xff")
    root.mkdir()
    write(root, "a.md", "# A\n\nalpha\n")
    for call in (dab.documents.sync, dab.documents.forget, dab.documents.watch):
        async with assert_unchanged(dab):
            with pytest.raises(InvalidInputError) as ei:
                await call(root)
        assert "not valid UTF-8" in ei.value.message
        assert "r\\xff" in ei.value.message
        ei.value.message.encode("utf-8")  # printable: no lone surrogate


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Make file permissions bite: root reads everything, so drop the effective uid."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


async def test_unreadable_files_and_directories_are_reported(dab: Abathur) -> None:
    # Outside pytest's tmp_path: its parents are private to the user running the tests.
    docs = Path(tempfile.mkdtemp(prefix="abathur-perm-"))
    try:
        docs.chmod(0o755)
        write(docs, "ok.md", "# Ok\n\nreadable\n").chmod(0o644)
        locked = write(docs, "locked/inside.md", "# In\n\nlisted before\n")
        locked.chmod(0o644)
        (docs / "locked").chmod(0o755)
        await dab.documents.sync(docs)  # everything readable: both indexed
        secret = write(docs, "secret.md", "# Secret\n\nhidden\n")
        secret.chmod(0o000)
        (docs / "locked").chmod(0o000)
        with unprivileged():
            report = await dab.documents.sync(docs)
        assert {f.path: f.reason for f in report.failed} == {
            "secret.md": "permission denied",
            "locked": "cannot list directory: permission denied",
        }
        # A directory that cannot be listed is not a deletion: its files stay.
        assert report.removed == [] and report.unchanged == 1
        assert [h.path for h in (await dab.documents.search("listed", mode="keyword")).hits] == [
            "locked/inside.md"
        ]
    finally:
        (docs / "locked").chmod(0o755)
        shutil.rmtree(docs)


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_a_file_that_turns_bad_loses_its_chunks_and_comes_back_when_fixed(
    dab: Abathur, docs: Path, embedder: WordHashEmbedder
) -> None:
    path = write(docs, "a.md", THREE_SECTIONS)
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    path.write_bytes(b"\xff" + path.read_bytes())
    report = await dab.documents.sync(docs)
    assert [f.reason for f in report.failed] == ["invalid UTF-8 at byte 0"]
    assert report.chunks_removed == 3 and await count(dab, "chunks") == 0
    assert (await dab.documents.search("writers", mode="keyword")).hits == []
    calls = embedder.calls
    path.write_text(THREE_SECTIONS)
    report = await dab.documents.sync(docs)
    assert report.added == ["a.md"] and report.embeddings_queued == 0  # the cache has them
    assert embedder.calls == calls
    assert [h.path for h in (await dab.documents.search("writers", mode="keyword")).hits] == [
        "a.md"
    ]


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_a_bom_and_crlf_line_ends_are_read_as_text(dab: Abathur, docs: Path) -> None:
    (docs / "win.md").write_bytes("\ufeff# Title\r\n\r\nWindows text\r\n".encode())
    await dab.documents.sync(docs)
    ((heading, text),) = await rows(dab, "SELECT heading, text FROM chunks")
    assert (heading, text) == ("Title", "Windows text")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patterns": "**/*.md"}, "must be a list"),
        ({"patterns": []}, "at least one glob"),
        ({"patterns": ["../*.md"]}, "'..' segment"),
        ({"patterns": ["/etc/*.md"]}, "relative to the root"),
        ({"patterns": ["docs\\*.md"]}, "relative to the root"),
        ({"patterns": [" *.md"]}, "blank or padded"),
        ({"patterns": ["a/\n.md"]}, "control character"),
        ({"patterns": [3]}, "must hold strings"),
        ({"exclude": ["a/../b"]}, "'..' segment"),
        ({"max_file_bytes": 0}, "between 1 and"),
        ({"max_file_bytes": True}, "must be an integer"),
        ({"progress": 3}, "callable"),
    ],
)
async def test_bad_sync_arguments_are_refused_before_any_write(
    ab: Abathur, docs: Path, kwargs: dict, message: str
) -> None:
    write(docs, "a.md", "# A\n\nalpha\n")
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.documents.sync(docs, **kwargs)
    assert ei.value.code == "invalid_input"
    assert message in ei.value.message


async def test_a_missing_or_wrong_root_is_refused(ab: Abathur, docs: Path) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(NotFoundError) as ei:
            await ab.documents.sync(docs / "nope")
    assert ei.value.code == "not_found" and "does not exist" in ei.value.message
    file = write(docs, "a.md", "x")
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei2:
            await ab.documents.sync(file)
    assert ei2.value.code == "invalid_input" and "not a directory" in ei2.value.message
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei3:
            await ab.documents.sync(42)  # type: ignore[arg-type]
    assert ei3.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "blank"),
        ({"query": 3}, "must be a string"),
        ({"query": "x" * 9000}, "the limit is"),
        ({"k": 0}, "between 1 and 1000"),
        ({"mode": "fuzzy"}, "is not one of"),
        ({"path_prefix": "../etc"}, "relative path"),
        ({"path_prefix": "/abs"}, "relative path"),
        ({"path_prefix": "a//b"}, "relative path"),
        ({"path_prefix": 5}, "must be a string"),
        ({"root": 5}, "must be a path"),
    ],
)
async def test_bad_search_arguments_are_refused(ab: Abathur, kwargs: dict, message: str) -> None:
    args = {"query": "backup", **kwargs}
    query = args.pop("query")
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as ei:
            await ab.documents.search(query, **args)
    assert ei.value.code == "invalid_input"
    assert message in ei.value.message


# --------------------------------------------------------------------------- search


async def test_keyword_search_filters_by_path_prefix_on_whole_segments_and_by_root(
    dab: Abathur, docs: Path, tmp_path: Path
) -> None:
    write(docs, "runbooks/restore.md", "# Restore\n\nrestore the backup file\n")
    write(docs, "runbooks-old/restore.md", "# Restore\n\nrestore the backup tape\n")
    write(docs, "guide.md", "# Guide\n\nbackup often\n")
    other = tmp_path / "other"
    write(other, "runbooks/x.md", "# X\n\nbackup elsewhere\n")
    await dab.documents.sync(docs)
    await dab.documents.sync(other)

    def paths(result: DocumentSearchResult) -> set[tuple[str, str]]:
        return {(Path(h.root).name, h.path) for h in result.hits}

    found = await dab.documents.search("backup", mode="keyword", k=10)
    assert len(found.hits) == 4 and found.mode == "keyword" and not found.is_degraded
    for prefix in ("runbooks", "runbooks/"):
        result = await dab.documents.search("backup", mode="keyword", path_prefix=prefix)
        assert paths(result) == {("docs", "runbooks/restore.md"), ("other", "runbooks/x.md")}
    result = await dab.documents.search("backup", mode="keyword", path_prefix="runbooks", root=docs)
    assert paths(result) == {("docs", "runbooks/restore.md")}
    exact = await dab.documents.search("backup", mode="keyword", path_prefix="guide.md")
    assert paths(exact) == {("docs", "guide.md")}
    assert (await dab.documents.search("backup", root=tmp_path / "never")).hits == []
    hit = (await dab.documents.search("tape", mode="keyword")).hits[0]
    assert (hit.heading, hit.text, hit.ordinal) == ("Restore", "restore the backup tape", 0)
    assert hit.score > 0


async def test_vector_and_hybrid_apply_filters_before_ranking(dab: Abathur, docs: Path) -> None:
    for i in range(30):
        write(docs, f"noise/n{i}.md", f"# Backup {i}\n\nrestore backup copy number {i}\n")
    write(docs, "runbooks/one.md", "# Tea\n\ngreen tea leaves\n")
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    for mode in ("vector", "hybrid"):
        result = await dab.documents.search(
            "restore backup copy", mode=mode, path_prefix="runbooks", k=3
        )
        assert [h.path for h in result.hits] == ["runbooks/one.md"], mode
        assert result.mode == mode


async def test_search_degrades_to_keyword_and_says_why(backend: BackendHandle, docs: Path) -> None:
    write(docs, "a.md", "# Backups\n\nnightly backup\n")
    async with backend.open(embedder="none") as ab:
        await ab.documents.sync(docs)
        result = await ab.documents.search("backup", mode="hybrid")
    assert (result.mode, result.requested_mode, result.is_degraded) == ("keyword", "hybrid", True)
    assert "no embedder" in (result.degraded_reason or "")
    assert [h.path for h in result.hits] == ["a.md"]


async def test_the_bundled_model_finds_a_chunk_by_meaning(
    backend: BackendHandle, docs: Path
) -> None:
    write(
        docs,
        "ops/restore.md",
        "# Recovering the database\n\n"
        "Copy the verified snapshot over the damaged file after stopping every writer.\n",
    )
    write(docs, "kitchen/tea.md", "# Tea\n\nSteep green leaves in hot water for two minutes.\n")
    write(docs, "sport/cycling.md", "# Cycling\n\nPump the tyres before riding uphill.\n")
    write(docs, "pets/cats.md", "# Cats\n\nFeed the kitten twice daily and brush its fur.\n")
    async with backend.open(embed_worker=False) as ab:
        report = await ab.documents.sync(docs)
        assert report.embeddings_queued == 4
        drained = await ab.embeddings.drain()
        assert drained.embedded == 4
        query = "how can I get my lost information back"
        keyword = await ab.documents.search(query, mode="keyword")
        assert keyword.hits == []  # not one word in common with any document
        vector = await ab.documents.search(query, mode="vector", k=4)
        assert vector.mode == "vector" and vector.hits[0].path == "ops/restore.md"
        assert vector.hits[0].score > vector.hits[1].score + 0.1
        hybrid = await ab.documents.search(query, k=1)
        assert (hybrid.mode, hybrid.hits[0].path) == ("hybrid", "ops/restore.md")


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_chunks_synced_without_an_embedder_are_embedded_once_one_is_used(
    backend: BackendHandle, docs: Path, embedder: WordHashEmbedder
) -> None:
    write(docs, "a.md", THREE_SECTIONS)
    async with backend.open(embedder="none") as ab:
        report = await ab.documents.sync(docs)
        assert report.embeddings_queued == 0 and await count(ab, "embedding_queue") == 0
    async with backend.open(embedder=embedder, embed_worker=False) as ab:
        assert await count(ab, "embedding_queue") == 3  # queued when the embedder was recorded
        assert (await ab.embeddings.drain()).embedded == 3
        reindexed = await ab.embeddings.reindex()
        assert (reindexed.embedded, reindexed.cache_hits) == (3, 3)
        found = await ab.documents.search("previous release", mode="vector", k=1)
        assert found.hits[0].heading == "Operations > Rollback"


async def test_the_background_worker_embeds_synced_chunks(
    backend: BackendHandle, docs: Path
) -> None:
    write(docs, "a.md", THREE_SECTIONS)
    async with backend.open(embedder=WordHashEmbedder()) as ab:
        await ab.documents.sync(docs)
        deadline = time.monotonic() + 10
        while (await ab.embeddings.status()).queue_depth:
            assert time.monotonic() < deadline, "the worker did not embed the chunks"
            await asyncio.sleep(0.02)
        assert (await ab.embeddings.status()).vectors == 3


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_check_passes_and_fix_rebuilds_chunks_fts(dab: Abathur, docs: Path) -> None:
    write(docs, "a.md", THREE_SECTIONS)
    await dab.documents.sync(docs)
    await dab.embeddings.drain()
    path = dab.path
    await dab.close()
    assert (await run_checks_async_path(path)).is_ok
    rebuilt = await asyncio.to_thread(
        rebuild_derived_indexes, path, rebuilders={"memories_fts": rebuild_keyword_index}
    )
    assert "chunks_fts" in rebuilt
    async with Abathur.open(path, embedder="none") as ab:
        hits = (await ab.documents.search("writers", mode="keyword")).hits
        assert [h.heading for h in hits] == ["Operations > Restore"]


async def run_checks_async_path(path: Path):
    return await asyncio.to_thread(run_checks, path)


# --------------------------------------------------------------------------- watch


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_watch_syncs_changes_within_a_bounded_time(dab: Abathur, docs: Path) -> None:
    write(docs, "a.md", "# A\n\nalpha\n")
    watch = await dab.documents.watch(docs, debounce_ms=50)
    try:
        assert watch.is_running and watch.last_report is not None
        assert watch.last_report.added == ["a.md"]

        def saw(attr: str, path: str):
            return lambda: (
                watch.last_report is not None and path in getattr(watch.last_report, attr)
            )

        started = time.monotonic()
        write(docs, "sub/new.md", "# New\n\nfresh words\n")
        await wait_until(saw("added", "sub/new.md"))
        assert time.monotonic() - started < 10
        (docs / "a.md").write_text("# A\n\nomega\n")
        await wait_until(saw("changed", "a.md"))
        (docs / "sub" / "new.md").unlink()
        await wait_until(saw("removed", "sub/new.md"))
        write(docs, "ignored.txt", "no")  # matches no pattern: no sync for it
        hits = await dab.documents.search("omega", mode="keyword")
        assert [h.path for h in hits.hits] == ["a.md"]
    finally:
        await watch.stop()
    assert not watch.is_running
    await watch.stop()  # idempotent


async def test_watch_survives_a_failing_sync_and_stops_on_close(
    backend: BackendHandle, tmp_path: Path
) -> None:
    docs = tmp_path / "watched"
    write(docs, "a.md", "# A\n\nalpha\n")
    ab = await backend.open(embedder="none")
    watch = await ab.documents.watch(docs, debounce_ms=50)
    shutil.rmtree(docs)
    await wait_until(lambda: watch.last_error is not None)
    assert watch.is_running, "an error must not end the watch"
    await ab.close()
    assert not watch.is_running


async def test_watch_refuses_bad_arguments(ab: Abathur, docs: Path) -> None:
    with pytest.raises(InvalidInputError) as ei:
        await ab.documents.watch(docs, debounce_ms=0)
    assert ei.value.code == "invalid_input"
    with pytest.raises(NotFoundError):
        await ab.documents.watch(docs / "missing")


# --------------------------------------------------------------------------- query plans


def plan(conn, sql: str, params: tuple) -> str:
    return " | ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_hot_document_queries_use_their_indexes(ab: Abathur) -> None:
    def plans(conn) -> dict[str, str]:
        return {
            "root": plan(conn, SQL_ROOT_BY_PATH, ("/x",)),
            "documents": plan(conn, SQL_DOCUMENTS_OF_ROOT, (1,)),
            "document": plan(conn, SQL_DOCUMENT_BY_PATH, (1, "a.md")),
            "chunks": plan(conn, SQL_CHUNKS_OF_DOCUMENT, (1,)),
            "keyword": plan(
                conn,
                SQL_CHUNK_KEYWORD_SEARCH,
                chunk_keyword_params(
                    ["restore", "backup"], root_id=None, path_prefix="runbooks", limit=5
                ),
            ),
        }

    found = await ab.db.read(lambda tx: plans(tx.conn))
    assert "INDEX sqlite_autoindex_document_roots_1 (path=?)" in found["root"]
    assert "USING INDEX sqlite_autoindex_documents_1 (root_id=?)" in found["documents"]
    assert "USING INDEX sqlite_autoindex_documents_1 (root_id=? AND path=?)" in found["document"]
    assert "USING INDEX chunks_by_document (document_id=?)" in found["chunks"]
    assert "SCAN chunks_fts VIRTUAL TABLE INDEX" in found["keyword"]
    assert "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)" in found["keyword"]
    assert "SEARCH d USING INTEGER PRIMARY KEY (rowid=?)" in found["keyword"]


def test_public_methods_are_documented_with_examples() -> None:
    import inspect

    from abathur.documents import DocumentService, DocumentWatch

    for cls in (DocumentService, DocumentWatch):
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            doc = inspect.getdoc(member) or ""
            assert "Example:" in doc, f"{cls.__name__}.{name} has no example"


# --------------------------------------------------------------------------- forget


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_forget_takes_a_root_out_of_the_index_and_leaves_others(
    dab: Abathur, docs: Path, tmp_path: Path
) -> None:
    write(docs, "restore.md", "# Restore\n\nStop the writers, then swap the file in.\n")
    write(docs, "ops/tea.md", "# Tea\n\nSteep green leaves for two minutes.\n")
    other = tmp_path / "other"
    write(other, "keep.md", "# Keep\n\nThe writers stay here.\n")
    await dab.documents.sync(docs)
    await dab.documents.sync(other)
    await dab.embeddings.drain()
    await dab.memory.put("user:a", "note", "the writers of the note")

    report = await dab.documents.forget(docs)
    assert isinstance(report, SyncReport)
    assert report.root == str(docs.resolve())
    assert (report.removed, report.chunks_removed) == (["ops/tea.md", "restore.md"], 2)
    assert (report.added, report.changed, report.failed, report.unchanged) == ([], [], [], 0)
    await dab.embeddings.drain()  # the deferred vector deletes

    for mode in ("keyword", "vector", "hybrid"):
        found = await dab.documents.search("writers swap file", mode=mode)
        assert {h.path for h in found.hits} == {"keep.md"}, mode
    assert await rows(dab, "SELECT path FROM document_roots") == [(str(other.resolve()),)]
    assert await rows(dab, "SELECT count(*) FROM chunks") == [(1,)]
    assert await rows(dab, "SELECT count(*) FROM chunks_fts") == [(1,)]
    assert await rows(dab, "SELECT count(*) FROM embedding_queue WHERE kind = 'chunk'") == [(0,)]
    audit = await rows(
        dab, "SELECT detail FROM audit_log WHERE action = 'documents.forget' ORDER BY seq"
    )
    assert [json.loads(detail) for (detail,) in audit] == [{"chunks_removed": 2, "documents": 2}]
    assert (await dab.memory.get("user:a", "note")).value == "the writers of the note"
    assert run_checks(dab.db.path).is_ok, "indexes agree with the tables after a forget"

    # The directory is still there; syncing it again starts afresh.
    again = await dab.documents.sync(docs)
    assert again.added == ["ops/tea.md", "restore.md"]


@pytest.mark.sqlite_only("reads the SQLite tables behind the documents")
async def test_forget_works_when_the_directory_is_gone_and_jobs_are_pending(
    dab: Abathur, docs: Path
) -> None:
    write(docs, "a.md", "# A\n\nalpha words here.\n")
    await dab.documents.sync(docs)  # jobs queued, nothing embedded yet
    shutil.rmtree(docs)
    report = await dab.documents.forget(docs)
    assert report.removed == ["a.md"] and report.chunks_removed == 1
    assert await rows(dab, "SELECT count(*) FROM embedding_queue") == [(0,)]
    assert await rows(dab, "SELECT count(*) FROM document_roots") == [(0,)]


async def test_forget_of_an_unknown_or_bad_root_changes_nothing(
    dab: Abathur, docs: Path, tmp_path: Path
) -> None:
    write(docs, "a.md", "# A\n\nalpha.\n")
    await dab.documents.sync(docs)
    async with assert_unchanged(dab):
        with pytest.raises(NotFoundError) as ei:
            await dab.documents.forget(tmp_path / "never-synced")
        assert ei.value.code == "not_found" and "never synced" in ei.value.message
        for bad in (None, 3, "", "   ", "a\x00b"):
            with pytest.raises(InvalidInputError):
                await dab.documents.forget(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the store


async def test_the_document_store_keeps_roots_documents_and_chunks(ab: Abathur) -> None:
    """tx.documents, as DocumentService uses it: ids in, typed rows out."""
    file = DocumentFile("h1", 3, 7, "indexed", None, 1, 2.0)

    def write(tx):
        store = tx.documents
        root = store.insert_root("/r", created_at=1.0)
        doc = store.insert_document(root, "ops/a.md", file)
        chunk = store.insert_chunk(
            doc, ordinal=0, heading="A", text="alpha", content_hash="c1", tokens=2
        )
        store.mark_root_synced(root, at=3.0)
        return root, doc, chunk

    root, doc, chunk = await ab.db.write(write)

    def read(tx):
        store = tx.documents
        return (
            store.is_ready(),
            store.root_id("/r"),
            store.root_id("/elsewhere"),
            store.documents_of_root(root),
            store.document_by_path(root, "ops/a.md"),
            store.document_by_path(root, "missing.md"),
            store.chunks_of_document(doc),
            store.chunk_entries([chunk, chunk + 1000]),
            list(store.live_chunk_entries()),
            store.chunk_hits([chunk]),
            store.chunk_ids_under(root, "ops"),
            store.chunk_ids_under(None, "op"),
        )

    found = await ab.db.read(read)
    assert found == (
        True,
        root,
        None,
        [DocumentState("ops/a.md", "h1", 3, 7, "indexed", None, 2.0)],
        DocumentRow(doc, "h1", "indexed", None, 3, 7),
        None,
        [ChunkRef(chunk, "c1", 0)],
        [ChunkEntry(chunk, "A", "alpha", root)],
        [ChunkEntry(chunk, "A", "alpha", root)],
        [ChunkHit(chunk, "A", "alpha", 0, "ops/a.md", "/r")],
        [chunk],
        [],  # whole segments: 'op' does not cover 'ops/a.md'
    )

    def forget(tx):
        store = tx.documents
        kept = store.forget_root(root)  # a document is left: the root stays
        store.set_chunk_ordinal(chunk, 5)
        moved = store.chunks_of_document(doc)
        store.touch_document(doc, size=4, mtime_ns=8, synced_at=9.0)
        store.update_document(doc, file._replace(status="failed", error="gone", chunks=0))
        changed = store.document_by_path(root, "ops/a.md")
        store.delete_chunk(chunk)
        store.delete_document(doc)
        return kept, moved, changed, store.forget_root(root), store.root_id("/r")

    kept, moved, changed, forgot, after = await ab.db.write(forget)
    assert (kept, forgot, after) == (False, True, None)
    assert moved == [ChunkRef(chunk, "c1", 5)]
    assert changed == DocumentRow(doc, "h1", "failed", "gone", 3, 7)

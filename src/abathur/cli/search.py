"""``abathur sync``, ``abathur search`` and ``abathur reindex``: documents and search indexes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Literal

import click

from abathur import search as search_core
from abathur.api import Abathur
from abathur.cli.options import (
    Output,
    database_missing,
    format_pairs,
    format_table,
    is_server,
    json_text,
    shown_db,
    standard_options,
)
from abathur.config import Settings, load_settings
from abathur.documents import CHUNK_KIND, DEFAULT_MAX_FILE_BYTES, DEFAULT_PATTERNS
from abathur.errors import DatabaseError, EmbedderError, InvalidInputError
from abathur.memory import MEMORY_KIND
from abathur.models import DocumentSearchResult, SearchResult
from abathur.ops.files import plan_migrations

__all__ = ["reindex", "search", "sync"]

_SHOWN = 10  # paths listed per kind of change in the human output


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def _require_file(db_path: Path) -> None:
    # Reading commands must not create an empty database as a side effect.
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )


class _Bar:
    """A progress bar on stderr, only when stderr is a terminal (never in a pipe or a log)."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self._label, self._enabled = label, enabled
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled or total <= 0:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


async def _drain(ab: Abathur, *, show: bool) -> dict[str, Any]:
    """Embed what is queued, with a progress bar; the outcome as a dict."""
    if not ab.embeddings.is_configured:
        return {"skipped": "no embedder is configured (ABATHUR_EMBEDDER=none)"}
    status = await ab.embeddings.status()
    total = status.queue_depth - status.failed_jobs
    task = asyncio.create_task(ab.embeddings.drain())
    bar = _Bar("embedding", enabled=show)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if total and not task.done():
                now = await ab.embeddings.status()
                bar(max(0, total - (now.queue_depth - now.failed_jobs)), total)
        report = await task
    finally:
        if not task.done():
            task.cancel()
        bar.close()
    return report.model_dump()


def _listing(label: str, paths: list[str]) -> list[str]:
    if not paths:
        return []
    more = f" (+{len(paths) - _SHOWN} more)" if len(paths) > _SHOWN else ""
    return [f"{label}: " + ", ".join(paths[:_SHOWN]) + more]


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    default=DEFAULT_PATTERNS,
    show_default=True,
    help="Glob of the files to sync, relative to DIRECTORY ('**' spans directories); repeat "
    "for more.",
)
@click.option(
    "--exclude", multiple=True, help="Glob of files or directories to leave out; repeatable."
)
@click.option(
    "--max-file-bytes",
    type=click.IntRange(1),
    default=DEFAULT_MAX_FILE_BYTES,
    show_default=True,
    help="Larger files are reported as failed and skipped.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Do not wait for the new chunks to be embedded (the embedding worker of the next "
    "process that opens the file does it; keyword search finds them at once).",
)
@standard_options
def sync(
    *,
    db_path: Path,
    out: Output,
    directory: Path,
    patterns: tuple[str, ...],
    exclude: tuple[str, ...],
    max_file_bytes: int,
    no_wait: bool,
) -> None:
    """Sync the markdown files under DIRECTORY into the database, then embed the new chunks.

    Files whose content did not change since the last sync are skipped; new
    and changed ones are chunked along their headings; only chunks never
    embedded before are sent to the embedder; files deleted, renamed or no
    longer matched lose their chunks. Bad files (binary, unreadable, invalid
    UTF-8, too large, symlinks out of DIRECTORY, names that are not UTF-8,
    shown with such bytes as \\xff) are listed and skipped: they do not
    change the exit code. A progress bar is drawn on stderr when it
    is a terminal. The embedder is ABATHUR_EMBEDDER (default: the bundled
    MiniLM); if it is unavailable the documents are still synced and the
    error is reported.

    \b
    Examples:
      abathur sync --db ./agent.db docs/
      abathur sync --db ./agent.db . --pattern 'README.md' --pattern 'runbooks/**/*.md'
      abathur sync --db ./agent.db docs/ --exclude 'drafts/**' --json | jq .failed
    """

    async def run() -> dict[str, Any]:
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)
        show = _stderr_is_tty()
        async with Abathur.open(db_path, embed_worker=False) as ab:
            bar = _Bar("syncing", enabled=show)
            try:
                report = await ab.documents.sync(
                    directory,
                    list(patterns),
                    exclude=list(exclude),
                    max_file_bytes=max_file_bytes,
                    progress=bar,
                )
            finally:
                bar.close()
            if no_wait:
                embeddings: dict[str, Any] = {"skipped": "--no-wait: left to the embedding worker"}
            else:
                try:
                    embeddings = await _drain(ab, show=show)
                except EmbedderError as exc:
                    out.progress(f"abathur: warning [{exc.code}]: {exc.message}")
                    embeddings = {"error": exc.to_dict()}
            return {
                "path": shown_db(db_path),
                **report.model_dump(mode="json"),
                "embeddings": embeddings,
            }

    data = asyncio.run(run())
    out.result(data, _sync_human(data))


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@standard_options
def unsync(*, db_path: Path, out: Output, directory: Path) -> None:
    """Take DIRECTORY, synced before, out of the index: its documents, chunks and vectors.

    The files are not touched, and DIRECTORY may be gone already. Memories,
    other synced directories and the embedding cache are not affected. A
    directory never synced into this database is an error (exit 3,
    not_found); nothing is written then.

    \b
    Examples:
      abathur unsync --db ./agent.db docs/
      abathur unsync --db ./agent.db /srv/old-runbooks --json
    """

    async def run() -> dict[str, Any]:
        if not is_server(db_path) and not (await plan_migrations(db_path)).exists:
            # Opening would create it; there is nothing to take out of a new file.
            _require_file(db_path)  # db.error, as every command says it (issue 12)
        async with Abathur.open(db_path, embed_worker=False) as ab:
            report = await ab.documents.forget(directory)
        return {"path": shown_db(db_path), **report.model_dump(mode="json")}

    data = asyncio.run(run())
    out.result(
        data,
        "\n".join(
            [
                f"unsynced {data['root']} from {data['path']} in {data['seconds']:.2f} s: "
                f"{len(data['removed'])} document(s), {data['chunks_removed']} chunk(s) removed",
                *_listing("removed", data["removed"]),
            ]
        ),
    )


def _sync_human(data: dict[str, Any]) -> str:
    embeddings = data["embeddings"]
    if "embedded" in embeddings:
        vectors = (
            f"embedded {embeddings['embedded']} ({embeddings['cache_hits']} from the cache) "
            f"in {embeddings['seconds']:.2f} s"
        )
    elif "error" in embeddings:
        vectors = f"not embedded: {embeddings['error']['message']}"
    else:
        vectors = embeddings["skipped"]
    lines = [
        f"synced {data['root']} into {data['path']} in {data['seconds']:.2f} s",
        format_pairs(
            [
                (
                    "files",
                    f"added {len(data['added'])}, changed {len(data['changed'])}, "
                    f"removed {len(data['removed'])}, unchanged {data['unchanged']}, "
                    f"failed {len(data['failed'])}",
                ),
                (
                    "chunks",
                    f"added {data['chunks_added']}, removed {data['chunks_removed']}, "
                    f"kept {data['chunks_kept']}",
                ),
                ("vectors", vectors),
            ]
        ),
        *_listing("added", data["added"]),
        *_listing("changed", data["changed"]),
        *_listing("removed", data["removed"]),
    ]
    if data["failed"]:
        lines += ["", "failed (skipped):"]
        lines.append(
            format_table(("path", "reason"), ((f["path"], f["reason"]) for f in data["failed"]))
        )
    return "\n".join(lines)


@click.command()
@click.argument("query")
@click.option(
    "--docs/--memories",
    "is_docs",
    default=True,
    help="Search the synced document chunks (default) or the memories.",
)
@click.option(
    "--prefix",
    default=None,
    help="Documents: a path prefix ('runbooks'); memories: the namespace to search "
    "(required), e.g. 'user:alice'.",
)
@click.option(
    "--mode",
    type=click.Choice(search_core.SEARCH_MODES),
    default="hybrid",
    show_default=True,
    help="keyword (BM25), vector (embeddings) or hybrid (both, fused).",
)
@click.option(
    "-k", "k", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many hits."
)
@click.option(
    "--min-score",
    type=float,
    default=None,
    help="Keep only hits whose relevance reaches this: cosine (-1..1) in vector and hybrid "
    "mode, share of the query's words (0..1) in keyword mode.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="First embed what in scope is still waiting to be embedded (loads the model), "
    "so vector and hybrid see everything written before.",
)
@standard_options
def search(
    *,
    db_path: Path,
    out: Output,
    query: str,
    is_docs: bool,
    prefix: str | None,
    mode: Literal["keyword", "vector", "hybrid"],
    k: int,
    min_score: float | None,
    fresh: bool,
) -> None:
    """Search the synced documents (or, with --memories, the memories) for QUERY.

    Hybrid search fuses keyword (BM25) and vector rankings. When the query
    cannot be embedded (no embedder, the embedder is down, nothing embedded
    yet) the search falls back to keyword and says so.

    \b
    Examples:
      abathur search --db ./agent.db "how do I restore a backup"
      abathur search --db ./agent.db "rollback procedure" --prefix runbooks -k 3 --json
      abathur search --db ./agent.db "what language" --memories --prefix user:alice
      abathur search --db ./agent.db "what language" --memories --prefix user:alice \\
          --fresh --min-score 0.3
    """
    if not is_docs and prefix is None:
        raise click.UsageError("--memories needs --prefix NAMESPACE (e.g. --prefix user:alice)")

    async def run() -> dict[str, Any]:
        _require_file(db_path)
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)
        async with Abathur.open(db_path, embed_worker=False) as ab:
            result: DocumentSearchResult | SearchResult
            if is_docs:
                result = await ab.documents.search(
                    query, k=k, mode=mode, path_prefix=prefix, min_score=min_score, fresh=fresh
                )
            else:
                assert prefix is not None
                result = await ab.memory.search(
                    query, prefix=prefix, k=k, mode=mode, min_score=min_score, fresh=fresh
                )
        return {
            "path": shown_db(db_path),
            "kind": "documents" if is_docs else "memories",
            **result.model_dump(mode="json"),
        }

    data = asyncio.run(run())
    out.result(data, _search_human(data))


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _search_human(data: dict[str, Any]) -> str:
    mode = data["mode"]
    if data["is_degraded"]:
        mode += f" (instead of {data['requested_mode']}: {data['degraded_reason']})"
    lines = [f"{len(data['hits'])} hit(s) for {json_text(data['query'])}, mode {mode}"]
    for rank, hit in enumerate(data["hits"], start=1):
        if data["kind"] == "documents":
            where = hit["path"] + (f" § {hit['heading']}" if hit["heading"] else "")
            body = hit["text"]
        else:
            where = f"{hit['namespace']} / {hit['key']}"
            body = json_text(hit["value"])  # JSON, as everywhere: "fr" and 1 stay apart
        lines.append(
            f"{rank}. {where}  (score {hit['score']:.4f}, relevance {hit['relevance']:.3f})"
        )
        lines.append(f"   {_one_line(body)}")
    return "\n".join(lines)


def _target(choice: str, settings: Settings) -> str | None:
    """The name an embedder setting stands for (no model is loaded, no server called)."""
    if choice == "bundled":
        from abathur.embeddings.bundled import BundledEmbedder

        return BundledEmbedder.name
    if choice == "ollama":
        from abathur.embeddings.ollama import OllamaEmbedder

        return OllamaEmbedder.from_settings(settings).name
    if choice == "openai":
        from abathur.embeddings.openai_compat import OpenAICompatEmbedder

        return OpenAICompatEmbedder.from_settings(settings).name
    return None


def _count_items(conn: Any) -> dict[str, int]:
    return {kind.name: sum(1 for _ in kind.live(conn)) for kind in (MEMORY_KIND, CHUNK_KIND)}


@click.command()
@click.option(
    "--embedder",
    type=click.Choice(["bundled", "ollama", "openai", "none"]),
    default=None,
    help="The embedder to re-embed with, switching the file to it (default: ABATHUR_EMBEDDER, "
    "else bundled). 'none' is only useful with --dry-run or --compact.",
)
@click.option(
    "--compact",
    is_flag=True,
    help="Only rebuild the vector tables from their live rows, reclaiming the slots of "
    "deleted vectors; nothing is re-embedded.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@standard_options
def reindex(
    *,
    db_path: Path,
    out: Output,
    embedder: str | None,
    compact: bool,
    dry_run: bool,
) -> None:
    """Re-embed every memory and document chunk (or, with --compact, compact the vectors).

    Without --compact: drops every vector, records the embedder, queues every
    live memory and chunk and embeds them (texts this embedder saw before
    come from the cache). This is how a file switches embedders: opening it
    with another one is refused until it is reindexed. Writers are not held
    up: the embedding happens outside write transactions.

    With --compact: rebuilds each vector table from its live rows (vec0
    never reuses the slot of a deleted vector); the embedding worker does
    this by itself past a threshold of dead rows.

    \b
    Examples:
      abathur reindex --db ./agent.db --dry-run
      abathur reindex --db ./agent.db --embedder ollama --json
      abathur reindex --db ./agent.db --compact
    """
    overrides: dict[str, Any] = {"embedder": embedder} if embedder else {}
    settings = load_settings(db=db_path, **overrides)
    choice = settings.embedder

    async def inspect() -> dict[str, Any]:
        # A dry run must not even migrate the file.
        async with Abathur.open(
            db_path, embedder="none", embed_worker=False, auto_migrate=not dry_run
        ) as ab:
            status = await ab.embeddings.status()
            tables = await ab.db.read(lambda tx: tx.search.vector_table_stats())
            items = await ab.db.read(_count_items) if not compact else {}
        return {
            "recorded_embedder": status.recorded_embedder,
            "tables": [t._asdict() for t in tables],
            "items": items,
        }

    async def run() -> dict[str, Any]:
        _require_file(db_path)
        if not is_server(db_path):  # a server refuses a newer schema on open
            await plan_migrations(db_path)
        before = await inspect()
        data: dict[str, Any] = {
            "path": shown_db(db_path),
            "action": "compact" if compact else "reindex",
            "is_dry_run": dry_run,
            **before,
        }
        if compact:
            if not dry_run:
                async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
                    reports = await ab.embeddings.compact()
                data["compacted"] = [r.model_dump() for r in reports]
            return data
        data["embedder"] = _target(choice, settings)
        if dry_run:
            return data
        if choice == "none":
            raise InvalidInputError(
                "reindex re-embeds with an embedder: choose --embedder bundled or ollama "
                "(or set ABATHUR_EMBEDDER); --embedder none works with --dry-run or --compact"
            )
        async with Abathur.open(
            db_path, embedder=choice, reindex=True, embed_worker=False, settings=settings
        ) as ab:
            queued = await ab.embeddings.reindex(wait=False)
            data["queued"] = queued.remaining
            data["embeddings"] = await _drain(ab, show=_stderr_is_tty())
        return data

    data = asyncio.run(run())
    out.result(data, _reindex_human(data))


def _reindex_human(data: dict[str, Any]) -> str:
    tables = format_table(
        ("table", "kind", "dims", "live", "dead", "pending deletes"),
        (
            (t["name"], t["kind"], t["dims"], t["live_rows"], t["dead_rows"], t["pending_deletes"])
            for t in data["tables"]
        ),
    )
    head = "dry run: nothing changed" if data["is_dry_run"] else "done"
    pairs: list[tuple[str, object]] = [
        ("database", data["path"]),
        ("recorded embedder", data["recorded_embedder"] or "none"),
    ]
    if data["action"] == "reindex":
        pairs.append(("embedder", data["embedder"]))
        pairs.append(("items", ", ".join(f"{n} {kind}(s)" for kind, n in data["items"].items())))
        if "embeddings" in data:
            e = data["embeddings"]
            pairs.append(
                (
                    "embedded",
                    f"{e['embedded']} ({e['cache_hits']} from the cache) in {e['seconds']:.2f} s",
                )
            )
    else:
        for report in data.get("compacted", []):
            pairs.append(
                (report["table"], f"{report['live_rows']} live, {report['dead_rows']} reclaimed")
            )
    return "\n".join(
        [f"reindex ({data['action']}): {head}", format_pairs(pairs), "", "vector tables", tables]
    )

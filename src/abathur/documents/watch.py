"""Watching a root: :class:`DocumentWatch` keeps it in sync as its files change."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from abathur.documents.globs import glob_regex
from abathur.errors import ClosedError
from abathur.models import SyncReport

__all__ = ["DocumentWatch"]

log = structlog.get_logger(__name__)


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
        sync: Callable[..., Awaitable[SyncReport]],
        root: Path,
        patterns: tuple[str, ...],
        exclude: tuple[str, ...],
        max_file_bytes: int,
        debounce_ms: int,
        first_report: SyncReport,
        *,
        own_files: frozenset[str] = frozenset(),
        on_stop: Callable[[DocumentWatch], object] | None = None,
    ) -> None:
        # Made by DocumentService.watch, on the event loop, after the first
        # sync (first_report): the watch runs from here. ``sync`` is the
        # service's, ``own_files`` the database's files (never a reason to
        # sync), ``on_stop`` tells the service the watch has ended.
        self._sync_root = sync
        self._own_files = own_files
        self._on_stop = on_stop
        self.root = root
        self.patterns = patterns
        self._exclude = exclude
        self._max_file_bytes = max_file_bytes
        self._debounce_ms = debounce_ms
        self.syncs = 1
        self.last_report: SyncReport | None = first_report
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._compiled = [glob_regex(p) for p in patterns]
        self._excludes = [glob_regex(p) for p in exclude]
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._run(), name=f"abathur-watch {root}"
        )

    @property
    def is_running(self) -> bool:
        """True until :meth:`stop` (or the database closing) ends the watch."""
        return self._task is not None and not self._task.done()

    async def _sync(self) -> None:
        try:
            report = await self._sync_root(
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

        if path in self._own_files:
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
        if self._on_stop is not None:
            self._on_stop(self)

    async def __aenter__(self) -> DocumentWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

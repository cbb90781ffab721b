"""The MCP server: ten tools, two resources and a prompt over one open :class:`~abathur.Abathur`.

Built on the official MCP Python SDK (``mcp`` 2.x, its ``MCPServer``). Every
tool names namespaces relative to the connection's :class:`~.scope.Grant`
(``stdio``: one grant for the process; HTTP: the grant of the request's bearer
token), and returns what it found as JSON (structured content, and the same
as text). An :class:`~abathur.errors.AbathurError` becomes an MCP tool error
whose text is ``code: message`` and whose structured content is
``{"error": {"code", "message", "retryable"}}``; any other exception becomes
a tool error too (the SDK's), and the server goes on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, ParamSpec

import structlog
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations

from abathur import __version__
from abathur.errors import (
    AbathurError,
    AlreadyExistsError,
    PermissionDeniedError,
    SessionNotFoundError,
)
from abathur.integrations.mcp.scope import Grant
from abathur.memory import MAX_NAMESPACE_LENGTH, memory_text
from abathur.models import Event, NamedCount
from abathur.values import MAX_ID_LENGTH, check_id, check_int

if TYPE_CHECKING:
    from abathur.api import Abathur
    from abathur.integrations.mcp.tokens import TokenTable
    from abathur.models import Memory, SearchHit

__all__ = ["INSTRUCTIONS", "TOOLS", "build_server"]

_log = structlog.get_logger(__name__)
P = ParamSpec("P")

SearchMode = Literal["hybrid", "keyword", "vector"]
MemoryType = Literal["semantic", "episodic", "procedural"]
Filter = dict[str, str | int | float | bool | None]

#: The tools, in the order they are listed.
TOOLS = (
    "memory_search",
    "memory_get",
    "memory_put",
    "memory_delete",
    "memory_history",
    "memory_list",
    "memory_context",
    "session_append",
    "session_get",
    "documents_search",
)
#: The app every session made through MCP belongs to; its user is the scope.
SESSION_APP = "mcp"

INSTRUCTIONS = """\
abathur is your durable memory. Namespaces are ':'-separated names relative to
your scope (e.g. 'preferences', 'projects:apollo'); you cannot see outside it.
Before answering, call memory_context with the question to get what you already
know. When you learn a lasting fact or preference, memory_put it (one key per
fact; put again to update). memory_search finds memories; memory_get reads one.
Values are JSON. Keep the conversation's turns with session_append."""

_READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
_WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
_DELETE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)


def _error_result(exc: AbathurError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{exc.code}: {exc.message}")],
        structured_content={"error": exc.to_dict()},
        is_error=True,
    )


def _tool_errors(
    fn: Callable[P, Awaitable[dict[str, Any]]],
) -> Callable[P, Awaitable[dict[str, Any]]]:
    """Turn an AbathurError of ``fn`` into an MCP tool error carrying its code and message."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        try:
            return await fn(*args, **kwargs)
        except AbathurError as exc:
            _log.info("mcp tool refused", tool=fn.__name__, code=exc.code)
            # The SDK passes a CallToolResult through as the tool's result.
            return _error_result(exc)  # type: ignore[return-value]

    return call


class _Server:
    """The tools of one server, bound to one open database and a way to find the grant."""

    def __init__(self, ab: Abathur, *, grant: Grant | None, tokens: TokenTable | None) -> None:
        self.ab = ab
        self._grant = grant
        self._tokens = tokens

    def grant(self, ctx: Context | None) -> Grant:
        """The grant of the connection that made this request."""
        if self._grant is not None:
            return self._grant
        token = None
        if ctx is not None:
            # The HTTP request of this very call (not a context variable that a
            # long-lived session task might have inherited from an earlier one).
            request = getattr(ctx.request_context, "request", None)
            user = getattr(request, "scope", {}).get("user") if request is not None else None
            token = getattr(user, "access_token", None)
        if token is None:
            token = get_access_token()
        entry = (
            self._tokens.lookup(token.token)
            if token is not None and self._tokens is not None
            else None
        )
        if entry is None:  # the middleware already answered 401; a token expired since
            raise PermissionDeniedError("no valid token for this request")
        return entry.grant

    # -- shaping results ---------------------------------------------------

    def _memory(self, grant: Grant, m: Memory) -> dict[str, Any]:
        return {
            "namespace": grant.relative(m.namespace),
            "key": m.key,
            "value": m.value,
            "type": m.type,
            "metadata": m.metadata,
            "version": m.version,
            "status": m.status,
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "expires_at": m.expires_at,
        }

    def _hit(self, grant: Grant, h: SearchHit) -> dict[str, Any]:
        return {
            "namespace": grant.relative(h.namespace),
            "key": h.key,
            "value": h.value,
            "type": h.type,
            "metadata": h.metadata,
            "version": h.version,
            "relevance": h.relevance,
            "score": h.score,
        }

    def _inside(self, grant: Grant, items: list[Any]) -> list[Any]:
        """The items whose namespace lies in the scope; anything else is dropped and logged."""
        kept = [i for i in items if grant.contains(i.namespace)]
        if len(kept) != len(items):  # never expected: the library scoped the query
            _log.error("mcp dropped results outside the scope", dropped=len(items) - len(kept))
        return kept

    def _session_id(self, grant: Grant, session_id: object) -> str:
        """The stored id of a session the agent calls ``session_id``: unique to the scope."""
        check_id(session_id, "session_id")
        # The scope cannot be ambiguous inside the id: its length comes first.
        return f"mcp:{len(grant.scope)}:{grant.scope}:{session_id}"


def build_server(
    ab: Abathur,
    *,
    grant: Grant | None = None,
    tokens: TokenTable | None = None,
    auth: Any = None,
    token_verifier: Any = None,
) -> MCPServer:
    """An MCP server with abathur's tools over ``ab``.

    Args:
        ab: the open database.
        grant: the one grant of every request (stdio, in-process clients).
        tokens: the tokens file (HTTP): each request's grant is its token's.
        auth: the SDK's ``AuthSettings`` (HTTP).
        token_verifier: the SDK's token verifier (HTTP).

    Exactly one of ``grant`` and ``tokens`` is given.
    """
    if (grant is None) == (tokens is None):
        raise ValueError("give exactly one of grant and tokens")
    srv = _Server(ab, grant=grant, tokens=tokens)
    limit = ab.settings.max_value_bytes
    # MCPServer() calls logging.basicConfig (a handler on the root logger): a
    # library must not configure its host's output, so that is undone here.
    # `abathur mcp` sends stdlib logging to stderr itself.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        mcp = MCPServer(
            "abathur",
            title="abathur memory",
            instructions=INSTRUCTIONS,
            version=__version__,
            auth=auth,
            token_verifier=token_verifier,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def memory_search(
        query: str,
        ctx: Context,
        prefix: str | None = None,
        mode: SearchMode = "hybrid",
        k: int = 10,
        type: MemoryType | None = None,
        filter: Filter | None = None,
        min_score: float | None = None,
    ) -> dict[str, Any]:
        """Find memories that match a query, best first.

        prefix: a namespace relative to your scope (default: all of it); only
        memories there or below. mode: hybrid (default), keyword or vector.
        k: at most this many hits (1-1000). type: semantic, episodic or
        procedural. filter: metadata fields that must be equal. min_score: keep
        hits whose relevance is at least this (0-1; 0.3 is a loose floor).
        """
        g = srv.grant(ctx)
        found = await srv.ab.memory.search(
            query, prefix=g.prefix(prefix), k=k, mode=mode, type=type, filter=filter,
            min_score=min_score,
        )  # fmt: skip
        return {
            "query": found.query,
            "mode": found.mode,
            "is_degraded": found.is_degraded,
            "degraded_reason": found.degraded_reason,
            "hits": [srv._hit(g, h) for h in srv._inside(g, found.hits)],
        }

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def memory_get(namespace: str, key: str, ctx: Context) -> dict[str, Any]:
        """Read one memory by namespace (relative to your scope) and key.

        Returns {"found": false, "memory": null} when there is none.
        """
        g = srv.grant(ctx)
        m = await srv.ab.memory.get(g.namespace(namespace), key)
        return {"found": m is not None, "memory": None if m is None else srv._memory(g, m)}

    @mcp.tool(annotations=_WRITE)
    @_tool_errors
    async def memory_put(
        namespace: str,
        key: str,
        value: Any,
        ctx: Context,
        type: MemoryType = "semantic",
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Store a memory (any JSON value) at namespace/key; storing again makes a new version.

        namespace is relative to your scope, e.g. "preferences". type: semantic
        (facts, default), episodic (events) or procedural (how-tos). metadata:
        a JSON object to filter on later. ttl: seconds until it expires.
        expected_version: write only if the current version is this one (0:
        only if absent). The value is at most max_value_bytes as JSON (the
        stats resource states the limit).
        """
        g = srv.grant(ctx)
        g.check_write("memory_put")
        m = await srv.ab.memory.put(
            g.namespace(namespace), key, value, type=type, metadata=metadata, ttl=ttl,
            expected_version=expected_version,
        )  # fmt: skip
        return {"memory": srv._memory(g, m)}

    @mcp.tool(annotations=_DELETE)
    @_tool_errors
    async def memory_delete(namespace: str, key: str, ctx: Context) -> dict[str, Any]:
        """Delete one memory (its history is kept; it no longer reads or searches)."""
        g = srv.grant(ctx)
        g.check_write("memory_delete")
        m = await srv.ab.memory.delete(g.namespace(namespace), key)
        return {"deleted": srv._memory(g, m)}

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def memory_history(namespace: str, key: str, ctx: Context) -> dict[str, Any]:
        """Every version of one memory, oldest first, including deleted ones."""
        g = srv.grant(ctx)
        versions = await srv.ab.memory.history(g.namespace(namespace), key)
        return {"versions": [srv._memory(g, m) for m in versions]}

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def memory_list(
        ctx: Context,
        prefix: str | None = None,
        type: MemoryType | None = None,
        filter: Filter | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """List live memories by namespace and key, under a prefix (default: your whole scope).

        limit: at most this many (1-1000); has_more says whether there are more.
        """
        g = srv.grant(ctx)
        check_int(limit, "limit", minimum=1, maximum=1000)
        found = await srv.ab.memory.list(
            g.prefix(prefix), type=type, filter=filter, limit=limit + 1
        )
        shown = srv._inside(g, found[:limit])
        return {"memories": [srv._memory(g, m) for m in shown], "has_more": len(found) > limit}

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def memory_context(
        query: str, ctx: Context, prefix: str | None = None, max_tokens: int = 1000
    ) -> dict[str, Any]:
        """What you already know about a question, packed under a token budget: call it first.

        Returns text to read (one "namespace/key: value" line per memory,
        namespaces relative to your scope), the memories it holds, and how
        many relevant ones did not fit. Memories below a relevance floor are
        left out, so an unrelated question gets nothing.
        """
        g = srv.grant(ctx)
        packed = await srv.ab.memory.context(g.prefix(prefix), query, max_tokens)
        taken = srv._inside(g, packed.memories)
        # The library's lines name full namespaces: the same lines, relative to the scope.
        lines = [f"{g.relative(h.namespace)}/{h.key}: {memory_text(h.value)}" for h in taken]
        return {
            "text": "\n".join(lines),
            "tokens": packed.tokens,
            "max_tokens": packed.max_tokens,
            "skipped": packed.skipped,
            "memories": [
                {"namespace": g.relative(h.namespace), "key": h.key, "relevance": h.relevance}
                for h in taken
            ],
        }

    @mcp.tool(annotations=_WRITE)
    @_tool_errors
    async def session_append(
        session_id: str,
        author: str,
        content: Any,
        ctx: Context,
        state_delta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one turn (author and JSON content) to a session's log; starts it if new.

        session_id: your name for the conversation (sessions are per scope).
        state_delta: keys to set in the session's state.
        """
        g = srv.grant(ctx)
        g.check_write("session_append")
        sid = srv._session_id(g, session_id)
        check_id(author, "author")
        event = Event(author=author, content=content, state_delta=state_delta or {})
        try:
            s = await srv.ab.sessions.append_event(sid, event)
        except SessionNotFoundError:
            with contextlib.suppress(AlreadyExistsError):  # another call made it a moment ago
                await srv.ab.sessions.create(app=SESSION_APP, user=g.scope, session_id=sid)
            s = await srv.ab.sessions.append_event(sid, event)
        return {
            "session_id": session_id,
            "seq": s.events[0].seq if s.events else None,
            "revision": s.revision,
            "state": s.state,
        }

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def session_get(session_id: str, ctx: Context, last_n: int = 20) -> dict[str, Any]:
        """Read a session: its state and its newest last_n events (default 20), oldest first."""
        g = srv.grant(ctx)
        s = await srv.ab.sessions.get(srv._session_id(g, session_id), last_n=last_n)
        if s.app != SESSION_APP or s.user != g.scope:  # never expected: the id holds the scope
            raise SessionNotFoundError(f"no session {session_id!r}")
        return {
            "session_id": session_id,
            "status": s.status,
            "revision": s.revision,
            "state": s.state,
            "events": [
                {"seq": e.seq, "author": e.author, "content": e.content,
                 "state_delta": e.state_delta, "timestamp": e.timestamp}
                for e in s.events
            ],
        }  # fmt: skip

    @mcp.tool(annotations=_READ)
    @_tool_errors
    async def documents_search(
        query: str, ctx: Context, prefix: str | None = None, k: int = 5
    ) -> dict[str, Any]:
        """Search the synced documents (markdown files) for a query, best chunks first.

        prefix: only documents under this relative path. k: at most this many (1-1000).
        """
        g = srv.grant(ctx)
        found = await srv.ab.documents.search(query, k=k, path_prefix=g.document_prefix(prefix))
        return {
            "query": found.query,
            "mode": found.mode,
            "hits": [
                {"path": h.path, "heading": h.heading, "text": h.text, "relevance": h.relevance}
                for h in found.hits
            ],
        }

    @mcp.resource("abathur://stats", mime_type="application/json")
    async def stats() -> str:
        """This connection's scope: its namespaces, how many memories each holds, and the limits."""
        g = srv.grant(None)
        counts: list[NamedCount] = await srv.ab.memory.namespace_counts(g.scope, limit=1000)
        kept = [c for c in counts if g.contains(c.name)]
        data = {
            "scope": g.scope,
            "read_only": g.read_only,
            "documents": g.documents,
            "namespaces": [{"namespace": g.relative(c.name), "memories": c.count} for c in kept],
            "memories": sum(c.count for c in kept),
            "limits": {
                "max_value_bytes": limit,
                "max_namespace_length": MAX_NAMESPACE_LENGTH,
                "max_key_length": MAX_ID_LENGTH,
                "search_k": 1000,
                "list_limit": 1000,
            },
        }
        return json.dumps(data, ensure_ascii=False)

    @mcp.resource("abathur://health", mime_type="application/json")
    async def health() -> str:
        """The database's health: ok, warn or fail, with each check (as `abathur health`)."""
        import anyio

        from abathur.ops.backup import backup_dir_for
        from abathur.ops.health import health as check_health

        srv.grant(None)
        # A file's path, or a PostgreSQL URL (the ops kit reads either).
        path = srv.ab.settings.db if srv.ab.settings.db is not None else srv.ab.path
        report = await anyio.to_thread.run_sync(
            lambda: check_health(path, backup_dir=backup_dir_for(path))
        )
        return json.dumps(report.to_dict(), ensure_ascii=False, default=str)

    @mcp.prompt()
    def use_memory() -> str:
        """How to use this memory well: what to store, when to look things up."""
        return INSTRUCTIONS

    return mcp

"""Serving: stdio (one grant for the process) and streamable HTTP (a grant per bearer token).

Example (HTTP, in a program; ``abathur mcp`` does the same)::

    import anyio
    from abathur.integrations.mcp.run import serve_http
    from abathur.integrations.mcp.tokens import load_tokens

    anyio.run(serve_http, "agent.db", "127.0.0.1", 8765, load_tokens(Path("tokens.json")))
"""

from __future__ import annotations

from pathlib import Path

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from abathur.integrations.mcp.scope import Grant
from abathur.integrations.mcp.server import build_server
from abathur.integrations.mcp.tokens import TokenTable

__all__ = ["TokenVerifier", "serve_http", "serve_stdio"]

#: The path of the MCP endpoint on the HTTP server.
HTTP_PATH = "/mcp"


class TokenVerifier:
    """The SDK's bearer-token check, over a tokens file: unknown or expired tokens get a 401."""

    def __init__(self, tokens: TokenTable) -> None:
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's access, or ``None`` (the SDK answers 401) when unknown or expired."""
        entry = self._tokens.lookup(token)
        if entry is None:
            return None
        grant = entry.grant
        return AccessToken(
            token=token,
            client_id=grant.name,
            scopes=["abathur:read"] if grant.read_only else ["abathur:read", "abathur:write"],
            expires_at=None if entry.expires_at is None else int(entry.expires_at),
            claims={"abathur_scope": grant.scope},
        )


async def serve_stdio(db_path: str | Path, grant: Grant) -> None:
    """Serve MCP on stdin/stdout until stdin closes; stdout carries the protocol only."""
    from abathur.api import Abathur

    async with Abathur.open(db_path) as ab:
        await build_server(ab, grant=grant).run_stdio_async()


async def serve_http(db_path: str | Path, host: str, port: int, tokens: TokenTable) -> None:
    """Serve MCP over streamable HTTP at ``http://host:port/mcp`` until stopped."""
    import uvicorn

    from abathur.api import Abathur

    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    auth = AuthSettings(
        issuer_url=url,  # type: ignore[arg-type]  # pydantic parses it
        resource_server_url=url + HTTP_PATH,  # type: ignore[arg-type]
        # Our tokens are opaque and bound to this server by the tokens file.
        validate_token_resource=False,
    )
    async with Abathur.open(db_path) as ab:
        server = build_server(ab, tokens=tokens, auth=auth, token_verifier=TokenVerifier(tokens))
        app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
        # log_config=None: uvicorn's own config writes its access log to stdout.
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        await uvicorn.Server(config).serve()

"""``abathur mcp``: serve the database to MCP clients, over stdio or streamable HTTP.

The server lives in :mod:`abathur.integrations.mcp` (extra ``mcp``); this
module only checks the arguments and the database, then runs it. Over stdio,
stdout carries the protocol and nothing else: logs go to stderr.
"""

from __future__ import annotations

from pathlib import Path

import click

from abathur.cli.options import Output, database_missing, database_problem, standard_options
from abathur.errors import AbathurError, DatabaseError, InvalidInputError

__all__ = ["mcp"]


class MissingExtraError(AbathurError):
    """The MCP SDK is not installed (the ``mcp`` extra)."""

    code = "mcp.not_installed"


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6) as a host and a port."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(
            f"--http {text!r} must be HOST:PORT, e.g. 127.0.0.1:8765 (a port from 1 to 65535)"
        )
    return host, int(port)


@click.command()
@click.option(
    "--scope",
    metavar="PREFIX",
    default=None,
    help="stdio: the namespace the client may use (e.g. user:alice); every namespace it "
    "names is relative to it.",
)
@click.option(
    "--read-only", is_flag=True, help="stdio: refuse the tools that write (put, delete, append)."
)
@click.option(
    "--documents",
    metavar="PATH_PREFIX",
    default=None,
    help="stdio: let documents_search read the synced documents under this path ('*': all). "
    "Default: no documents.",
)
@click.option(
    "--http",
    "http_address",
    metavar="HOST:PORT",
    default=None,
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (needs --tokens).",
)
@click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTTP: the JSON file mapping bearer tokens to a scope and read-only or read-write.",
)
@standard_options
def mcp(
    *,
    db_path: Path,
    out: Output,
    scope: str | None,
    read_only: bool,
    documents: str | None,
    http_address: str | None,
    tokens_file: Path | None,
) -> None:
    """Serve the memory to MCP clients (Claude, Cursor...): stdio, or HTTP with tokens.

    Ten tools (memory_search, memory_get, memory_put, memory_delete,
    memory_history, memory_list, memory_context, session_append,
    session_get, documents_search), the resources abathur://stats and
    abathur://health, and a prompt, use_memory. docs/integrations/mcp.md
    has the client configurations. The database must exist (abathur init).

    \b
    Examples:
      abathur mcp --db ./agent.db --scope user:alice
      abathur mcp --db ./agent.db --http 127.0.0.1:8765 --tokens ./tokens.json
    """
    if http_address is None:
        if scope is None:
            raise click.UsageError("--scope is required for stdio (or serve --http with --tokens)")
        if tokens_file is not None:
            raise click.UsageError("--tokens goes with --http")
    else:
        if tokens_file is None:
            raise click.UsageError("--http needs --tokens FILE")
        if scope is not None or read_only or documents is not None:
            raise click.UsageError(
                "--scope, --read-only and --documents are for stdio; over HTTP each token's "
                "entry in the tokens file says them"
            )
    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {str(db_path)!r}: create it with `abathur init --db {db_path}`"
        )
    problem = database_problem(db_path)
    if problem is not None:
        raise problem
    try:
        import mcp as _sdk  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "abathur mcp needs the MCP SDK: pip install 'abathur[mcp]'"
        ) from None

    import logging
    import sys

    import anyio

    from abathur.integrations.mcp import run

    # The SDK and uvicorn log through stdlib logging: to stderr, never stdout.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    from abathur.integrations.mcp.scope import Grant
    from abathur.integrations.mcp.tokens import load_tokens

    if http_address is None:
        assert scope is not None
        grant = Grant(scope=scope, read_only=read_only, documents=documents)
        out.progress(f"abathur mcp: serving {db_path} over stdio, scope {scope!r}")
        anyio.run(run.serve_stdio, db_path, grant)
        return
    host, port = _address(http_address)
    assert tokens_file is not None
    tokens = load_tokens(tokens_file)
    out.progress(
        f"abathur mcp: serving {db_path} at http://{http_address}{run.HTTP_PATH} "
        f"({len(tokens)} token(s))"
    )
    anyio.run(run.serve_http, db_path, host, port, tokens)

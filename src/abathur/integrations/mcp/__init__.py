"""An MCP server over abathur: memory for Claude Code, Claude Desktop, Cursor and any MCP client.

Install with ``pip install 'abathur[mcp]'`` (the official MCP Python SDK, 2.x),
run with ``abathur mcp`` (stdio) or ``abathur mcp --http HOST:PORT --tokens
FILE`` (streamable HTTP); docs/integrations/mcp.md is the guide.

* :mod:`.scope`: a connection's :class:`~.scope.Grant` (scope, read-only,
  documents) and the namespace rules that keep it inside its scope.
* :mod:`.tokens`: the HTTP server's tokens file.
* :mod:`.server`: :func:`~.server.build_server`, the ten tools, two
  resources (``abathur://stats``, ``abathur://health``) and a prompt.
* :mod:`.run`: serving over stdio and HTTP.

``scope`` and ``tokens`` import without the SDK; ``server`` and ``run`` need it.
"""

"""Adapters that plug abathur into agent frameworks, each behind its own extra.

* :mod:`abathur.integrations.adk` (``pip install 'abathur[adk]'``): Google
  ADK's session and memory services, and the ``abathur://`` URI scheme for
  ``adk web`` / ``adk api_server``.
* :mod:`abathur.integrations.langgraph` (``pip install 'abathur[langgraph]'``):
  ``AbathurStore``, a LangGraph ``BaseStore`` (get/put/search/list-namespaces,
  index config, TTL) usable as the ``store=`` of a compiled graph.
* :mod:`abathur.integrations.mcp` (``pip install 'abathur[mcp]'``): an MCP
  server (stdio and streamable HTTP), what ``abathur mcp`` runs.

Nothing here is imported by ``import abathur``: an adapter needs its
framework installed, and only the code that uses it pays for the import.
"""

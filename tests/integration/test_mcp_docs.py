"""docs/integrations/mcp.md's client snippets start a working server, exactly as written.

Each snippet (Claude Desktop, Claude Code, Cursor) is read from the page, and
its command is started with the SDK's stdio client, as the client would: only
the placeholder database path is replaced, and ``abathur`` is found on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "integrations" / "mcp.md"
PLACEHOLDER = "/path/to/agent.db"
_SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)


def snippets() -> dict[str, tuple[str, list[str]]]:
    """name -> (command, args), as each snippet gives them."""
    found: dict[str, tuple[str, list[str]]] = {}
    for name, language, body in _SNIPPET.findall(PAGE.read_text("utf-8")):
        if language == "json":
            (server,) = json.loads(body)["mcpServers"].values()
            found[name] = (server["command"], server["args"])
        else:  # `claude mcp add NAME -- COMMAND ARGS...`
            words = shlex.split(body.strip())
            assert words[:3] == ["claude", "mcp", "add"] and "--" in words, body
            command, *args = words[words.index("--") + 1 :]
            found[name] = (command, args)
    return found


def test_the_page_has_the_three_snippets() -> None:
    assert sorted(snippets()) == ["claude-code", "claude-desktop", "cursor"]


@pytest.mark.parametrize("name", ["claude-desktop", "claude-code", "cursor"])
async def test_each_snippet_starts_a_working_server(name: str, tmp_path: Path) -> None:
    command, args = snippets()[name]
    db = tmp_path / "agent.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    # `abathur` as a client finds it: on PATH (this venv's, where pip put it).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["ABATHUR_EMBEDDER"] = "none"
    subprocess.run([sys.executable, "-m", "abathur", "init", "--db", str(db)], env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    assert PLACEHOLDER in args
    args = [str(db) if a == PLACEHOLDER else a for a in args]
    params = StdioServerParameters(command=command, args=args, env=env)
    async with Client(params) as client:
        assert len((await client.list_tools()).tools) == 10
        put = await client.call_tool("memory_put", {"namespace": "n", "key": "k", "value": 1})
        assert not put.is_error, put.content
        stats = json.loads((await client.read_resource("abathur://stats")).contents[0].text)  # type: ignore[union-attr]
    assert stats["scope"] == args[args.index("--scope") + 1]

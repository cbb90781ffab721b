"""The MCP server in process, through the SDK's own client, on a real database (issue 15).

Each test talks to the server exactly as an agent would (tools/call,
resources/read) and checks what it gets back and what the file holds after.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from mcp.client import Client

from abathur import Abathur
from abathur.integrations.mcp.scope import Grant
from abathur.integrations.mcp.server import TOOLS, build_server
from tests.backends import BackendHandle
from tests.helpers import assert_unchanged

SECRET = "zebracode"
# The contract: every tool and its arguments.
CONTRACT = {
    "memory_search": {"query", "prefix", "mode", "k", "type", "filter", "min_score"},
    "memory_get": {"namespace", "key"},
    "memory_put": {"namespace", "key", "value", "type", "metadata", "ttl", "expected_version"},
    "memory_delete": {"namespace", "key"},
    "memory_history": {"namespace", "key"},
    "memory_list": {"prefix", "type", "filter", "limit"},
    "memory_context": {"query", "prefix", "max_tokens"},
    "session_append": {"session_id", "author", "content", "state_delta"},
    "session_get": {"session_id", "last_n"},
    "documents_search": {"query", "prefix", "k"},
}
READ_ONLY = {"memory_search", "memory_get", "memory_history", "memory_list", "memory_context",
             "session_get", "documents_search"}  # fmt: skip


@pytest.fixture
async def db(backend: BackendHandle) -> AsyncIterator[Abathur]:
    async with backend.open(embedder="none", embed_worker=False, max_value_bytes=2000) as ab:
        yield ab


@asynccontextmanager
async def connect(ab: Abathur, grant: Grant, mode: str = "auto") -> AsyncIterator[Client]:
    async with Client(build_server(ab, grant=grant), mode=mode) as client:  # type: ignore[arg-type]
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The tool's structured result; an error result comes back as {"error": ...}."""
    result = await client.call_tool(tool, arguments)
    data = result.structured_content
    assert data is not None, result.content
    assert ("error" in data) == bool(result.is_error), data
    if result.is_error:  # the text carries the code and the message too
        assert result.content[0].text.startswith(data["error"]["code"] + ": ")  # type: ignore[union-attr]
    return data


async def test_the_tools_are_the_contract_with_annotations(db: Abathur) -> None:
    async with connect(db, Grant(scope="user:alice")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tuple(tools) == TOOLS and set(tools) == set(CONTRACT)
    for name, tool in tools.items():
        assert set(tool.input_schema["properties"]) == CONTRACT[name], name
        assert "ctx" not in tool.input_schema["properties"]
        assert tool.description and len(tool.description) > 40, name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (name in READ_ONLY), name
        assert tool.annotations.destructive_hint is (name == "memory_delete"), name


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_memories_round_trip_relative_to_the_scope(db: Abathur, mode: str) -> None:
    async with connect(db, Grant(scope="user:alice"), mode) as client:
        put = await call(client, "memory_put", namespace="prefs", key="lang",
                         value={"language": "French"}, metadata={"src": "chat"})  # fmt: skip
        assert put["memory"]["namespace"] == "prefs" and put["memory"]["version"] == 1
        await call(client, "memory_put", namespace="prefs", key="lang", value="Spanish")
        got = await call(client, "memory_get", namespace="prefs", key="lang")
        assert got == {"found": True, "memory": got["memory"]}
        assert got["memory"]["value"] == "Spanish" and got["memory"]["version"] == 2
        found = await call(client, "memory_search", query="spanish", mode="keyword")
        assert [(h["namespace"], h["key"]) for h in found["hits"]] == [("prefs", "lang")]
        listed = await call(client, "memory_list", prefix="prefs")
        assert [m["key"] for m in listed["memories"]] == ["lang"] and not listed["has_more"]
        history = await call(client, "memory_history", namespace="prefs", key="lang")
        assert [v["version"] for v in history["versions"]] == [1, 2]
        context = await call(client, "memory_context", query="spanish", max_tokens=200)
        assert context["text"] == "prefs/lang: Spanish"
        assert context["memories"][0]["namespace"] == "prefs"
        deleted = await call(client, "memory_delete", namespace="prefs", key="lang")
        assert deleted["deleted"]["status"] == "deleted"
        assert (await call(client, "memory_get", namespace="prefs", key="lang"))["found"] is False
    # In the file, under the scope.
    assert [m.version for m in await db.memory.history("user:alice:prefs", "lang")] == [1, 2, 3]


async def _seed_neighbours(ab: Abathur) -> None:
    for namespace in ("user:alice2", "user:alice2:prefs", "user:al_ce", "user:ALICE", "user",
                      "user:bob:prefs", "team:x"):  # fmt: skip
        await ab.memory.put(namespace, "k", f"{SECRET} of {namespace}")


@pytest.mark.parametrize("scope", ["user:alice", "user:al_ce"])
async def test_no_read_reaches_outside_the_scope(db: Abathur, scope: str) -> None:
    await _seed_neighbours(db)
    if scope == "user:al_ce":  # its own data is seeded above; alice's must stay invisible
        await db.memory.put("user:alice", "k", f"{SECRET} of user:alice")
    own = f"{SECRET} of {scope}"
    async with connect(db, Grant(scope=scope)) as client:
        replies = [
            await call(client, "memory_search", query=SECRET, mode="keyword", k=100),
            await call(client, "memory_search", query=SECRET, mode="hybrid", k=100),
            await call(client, "memory_list", limit=1000),
            await call(client, "memory_context", query=SECRET, max_tokens=5000),
        ]
        for namespace in ("..", "../alice2", ":user:alice2", "/user:alice2", "", "..:alice2",
                          "2", "alice2", "user:alice2", "ALICE"):  # fmt: skip
            for tool in ("memory_get", "memory_history"):
                replies.append(await call(client, tool, namespace=namespace, key="k"))
            replies.append(await call(client, "memory_list", prefix=namespace))
            replies.append(await call(client, "memory_search", query=SECRET, prefix=namespace))
        stats = json.loads((await client.read_resource("abathur://stats")).contents[0].text)  # type: ignore[union-attr]
    text = json.dumps(replies) + json.dumps(stats)
    leaked = [ns for ns in ("user:alice2", "user:al_ce", "user:ALICE", "user:alice", "user",
                            "user:bob:prefs", "team:x") if f"{SECRET} of {ns}\"" in text
              and ns != scope]  # fmt: skip
    assert leaked == []
    # Only its own memory at the scope itself came back; the refusals say why.
    assert text.count(own) >= 1 if scope == "user:al_ce" else own not in text
    codes = {r["error"]["code"] for r in replies if "error" in r}
    assert codes == {"memory.invalid_namespace"}
    assert stats["scope"] == scope and all(n["namespace"] in ("",) for n in stats["namespaces"])


async def test_no_write_lands_outside_the_scope(db: Abathur) -> None:
    async with connect(db, Grant(scope="user:alice")) as client:
        async with assert_unchanged(db):
            for namespace in ("..", "../bob", ":user:bob", "/user:bob", "", "a::b", " a", "a:."):
                reply = await call(client, "memory_put", namespace=namespace, key="k", value=1)
                assert reply["error"]["code"] == "memory.invalid_namespace", namespace
                reply = await call(client, "memory_delete", namespace=namespace, key="k")
                assert reply["error"]["code"] == "memory.invalid_namespace", namespace
        await call(client, "memory_put", namespace="user:bob", key="k", value=1)
    # A namespace that looks absolute is just a name inside the scope.
    assert await db.memory.get("user:alice:user:bob", "k") is not None
    assert await db.memory.get("user:bob", "k") is None


async def test_a_read_only_grant_cannot_write(db: Abathur) -> None:
    await db.memory.put("user:alice:prefs", "lang", "French")
    async with connect(db, Grant(scope="user:alice", read_only=True)) as client:
        async with assert_unchanged(db):
            for tool, args in [
                ("memory_put", {"namespace": "prefs", "key": "x", "value": 1}),
                ("memory_delete", {"namespace": "prefs", "key": "lang"}),
                ("session_append", {"session_id": "s", "author": "user", "content": "hi"}),
            ]:
                reply = await call(client, tool, **args)
                assert reply["error"]["code"] == "permission_denied", tool
                assert "read-only" in reply["error"]["message"]
        got = await call(client, "memory_get", namespace="prefs", key="lang")
        assert got["memory"]["value"] == "French"


async def test_large_values_and_bad_arguments_are_typed_errors_and_the_server_goes_on(
    db: Abathur,
) -> None:
    async with connect(db, Grant(scope="user:alice")) as client:
        async with assert_unchanged(db):
            reply = await call(client, "memory_put", namespace="n", key="k", value="x" * 5000)
            assert reply["error"]["code"] == "value_too_large"
            assert "2000 bytes" in reply["error"]["message"]
            reply = await call(client, "memory_delete", namespace="n", key="absent")
            assert reply["error"]["code"] == "memory.not_found"
            reply = await call(client, "memory_search", query="x", k=0)
            assert reply["error"]["code"] == "invalid_input"
            # The SDK refuses what its schema refuses, as a tool error too.
            bad = await client.call_tool("memory_get", {"namespace": 5, "key": "k"})
            assert bad.is_error
        stats = json.loads((await client.read_resource("abathur://stats")).contents[0].text)  # type: ignore[union-attr]
        assert stats["limits"]["max_value_bytes"] == 2000
        ok = await call(client, "memory_put", namespace="n", key="k", value="fine")
        assert ok["memory"]["version"] == 1


async def test_sessions_belong_to_their_scope(db: Abathur) -> None:
    async with connect(db, Grant(scope="user:alice")) as alice:
        first = await call(alice, "session_append", session_id="s1", author="user",
                           content={"text": "hi"}, state_delta={"topic": "trip"})  # fmt: skip
        assert (first["seq"], first["state"]) == (1, {"topic": "trip"})
        await call(alice, "session_append", session_id="s1", author="agent", content="hello")
        got = await call(alice, "session_get", session_id="s1", last_n=1)
        assert [e["content"] for e in got["events"]] == ["hello"] and got["revision"] == 2
    async with connect(db, Grant(scope="user:bob")) as bob:
        reply = await call(bob, "session_get", session_id="s1")
        assert reply["error"]["code"] == "session.not_found"
        mine = await call(bob, "session_append", session_id="s1", author="user", content="yo")
        assert mine["seq"] == 1  # bob's own s1, not alice's
    sessions = await db.sessions.list(app="mcp")
    assert sorted(s.user for s in sessions) == ["user:alice", "user:bob"]


async def test_documents_need_a_grant_and_stay_under_its_prefix(
    db: Abathur, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    (root / "public").mkdir(parents=True)
    (root / "private").mkdir()
    (root / "public" / "a.md").write_text(f"# Restore\n\n{SECRET} public restore steps\n")
    (root / "private" / "b.md").write_text(f"# Keys\n\n{SECRET} private keys\n")
    await db.documents.sync(root)
    async with connect(db, Grant(scope="user:alice")) as client:
        reply = await call(client, "documents_search", query=SECRET)
        assert reply["error"]["code"] == "permission_denied"
    async with connect(db, Grant(scope="user:alice", documents="public")) as client:
        found = await call(client, "documents_search", query=SECRET, k=10)
        assert [h["path"] for h in found["hits"]] == ["public/a.md"]
        escape = await call(client, "documents_search", query=SECRET, prefix="../private")
        assert escape["error"]["code"] == "memory.invalid_namespace"
    async with connect(db, Grant(scope="user:alice", documents="*")) as client:
        found = await call(client, "documents_search", query=SECRET, k=10)
        assert sorted(h["path"] for h in found["hits"]) == ["private/b.md", "public/a.md"]


async def test_resources_and_the_prompt(db: Abathur) -> None:
    async with connect(db, Grant(scope="user:alice")) as client:
        await call(client, "memory_put", namespace="prefs", key="a", value=1)
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert uris == {"abathur://stats", "abathur://health"}
        stats = json.loads((await client.read_resource("abathur://stats")).contents[0].text)  # type: ignore[union-attr]
        assert stats["namespaces"] == [{"namespace": "prefs", "memories": 1}]
        health = json.loads((await client.read_resource("abathur://health")).contents[0].text)  # type: ignore[union-attr]
        assert health["status"] in ("ok", "warn", "fail") and health["items"]
        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["use_memory"]
        prompt = await client.get_prompt("use_memory")
        assert "memory_context" in prompt.messages[0].content.text  # type: ignore[union-attr]


def test_building_a_server_leaves_the_hosts_logging_alone(backend: BackendHandle) -> None:
    # The SDK's MCPServer() calls logging.basicConfig; a library must not. In a
    # fresh process, as pytest's own handlers would hide it here.
    code = (
        "import asyncio, logging, sys\n"
        "from abathur import Abathur\n"
        "from abathur.integrations.mcp.scope import Grant\n"
        "from abathur.integrations.mcp.server import build_server\n"
        "async def main():\n"
        f"    async with Abathur.open({str(backend.target)!r}, embedder='none') as ab:\n"
        "        build_server(ab, grant=Grant(scope='user:a'))\n"
        "asyncio.run(main())\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(logging.WARNING)]

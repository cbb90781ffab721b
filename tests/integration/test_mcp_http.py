"""``abathur mcp --http`` on loopback as a real subprocess: tokens, scopes, clients at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

import anyio
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

TOKENS = {
    "alice": "alice-" + "a" * 40,
    "alice-ro": "alice-ro-" + "r" * 40,
    "bob": "bob-" + "b" * 40,
    "carol": "carol-" + "c" * 40,
    "dave": "dave-" + "d" * 40,
    "old": "old-" + "o" * 40,
}
SCOPES = {"alice": "user:alice", "alice-ro": "user:alice", "bob": "user:bob",
          "carol": "user:carol", "dave": "user:alice2", "old": "user:alice"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("http")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    env["ABATHUR_EMBEDDER"] = "none"
    db = base / "agent.db"
    subprocess.run([sys.executable, "-m", "abathur", "init", "--db", str(db)], env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    entries: list[dict[str, Any]] = [
        {"name": name, "token": token, "scope": SCOPES[name],
         "access": "read-only" if name == "alice-ro" else "read-write"}
        for name, token in TOKENS.items()
    ]  # fmt: skip
    entries[-1]["expires_at"] = "2020-01-01T00:00:00Z"  # "old" has expired
    tokens = base / "tokens.json"
    tokens.write_text(json.dumps({"tokens": entries}))
    port = free_port()
    log = (base / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "abathur", "mcp", "--db", str(db), "--http", f"127.0.0.1:{port}",
         "--tokens", str(tokens)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (base / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        log.close()
    assert out == b"", out  # nothing on stdout over HTTP either: logs are stderr's


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert result.structured_content is not None, result.content
    return result.structured_content


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer nope", "Bearer " + TOKENS["old"], TOKENS["alice"], "Basic " + TOKENS["alice"]],
    ids=["none", "unknown", "expired", "no-scheme", "basic"],
)
async def test_unknown_or_expired_tokens_get_401(url: str, authorization: str | None) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401, response.text


async def test_a_valid_token_is_served(url: str) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(url, json=INITIALIZE, headers={
            "Accept": "application/json, text/event-stream",
            "Authorization": "Bearer " + TOKENS["alice"]})  # fmt: skip
    assert response.status_code == 200, response.text


async def test_each_token_sees_its_scope_only_and_read_only_cannot_write(url: str) -> None:
    async with connect(url, TOKENS["alice"]) as alice:
        put = await call(alice, "memory_put", namespace="prefs", key="lang", value="okapi French")
        assert put["memory"]["namespace"] == "prefs"
    async with connect(url, TOKENS["dave"]) as dave:  # user:alice2, a look-alike scope
        await call(dave, "memory_put", namespace="prefs", key="lang", value="okapi Dutch")
        found = await call(dave, "memory_search", query="okapi", mode="keyword")
        assert [h["value"] for h in found["hits"]] == ["okapi Dutch"]
    async with connect(url, TOKENS["bob"]) as bob:
        found = await call(bob, "memory_search", query="okapi", mode="keyword")
        assert found["hits"] == []
        # Resources too are the token's: its scope, nobody else's counts.
        stats = json.loads((await bob.read_resource("abathur://stats")).contents[0].text)  # type: ignore[union-attr]
        assert (stats["scope"], stats["memories"], stats["read_only"]) == ("user:bob", 0, False)
        assert (await call(bob, "memory_get", namespace="prefs", key="lang"))["found"] is False
    async with connect(url, TOKENS["alice-ro"]) as reader:
        got = await call(reader, "memory_get", namespace="prefs", key="lang")
        assert got["memory"]["value"] == "okapi French"
        found = await call(reader, "memory_search", query="okapi", mode="keyword")
        assert [h["value"] for h in found["hits"]] == ["okapi French"]
        for tool, args in [
            ("memory_put", {"namespace": "prefs", "key": "lang", "value": "x"}),
            ("memory_delete", {"namespace": "prefs", "key": "lang"}),
            ("session_append", {"session_id": "s", "author": "user", "content": "x"}),
        ]:
            refused = await call(reader, tool, **args)
            assert refused["error"]["code"] == "permission_denied", tool
        got = await call(reader, "memory_get", namespace="prefs", key="lang")
        assert got["memory"]["version"] == 1


async def test_several_clients_at_once_stay_in_their_scopes(url: str) -> None:
    names = ["alice", "bob", "carol", "dave"]
    seen: dict[str, list[str]] = {}

    async def agent(name: str) -> None:
        async with connect(url, TOKENS[name]) as client:
            for i in range(8):
                await call(client, "memory_put", namespace="load", key=f"k{i}",
                           value=f"quokka {name} {i}")  # fmt: skip
            found = await call(client, "memory_search", query="quokka", mode="keyword", k=100)
            seen[name] = sorted(h["value"] for h in found["hits"])

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(agent, name)
    for name in names:
        assert seen[name] == sorted(f"quokka {name} {i}" for i in range(8)), name

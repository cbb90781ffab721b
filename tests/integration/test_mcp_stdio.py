"""``abathur mcp`` as a real subprocess over stdio (issue 15).

With the SDK's ``stdio_client``, as Claude Desktop or Cursor starts it, and
byte for byte: stdout carries JSON-RPC and nothing else, logs go to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from abathur.cli.options import EXIT_ERROR, EXIT_OK, EXIT_USAGE


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    # Keyword search needs no model: the server starts in a moment.
    return {**env, "ABATHUR_EMBEDDER": "none"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.db"
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "init", "--db", str(path)],
        env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def server(db: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "abathur", "mcp", "--db", str(db), *args],
        env=environment(),
    )


async def test_an_agent_uses_the_server_through_stdio_client(db: Path, tmp_path: Path) -> None:
    async with Client(server(db, "--scope", "user:alice")) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert len(tools) == 10 and "memory_context" in tools
        put = await client.call_tool(
            "memory_put", {"namespace": "prefs", "key": "lang", "value": "French"}
        )
        assert not put.is_error and put.structured_content["memory"]["version"] == 1  # type: ignore[index]
        refused = await client.call_tool("memory_get", {"namespace": "../bob", "key": "k"})
        assert refused.is_error
        assert refused.structured_content["error"]["code"] == "memory.invalid_namespace"  # type: ignore[index]
        # The server lives on after an error.
        found = await client.call_tool("memory_search", {"query": "french", "mode": "keyword"})
        hits = found.structured_content["hits"]  # type: ignore[index]
        assert [(h["namespace"], h["value"]) for h in hits] == [("prefs", "French")]
    # The write is in the file, under the scope.
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "memory", "get", "--db", str(db), "user:alice:prefs",
         "lang", "--json"],
        env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["memory"]["value"] == "French"


def rpc(id_: int | None, method: str, params: dict[str, Any]) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id_ is not None:
        message["id"] = id_
    return json.dumps(message) + "\n"


def test_stdout_carries_the_protocol_only_and_logs_go_to_stderr(db: Path) -> None:
    messages = [
        rpc(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "test", "version": "0"}}),
        rpc(None, "notifications/initialized", {}),
        rpc(2, "tools/call", {"name": "memory_put",
                              "arguments": {"namespace": "n", "key": "k", "value": "v"}}),
        rpc(3, "tools/call", {"name": "memory_put",
                              "arguments": {"namespace": "", "key": "k", "value": "v"}}),
        rpc(4, "tools/call", {"name": "no_such_tool", "arguments": {}}),
        rpc(5, "tools/call", {"name": "memory_get", "arguments": {"namespace": "n"}}),
        rpc(6, "tools/call", {"name": "memory_get", "arguments": {"namespace": "n", "key": "k"}}),
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "abathur", "mcp", "--db", str(db), "--scope", "user:alice",
         "--log-level", "debug"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)  # a hung server fails the test, never the run
    watchdog.start()
    lines: list[str] = []
    try:
        # One request at a time, as a client does: each answer read before the next.
        for message in messages:
            proc.stdin.write(message)
            proc.stdin.flush()
            if '"id"' in message:
                lines.append(proc.stdout.readline())
        proc.stdin.close()  # the client goes away: the server ends
        lines.extend(proc.stdout.read().splitlines())
        stderr = proc.stderr.read() if proc.stderr else ""
        assert proc.wait(timeout=60) == EXIT_OK, stderr
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    replies = [json.loads(line) for line in lines if line]  # every line is JSON...
    assert len(replies) == len([line for line in lines if line.strip()])
    assert all(r.get("jsonrpc") == "2.0" for r in replies)  # ...and JSON-RPC
    by_id = {r["id"]: r for r in replies if "id" in r}
    assert set(by_id) == {1, 2, 3, 4, 5, 6}
    assert by_id[2]["result"]["isError"] is False
    assert by_id[3]["result"]["isError"] is True
    assert by_id[3]["result"]["structuredContent"]["error"]["code"] == "memory.invalid_namespace"
    assert "error" in by_id[4] or by_id[4]["result"]["isError"]
    assert "error" in by_id[5] or by_id[5]["result"]["isError"]
    assert by_id[6]["result"]["structuredContent"]["memory"]["value"] == "v"
    # The logs went to stderr: the start line and the refused call.
    assert "serving" in stderr and "memory.invalid_namespace" in stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        ([], EXIT_USAGE, "--scope is required"),
        (["--scope", "user:a", "--tokens", "t.json"], EXIT_USAGE, "--tokens goes with --http"),
        (["--http", "127.0.0.1:8765"], EXIT_USAGE, "--http needs --tokens"),
        (["--scope", "user:"], EXIT_ERROR, "memory.invalid_namespace"),
        (["--http", "nowhere", "--tokens", "{tokens}"], EXIT_ERROR, "HOST:PORT"),
        (["--http", "127.0.0.1:8765", "--tokens", "{missing}"], EXIT_ERROR, "tokens file"),
    ],
)
def test_bad_arguments_exit_with_the_tables_codes(
    db: Path, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": "t" * 32, "scope": "user:a",
                                              "access": "read-only"}]}))  # fmt: skip
    argv = [a.format(tokens=tokens, missing=tmp_path / "none.json") for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "mcp", "--db", str(db), *argv],
        env=environment(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert says in done.stderr and done.stdout == ""


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    done = subprocess.run(
        [sys.executable, "-m", "abathur", "mcp", "--db", str(missing), "--scope", "user:a"],
        env=environment(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == EXIT_ERROR and "[db.error]" in done.stderr
    assert not missing.exists()


async def test_read_only_and_documents_flags_reach_the_grant(db: Path) -> None:
    async with Client(server(db, "--scope", "team:ops", "--read-only", "--documents", "*")) as c:
        put = await c.call_tool("memory_put", {"namespace": "n", "key": "k", "value": 1})
        assert put.is_error
        assert put.structured_content["error"]["code"] == "permission_denied"  # type: ignore[index]
        docs = await c.call_tool("documents_search", {"query": "anything"})
        assert not docs.is_error and docs.structured_content["hits"] == []  # type: ignore[index]
    async with Client(server(db, "--scope", "team:ops")) as c:
        docs = await c.call_tool("documents_search", {"query": "anything"})
        assert docs.structured_content["error"]["code"] == "permission_denied"  # type: ignore[index]

"""The ``abathur:`` scheme in ADK's service registry, up to a real ``adk web`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.adk", reason="the adk extra is not installed")

from google.adk.cli import service_registry
from google.adk.cli.service_registry import ServiceRegistry
from google.adk.cli.utils.service_factory import (
    create_memory_service_from_options,
    create_session_service_from_options,
)

from abathur import Abathur, errors
from abathur.integrations.adk import (
    EVENT_FORMAT,
    AbathurMemoryService,
    AbathurSessionService,
    namespace_for,
    parse_uri,
    register,
)

# --- URIs and construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "path", "overrides"),
    [
        ("abathur:///srv/agent.db", "/srv/agent.db", {}),
        ("abathur://localhost/srv/agent.db", "/srv/agent.db", {}),
        ("abathur:agent.db", "agent.db", {}),
        ("abathur:data/agent.db", "data/agent.db", {}),
        ("abathur:///srv/my%20agent.db", "/srv/my agent.db", {}),
        (
            "abathur:///srv/a.db?synchronous=FULL&embedder=none",
            "/srv/a.db",
            {"synchronous": "FULL", "embedder": "none"},
        ),
    ],
)
def test_parse_uri(uri: str, path: str, overrides: dict[str, str]) -> None:
    assert parse_uri(uri) == (Path(path), overrides)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sqlite:///srv/agent.db", "not an abathur: URI"),
        ("abathur://agent.db", "names the host 'agent.db'"),
        ("abathur://", "names no database file"),
        ("abathur:///a.db?db=/b.db", "sets 'db'"),
        ("abathur:///a.db?synchronous=FULL&synchronous=NORMAL", "more than once"),
        ("abathur:///a.db?novalue", "malformed query"),
    ],
)
def test_parse_uri_refuses(uri: str, message: str) -> None:
    with pytest.raises(errors.InvalidInputError, match=message) as ei:
        parse_uri(uri)
    assert ei.value.code == "invalid_input"


@pytest.mark.parametrize(
    "uri",
    [
        "abathur:///a.db?ollama_host=http://u:S3Cr3t@h:1&embedder=ollama&embedder=none",
        "abathur:///a.db?ollama_host=http%3A%2F%2Fu%3AS3Cr3t%40h%3A1&db=/b.db",
        "abathur://u:S3Cr3t@host/a.db",
        "sqlite:///a.db?ollama_host=http://u:S3Cr3t@h:1",
        "abathur:///a.db?ollama_host=http://u:S3Cr3t@h:1&novalue",
    ],
)
def test_parse_uri_refusals_never_show_a_password(uri: str) -> None:
    # Issue 11, item 11: the URI may carry an Ollama host with its credentials.
    with pytest.raises(errors.InvalidInputError) as ei:
        parse_uri(uri)
    assert "S3Cr3t" not in ei.value.message and "***" in ei.value.message


@pytest.mark.parametrize("cls", [AbathurSessionService, AbathurMemoryService])
async def test_construction_is_checked_before_anything_opens(
    cls: type, tmp_path: Path, ab: Abathur
) -> None:
    tmp_path = tmp_path / "fresh"
    tmp_path.mkdir()
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "either a database"),
        ({"db": tmp_path / "a.db", "uri": "abathur:///x.db"}, "either a database"),
        ({"db": 42}, "must be an Abathur or a path"),
        ({"db": ab, "synchronous": "FULL"}, "already open"),
        ({"db": tmp_path / "a.db", "no_such_setting": 1}, "invalid abathur settings"),
        ({"db": tmp_path / "a.db", "synchronous": "SOMETIMES"}, "invalid abathur settings"),
        ({"uri": "abathur:///x.db?synchronous=FULL", "synchronous": "FULL"}, "both in the URI"),
    ]
    for kwargs, message in bad:
        with pytest.raises(errors.InvalidInputError, match=message) as ei:
            cls(**kwargs)
        assert ei.value.code == "invalid_input"
    assert list(tmp_path.iterdir()) == []


async def test_settings_reach_the_database(tmp_path: Path) -> None:
    uri = f"abathur://{tmp_path}/a.db?synchronous=FULL&max_value_bytes=2048"
    async with AbathurSessionService(uri=uri) as service:
        assert (service.settings.synchronous, service.settings.max_value_bytes) == ("FULL", 2048)
        s = await service.create_session(app_name="a", user_id="u")
        with pytest.raises(errors.ValueTooLargeError):
            await service.create_session(app_name="a", user_id="u", state={"x": "y" * 4096})
    async with AbathurSessionService(tmp_path / "a.db") as again:
        assert await again.get_session(app_name="a", user_id="u", session_id=s.id)


# --- the registry -----------------------------------------------------------------------------


def test_register_adds_the_scheme_for_sessions_and_memory() -> None:
    registry = ServiceRegistry()
    assert registry.create_session_service("abathur:///srv/a.db") is None
    register(registry)
    register(registry)  # idempotent
    session = registry.create_session_service("abathur:///srv/a.db", agents_dir="/agents")
    memory = registry.create_memory_service(
        "abathur:///srv/m.db?embedder=none", agents_dir="/agents"
    )
    assert isinstance(session, AbathurSessionService)
    assert session.settings.db == Path("/srv/a.db")
    assert isinstance(memory, AbathurMemoryService)
    assert (memory.settings.db, memory.settings.embedder) == (Path("/srv/m.db"), "none")


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """ADK's process-wide registry, rebuilt for one test and put back after."""
    monkeypatch.setattr(service_registry, "_service_registry_instance", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "services", raising=False)
    yield


@pytest.mark.sqlite_only("an abathur:// URI naming a SQLite file path")
async def test_services_yaml_in_the_agents_dir_works(tmp_path: Path, fresh_registry: None) -> None:
    # ADK's code-free way: the generic factory calls cls(uri=..., agents_dir=...).
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "services.yaml").write_text(
        "services:\n"
        "  - scheme: abathur\n    type: session\n"
        "    class: abathur.integrations.adk.AbathurSessionService\n"
        "  - scheme: abathur\n    type: memory\n"
        "    class: abathur.integrations.adk.AbathurMemoryService\n"
    )
    service_registry.load_services_module(str(agents))
    db = tmp_path / "agent.db"
    # Exactly what `adk web` / `adk api_server` call with the CLI's URIs.
    sessions = create_session_service_from_options(
        base_dir=agents, session_service_uri=f"abathur://{db}"
    )
    memory = create_memory_service_from_options(
        base_dir=agents, memory_service_uri=f"abathur://{db}"
    )
    assert isinstance(sessions, AbathurSessionService)
    assert isinstance(memory, AbathurMemoryService)
    async with sessions, memory:
        s = await sessions.create_session(app_name="app", user_id="u", session_id="s1")
        assert s.id == "s1"
    async with Abathur.open(db) as ab:
        assert (await ab.sessions.get("s1")).app == "app"


def test_without_registration_adk_does_not_know_the_scheme(
    tmp_path: Path, fresh_registry: None
) -> None:
    # ADK reads no entry points: with no services.py/yaml in the agents dir the
    # scheme is unknown, and ADK hands the URI to its SQLAlchemy fallback, which
    # fails (how depends on whether SQLAlchemy is installed). Hence register().
    uri = f"abathur://{tmp_path}/a.db"
    assert service_registry.get_service_registry().create_session_service(uri) is None
    with pytest.raises(Exception):  # noqa: B017 - the fallback's error varies
        create_session_service_from_options(base_dir=tmp_path, session_service_uri=uri)
    assert not (tmp_path / "a.db").exists()


# --- adk web, for real ------------------------------------------------------------------------

AGENT = """
from google.adk.agents import Agent

# Never run in the test: only the session and memory endpoints are called.
root_agent = Agent(name="hello", model="gemini-2.0-flash", instruction="Say hello.")
"""


def _call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


def _wait_for_port(log: Path, server: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        if server.poll() is not None:
            pytest.fail(f"adk web exited with {server.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"adk web did not start in time:\n{log.read_text()}")


@pytest.mark.sqlite_only("an abathur:// URI naming a SQLite file path")
@pytest.mark.slow
async def test_adk_web_runs_on_an_abathur_uri(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    (agents / "hello").mkdir(parents=True)
    (agents / "hello" / "__init__.py").write_text("from . import agent\n")
    (agents / "hello" / "agent.py").write_text(AGENT)
    (agents / "services.py").write_text(
        "from abathur.integrations.adk import register\n\nregister()\n"
    )
    db = tmp_path / "agent.db"
    uri = f"abathur://{db}"
    log = tmp_path / "adk-web.log"
    # HOME points into tmp: ADK keeps its user config and telemetry files under
    # ~/.adk, and its usage telemetry is off unless that config opts in.
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "ADK_DISABLE_LOCAL_STORAGE": "1",
    }
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "google.adk.cli",
                "web",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-reload",
                "--session_service_uri",
                uri,
                "--memory_service_uri",
                uri,
                str(agents),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
        )
    try:
        port = _wait_for_port(log, server, time.monotonic() + 90)
        made = _call(
            port,
            "POST",
            "/apps/hello/users/alice/sessions",
            {"sessionId": "web-1", "state": {"user:lang": "fr", "topic": "ski"}},
        )
        assert (made["id"], made["state"]) == ("web-1", {"user:lang": "fr", "topic": "ski"})
        # A state change without running the agent: ADK appends an event for it.
        patched = _call(
            port,
            "PATCH",
            "/apps/hello/users/alice/sessions/web-1",
            {"stateDelta": {"topic": "snowboard lessons in Chamonix"}},
        )
        assert patched["state"]["topic"] == "snowboard lessons in Chamonix"
        listed = _call(port, "GET", "/apps/hello/users/alice/sessions")
        assert [s["id"] for s in listed] == ["web-1"]
        _call(port, "POST", "/apps/hello/users/alice/sessions", {"sessionId": "web-2"})
        _call(port, "DELETE", "/apps/hello/users/alice/sessions/web-2")

        # It landed in the abathur file, readable while the server runs.
        async with Abathur.open(db) as ab:
            stored = await ab.sessions.get("web-1")
            assert (stored.app, stored.user) == ("hello", "alice")
            assert stored.state == {"user:lang": "fr", "topic": "snowboard lessons in Chamonix"}
            assert [e.metadata["format"] for e in stored.events] == [EVENT_FORMAT]
            assert stored.events[0].content["actions"]["state_delta"] == {
                "topic": "snowboard lessons in Chamonix"
            }
            assert [s.id for s in await ab.sessions.list(app="hello")] == ["web-1"]

        # ADK's memory endpoint: AbathurMemoryService on the same file remembers
        # a session's events (ones with text: the state-only event is skipped).
        said = {"role": "user", "parts": [{"text": "I booked snowboard lessons"}]}
        _call(
            port,
            "POST",
            "/apps/hello/users/alice/sessions",
            {"sessionId": "web-3", "events": [{"id": "said-1", "author": "user", "content": said}]},
        )
        for session_id in ("web-1", "web-3", "web-3"):
            _call(port, "PATCH", "/apps/hello/users/alice/memory", {"sessionId": session_id})
        async with Abathur.open(db) as ab:
            (remembered,) = await ab.memory.list(namespace_for("hello", "alice"))
            assert (remembered.key, remembered.value) == ("said-1", "I booked snowboard lessons")
            assert remembered.metadata["session_id"] == "web-3"
            assert remembered.version == 1  # added twice, written once
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail(f"adk web did not stop on SIGINT:\n{log.read_text()}")
    assert "Application shutdown complete" in log.read_text()


# --- the docs ---------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "adk.md"


def test_the_docs_example_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    (code, *_rest) = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), flags=re.S)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    claimed = re.findall(r"print\(.*?\)  # (.*)", code)
    # Log lines (structlog's default goes to stdout) may come in between.
    printed = [line for line in done.stdout.splitlines() if line in claimed]
    assert claimed and printed == claimed, done.stdout

"""A connection's grant keeps it inside its scope; the tokens file is read strictly (issue 15).

These need no MCP SDK: the rules live in abathur.integrations.mcp.scope and
.tokens. The same probes go through a real server in
tests/integration/test_mcp.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import structlog

from abathur.errors import InvalidInputError, InvalidNamespaceError, PermissionDeniedError
from abathur.integrations.mcp.scope import ALL_DOCUMENTS, Grant
from abathur.integrations.mcp.tokens import load_tokens, parse_tokens

ALICE = Grant(scope="user:alice")


@pytest.mark.parametrize(
    "relative",
    ["", ":user:alice2", "/etc", "..", "../alice2", "a:..:b", "notes/../..", ".", "a::b", " a"],
)
def test_escaping_or_malformed_namespaces_are_refused(relative: str) -> None:
    with pytest.raises(InvalidNamespaceError):
        ALICE.namespace(relative)


@pytest.mark.parametrize("relative", ["", "..", ":x"])
def test_a_prefix_argument_follows_the_same_rules(relative: str) -> None:
    with pytest.raises(InvalidNamespaceError):
        ALICE.prefix(relative)


def test_namespaces_are_the_scope_plus_the_relative_name() -> None:
    assert ALICE.namespace("notes:2026") == "user:alice:notes:2026"
    assert ALICE.prefix(None) == "user:alice"
    assert ALICE.relative("user:alice:notes") == "notes"
    assert ALICE.relative("user:alice") == ""


@pytest.mark.parametrize(
    "outside", ["user:alice2", "user:alice2:x", "user:al_ce", "user:ALICE", "user", "user:alic"]
)
def test_look_alike_namespaces_are_outside(outside: str) -> None:
    assert not ALICE.contains(outside)
    with pytest.raises(PermissionDeniedError):
        ALICE.relative(outside)


@pytest.mark.parametrize("scope", ["", "user:", ":user", "a::b", "x" * 257, 5])
def test_a_bad_scope_is_refused(scope: object) -> None:
    with pytest.raises(InvalidNamespaceError):
        Grant(scope=scope)  # type: ignore[arg-type]


def test_read_only_refuses_writes_and_documents_need_a_grant() -> None:
    with pytest.raises(PermissionDeniedError, match="read-only"):
        Grant(scope="team:ops", read_only=True).check_write("memory_put")
    Grant(scope="team:ops").check_write("memory_put")  # read-write: no error
    with pytest.raises(PermissionDeniedError, match="documents"):
        ALICE.document_prefix(None)
    runbooks = Grant(scope="team:ops", documents="runbooks")
    assert runbooks.document_prefix(None) == "runbooks"
    assert runbooks.document_prefix("db") == "runbooks/db"
    with pytest.raises(InvalidNamespaceError):
        runbooks.document_prefix("../secrets")
    assert Grant(scope="team:ops", documents=ALL_DOCUMENTS).document_prefix(None) is None


def _file(*entries: dict) -> str:
    return json.dumps({"tokens": list(entries)})


TOKEN = "t" * 32


def test_tokens_map_to_grants_and_expired_or_unknown_tokens_find_nothing() -> None:
    table = parse_tokens(
        _file(
            {"name": "a", "token": TOKEN, "scope": "user:alice", "access": "read-write"},
            {
                "name": "d",
                "token": "d" * 40,
                "scope": "team:ops",
                "access": "read-only",
                "documents": "*",
            },
            {
                "name": "old",
                "token": "o" * 32,
                "scope": "user:old",
                "access": "read-write",
                "expires_at": "2020-01-01T00:00:00Z",
            },
            {
                "name": "soon",
                "token": "s" * 32,
                "scope": "user:s",
                "access": "read-write",
                "expires_at": time.time() + 3600,
            },
        )
    )
    entry = table.lookup(TOKEN)
    assert entry is not None and entry.grant == Grant(scope="user:alice", name="a")
    dash = table.lookup("d" * 40)
    assert dash is not None and dash.grant.read_only and dash.grant.documents == "*"
    assert table.lookup("o" * 32) is None  # expired
    assert table.lookup("s" * 32) is not None
    assert table.lookup("s" * 32, now=time.time() + 7200) is None
    assert table.lookup("nope") is None and table.lookup(TOKEN.upper()) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ('{"tokens": []}', "one token or more"),
        (_file({"token": "short", "scope": "user:a", "access": "read-write"}), "at least 32"),
        (_file({"token": TOKEN, "scope": "user:a", "access": "admin"}), "access"),
        (_file({"token": TOKEN, "scope": "user:", "access": "read-only"}), "empty segment"),
        (_file({"token": TOKEN, "scope": "user:a", "access": "read-only", "x": 1}), "unknown"),
        (
            _file({"token": TOKEN, "scope": "a", "access": "read-only", "expires_at": "soon"}),
            "expires_at",
        ),
        (
            _file(
                {"token": TOKEN, "scope": "a", "access": "read-only"},
                {"token": TOKEN, "scope": "b", "access": "read-only"},
            ),
            "twice",
        ),
    ],
)
def test_a_wrong_tokens_file_is_refused_with_the_reason(text: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_tokens(text)


def test_an_unreadable_tokens_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_tokens(tmp_path / "missing.json")


def test_without_the_sdk_abathur_mcp_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from abathur import logs
    from abathur.cli import main

    db = tmp_path / "agent.db"
    assert CliRunner().invoke(main, ["init", "--db", str(db)]).exit_code == 0
    monkeypatch.setitem(sys.modules, "mcp", None)  # as if the extra were not installed
    try:
        result = CliRunner().invoke(main, ["mcp", "--db", str(db), "--scope", "user:a"])
    finally:  # the command configured logging to CliRunner's stream, gone now
        structlog.reset_defaults()
        logs.install_library_defaults()
    assert result.exit_code == 3, result.output
    assert "[mcp.not_installed]" in result.stderr and "abathur[mcp]" in result.stderr

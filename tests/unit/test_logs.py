"""Logging: JSON when not a terminal, key=value in one, secrets never written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from abathur import logs
from tests.backends import BackendHandle


def run_logging(json_flag: str) -> str:
    code = (
        "import structlog; from abathur import logs;"
        f"logs.configure(json={json_flag});"
        "structlog.get_logger('t').info('memory.put', namespace='user:a', api_key='sk-123',"
        " password='hunter2', db_token='t0k')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stderr


def test_json_lines_when_not_a_terminal() -> None:
    # stderr is a pipe here, so json=None must pick JSON.
    line = json.loads(run_logging("None").strip())
    assert line["event"] == "memory.put"
    assert line["namespace"] == "user:a"
    assert line["level"] == "info"


def test_secrets_are_redacted_in_both_renderers() -> None:
    for flag in ("True", "False"):
        out = run_logging(flag)
        assert "sk-123" not in out and "hunter2" not in out and "t0k" not in out
        assert "[redacted]" in out


def test_redaction_processor_keeps_other_keys() -> None:
    event = {"event": "x", "Authorization": "Bearer abc", "path": "/tmp/a.db"}
    assert logs.redact_secrets(None, "info", event) == {
        "event": "x",
        "Authorization": "[redacted]",
        "path": "/tmp/a.db",
    }


@pytest.mark.unmigrated
async def test_migration_is_logged_with_fields(backend: BackendHandle) -> None:
    with capture_logs() as captured:
        async with backend.open():
            pass
    migrated = [e for e in captured if e["event"] == "db.migrated"]
    assert migrated and migrated[0]["from_version"] == 0 and migrated[0]["to_version"] >= 2
    structlog.reset_defaults()
    logs.install_library_defaults()


def test_credentials_inside_any_value_or_a_traceback_are_redacted() -> None:
    # Issue 11, item 11: a key's name is not the only place a secret hides.
    code = (
        "import structlog; from abathur import logs;"
        "logs.configure(json={flag});"
        "log = structlog.get_logger('t');"
        "log.warning('embedder.retry', host='http://bob:hunter2@gpu:11434',"
        " error='HTTP 500: echoed Authorization: Bearer sk-live-abcdef123456 back');"
        "\ntry:\n    raise RuntimeError('failed with ?api_key=sk-live-abcdef123456')"
        "\nexcept RuntimeError:\n    log.exception('boom')"
    )
    for flag in ("True", "False"):
        done = subprocess.run(
            [sys.executable, "-c", code.format(flag=flag)],
            capture_output=True,
            text=True,
            check=True,
        )
        out = done.stderr
        assert "hunter2" not in out and "sk-live-abcdef123456" not in out, out
        assert "http://***@gpu:11434" in out and "Bearer ***" in out and "api_key=***" in out
        assert "RuntimeError" in out  # the traceback is still there

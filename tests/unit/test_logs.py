"""Logging: JSON when not a terminal, key=value in one, secrets never written."""

from __future__ import annotations

import json
import subprocess
import sys

import structlog
from structlog.testing import capture_logs

from abathur import Abathur, logs


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


async def test_migration_is_logged_with_fields(db_path) -> None:
    with capture_logs() as captured:
        async with Abathur.open(db_path):
            pass
    migrated = [e for e in captured if e["event"] == "db.migrated"]
    assert migrated and migrated[0]["from_version"] == 0 and migrated[0]["to_version"] >= 2
    structlog.reset_defaults()

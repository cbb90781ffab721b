"""Quiet as a library (issue 12): abathur logs through ``logging`` and prints nothing.

Each case runs in a fresh interpreter: logging and structlog are process-wide,
and "at default settings" means nothing configured them before abathur.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import BackendHandle

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    """The environment without abathur's settings or Python's warning switches."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ABATHUR_", "PYTHONWARNINGS", "PYTHONDEVMODE"))
    }


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def readme_tour() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


# Records what the tour itself prints (calls from __main__ only), so the test can
# demand that stdout holds exactly that and nothing else, whatever the tour prints.
RECORD_PRINTS = """
import builtins, io, sys, atexit
_printed = io.StringIO()
_print = builtins.print
def print(*args, **kwargs):
    if sys._getframe(1).f_globals.get("__name__") == "__main__" and "file" not in kwargs:
        _print(*args, **kwargs, file=_printed)
    _print(*args, **kwargs)
builtins.print = print
atexit.register(lambda: open(PRINTED, "w", encoding="utf-8").write(_printed.getvalue()))
"""


def test_the_readme_tour_prints_only_its_own_prints(tmp_path: Path) -> None:
    printed = tmp_path / "printed.txt"
    code = f"PRINTED = {str(printed)!r}\n" + RECORD_PRINTS + readme_tour()
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = printed.read_text("utf-8")
    assert expected.count("\n") >= 3, expected  # the tour did print its lines
    # Exactly the tour's own lines: no db.migrated, no embedder.loaded, no traceback.
    assert done.stdout == expected
    assert done.stderr == ""


@pytest.mark.unmigrated
def test_a_host_that_configures_logging_sees_abathurs_records(
    backend: BackendHandle, tmp_path: Path
) -> None:
    code = f"""
import asyncio, logging, sys
seen = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append((record.name, record.levelname, record.getMessage(), record.abathur))
logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s"
)
logging.getLogger().addHandler(Keep())
from abathur import Abathur
async def main():
    async with Abathur.open({str(backend.target)!r}, embed_worker=False):
        pass
asyncio.run(main())
import json
print(json.dumps([s for s in seen if s[2].startswith("db.migrated")], default=str))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # The basicConfig handler wrote it, formatted as the host asked.
    assert re.search(r"^abathur\.\S+ INFO db\.migrated .*from_version=0", done.stdout, re.M)
    migrated = json.loads(done.stdout.splitlines()[-1])
    assert len(migrated) == 1
    name, level, _message, fields = migrated[0]
    assert name.startswith("abathur.") and level == "INFO"
    assert fields["event"] == "db.migrated" and fields["from_version"] == 0


def test_warnings_and_tracebacks_stay_silent_without_a_host_handler(tmp_path: Path) -> None:
    # logging's "last resort" would print a WARNING on stderr; the NullHandler stops it.
    code = """
import structlog, abathur
log = structlog.get_logger("abathur.embeddings.queue")
log.warning("embedder.retry", host="http://bob:hunter2@gpu:11434")
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("embeddings.worker_error")
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_records_sent_to_logging_are_redacted(tmp_path: Path) -> None:
    code = """
import logging, sys, structlog
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
import abathur
log = structlog.get_logger("abathur.embeddings.ollama")
log.warning("embedder.retry", host="http://bob:hunter2@gpu:11434", api_key="sk-123")
try:
    raise RuntimeError("failed with ?api_key=sk-live-abcdef123456")
except RuntimeError:
    log.exception("embeddings.worker_error")
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "hunter2" not in err and "sk-123" not in err and "sk-live-abcdef123456" not in err
    assert 'embedder.retry host="http://***@gpu:11434" api_key="[redacted]"' in err
    assert "RuntimeError" in err and "Traceback" in err  # the traceback is still there


def test_other_loggers_and_a_hosts_structlog_config_are_left_alone(tmp_path: Path) -> None:
    # A library configures nothing for its host: structlog used unconfigured by
    # the host still prints its default lines; a host's configuration is kept.
    unconfigured = """
import structlog, abathur
structlog.get_logger("myapp").info("host.event", n=1)
"""
    done = run_python(unconfigured, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "host.event" in done.stdout and "n=1" in done.stdout
    configured = """
import structlog
structlog.configure(processors=[structlog.processors.JSONRenderer()])
before = structlog.get_config()
import abathur
assert structlog.get_config() == before, "abathur changed the host's structlog config"
structlog.get_logger("abathur.db").info("db.migrated")
"""
    done = run_python(configured, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"event": "db.migrated"}

"""The test backend registry (tests/backends.py): every registered backend runs
the service tests, and a recorded divergence is a strict xfail there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abathur.backends import BACKENDS as LIBRARY_BACKENDS
from tests.backends import BACKENDS, KNOWN, BackendHandle

ROOT = Path(__file__).resolve().parents[2]


def test_every_library_backend_is_registered_for_tests() -> None:
    # Known to the tests; which of them run is $ABATHUR_TEST_BACKENDS (issue 14).
    assert sorted(KNOWN) == sorted(LIBRARY_BACKENDS)
    assert {spec.name for spec in BACKENDS} <= set(KNOWN)


async def test_backend_fixture_opens_its_backend(backend: BackendHandle) -> None:
    async with backend.open(embed_worker=False) as ab:
        assert ab.db.name == backend.name
        await ab.memory.put("user:alice", "k", {"v": 1})
        assert (await ab.memory.get("user:alice", "k")).value == {"v": 1}


def _run(tmp_path: Path, divergences: str) -> subprocess.CompletedProcess[str]:
    """Run a two-test file under the real conftest, with ``divergences`` recorded."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import dataclasses
        import tests.backends as registry
        registry.BACKENDS[:] = [
            dataclasses.replace(spec, divergences={divergences})
            for spec in registry.BACKENDS
        ]
        from tests.conftest import backend, pytest_collection_modifyitems, pytest_configure
    """))
    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""
        def test_passes(backend):
            assert backend.name

        def test_fails(backend):
            assert backend.name == "no such backend"
    """))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfxX",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_a_recorded_divergence_is_a_strict_xfail(tmp_path: Path) -> None:
    done = _run(tmp_path, '{"test_fails": "known to differ"}')
    assert "1 passed, 1 xfailed" in done.stdout, done.stdout + done.stderr
    assert "sqlite: known to differ" in done.stdout


@pytest.mark.slow
def test_a_divergence_that_no_longer_diverges_fails_the_run(tmp_path: Path) -> None:
    done = _run(tmp_path, '{"test_passes": "was different once"}')
    assert done.returncode == 1, done.stdout
    # test_fails fails as ever; test_passes passed where a failure was expected.
    assert "XPASS(strict)" in done.stdout and "2 failed" in done.stdout, done.stdout


@pytest.mark.slow
def test_without_divergences_a_failure_is_a_failure(tmp_path: Path) -> None:
    done = _run(tmp_path, "{}")
    assert done.returncode == 1 and "1 failed, 1 passed" in done.stdout, done.stdout

"""``abathur sync``, ``abathur search`` and ``abathur reindex``, run as real subprocesses."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import apsw
import pytest

from tests.backends import BackendHandle
from tests.helpers import abathur, ok_json
from tests.ollama_server import OllamaServer

RESTORE = """# Restore

Stop every writer, verify the backup copy, then swap the file in.

## Afterwards

Run the smoke suite.
"""
TEA = "# Tea\n\nSteep green leaves in hot water for two minutes.\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with docs/ (two runbooks, a note and a binary file) and no database yet."""
    docs = tmp_path / "docs"
    (docs / "runbooks").mkdir(parents=True)
    (docs / "runbooks" / "restore.md").write_text(RESTORE)
    (docs / "kitchen.md").write_text(TEA)
    (docs / "blob.md").write_bytes(b"\x00\x01\x02")
    return tmp_path


def counts(path: Path) -> dict[str, int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'"
            )
        ]
        # Names come from sqlite_schema, not from a caller.
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
    finally:
        conn.close()


def test_sync_then_search_then_sync_again(project: Path) -> None:
    data = ok_json(abathur("sync", "--db", "agent.db", "docs", "--json", cwd=project))
    assert data["path"] == str(project / "agent.db")
    assert data["root"] == str(project / "docs")
    assert data["added"] == ["kitchen.md", "runbooks/restore.md"]
    assert data["failed"] == [{"path": "blob.md", "reason": "binary file (NUL byte at offset 0)"}]
    assert data["chunks_added"] == 3 == data["embeddings_queued"]
    assert data["embeddings"]["embedded"] == 3 and data["embeddings"]["remaining"] == 0

    found = ok_json(
        abathur("search", "--db", "agent.db", "restore the db from a backup", "--json", cwd=project)
    )
    assert (found["kind"], found["mode"], found["is_degraded"]) == ("documents", "hybrid", False)
    assert found["hits"][0]["path"] == "runbooks/restore.md"
    assert found["hits"][0]["heading"] == "Restore"
    assert set(found["hits"][0]) == {
        "root",
        "path",
        "heading",
        "text",
        "ordinal",
        "score",
        "relevance",
    }

    scoped = ok_json(
        abathur(
            "search",
            "--db",
            "agent.db",
            "green tea",
            "--prefix",
            "runbooks",
            "--mode",
            "keyword",
            "-k",
            "1",
            "--json",
            cwd=project,
        )
    )
    assert scoped["mode"] == "keyword" and scoped["hits"] == []

    again = ok_json(abathur("sync", "--db", "agent.db", "docs", "--json", cwd=project))
    assert (again["added"], again["changed"], again["removed"]) == ([], [], [])
    assert again["unchanged"] == 2 and again["embeddings"]["embedded"] == 0

    human = abathur("search", "--db", "agent.db", "smoke suite", cwd=project)
    assert human.returncode == 0, human.stderr
    assert "runbooks/restore.md § Restore > Afterwards" in human.stdout
    assert "mode hybrid" in human.stdout


def test_sync_human_output_lists_failures_and_never_draws_a_bar_into_a_pipe(
    project: Path,
) -> None:
    done = abathur("sync", "--db", "agent.db", "docs", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "synced " in done.stdout and "added 2" in done.stdout
    assert "failed (skipped)" in done.stdout and "blob.md" in done.stdout
    assert "embedded 3" in done.stdout
    assert "syncing" not in done.stderr and "embedding" not in done.stderr


def test_sync_draws_a_progress_bar_on_a_terminal(project: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "abathur", "sync", "--db", "agent.db", "docs", "--json"],
            cwd=project,
            env={**base, "ABATHUR_EMBEDDER": "none"},
            stdout=subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        chunks: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    data = os.read(leader, 4096)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0
    assert json.loads(stdout)["added"] == ["kitchen.md", "runbooks/restore.md"]
    assert b"syncing" in b"".join(chunks)


def test_sync_without_an_embedder_or_without_waiting(project: Path) -> None:
    data = ok_json(
        abathur(
            "sync",
            "--db",
            "agent.db",
            "docs",
            "--json",
            cwd=project,
            env={"ABATHUR_EMBEDDER": "none"},
        )
    )
    assert (
        data["embeddings_queued"] == 0 and "ABATHUR_EMBEDDER=none" in data["embeddings"]["skipped"]
    )
    found = ok_json(
        abathur(
            "search",
            "--db",
            "agent.db",
            "green tea",
            "--json",
            cwd=project,
            env={"ABATHUR_EMBEDDER": "none"},
        )
    )
    assert (found["mode"], found["requested_mode"], found["is_degraded"]) == (
        "keyword",
        "hybrid",
        True,
    )
    assert [h["path"] for h in found["hits"]] == ["kitchen.md"]

    other = ok_json(abathur("sync", "--db", "other.db", "docs", "--no-wait", "--json", cwd=project))
    assert "--no-wait" in other["embeddings"]["skipped"]
    assert counts(project / "other.db")["embedding_queue"] == 3


def test_sync_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    done = abathur("sync", "--db", "agent.db", "nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "does not exist" in done.stderr
    assert not (tmp_path / "agent.db").exists()


def test_sync_with_a_bad_glob_exits_3_with_its_code(project: Path) -> None:
    done = abathur("sync", "--db", "agent.db", "docs", "--pattern", "../*.md", cwd=project)
    assert done.returncode == 3
    assert "abathur: error [invalid_input]" in done.stderr and "'..'" in done.stderr
    assert "Traceback" not in done.stderr


def test_search_needs_an_existing_database(tmp_path: Path) -> None:
    done = abathur("search", "--db", "missing.db", "anything", cwd=tmp_path)
    assert done.returncode == 3
    assert "[db.error]" in done.stderr and "abathur init" in done.stderr
    assert not list(tmp_path.iterdir())


async def test_search_memories_needs_a_prefix_and_finds_them(
    backend: BackendHandle, tmp_path: Path
) -> None:
    async with backend.open(embed_worker=False) as ab:
        await ab.memory.put("user:alice:preferences", "language", {"value": "French"})
        await ab.memory.put("user:alice:preferences", "drink", "green tea")
        await ab.memory.put("user:bob", "language", "German")
        await ab.embeddings.drain()
    usage = abathur("search", "--db", str(backend.target), "language", "--memories", cwd=tmp_path)
    assert usage.returncode == 2 and "--prefix" in usage.stderr
    found = ok_json(
        abathur(
            "search",
            "--db",
            str(backend.target),
            "which language does she speak",
            "--memories",
            "--prefix",
            "user:alice",
            "-k",
            "1",
            "--json",
            cwd=tmp_path,
        )
    )
    assert found["kind"] == "memories" and found["mode"] == "hybrid"
    assert [(h["namespace"], h["key"]) for h in found["hits"]] == [
        ("user:alice:preferences", "language")
    ]
    human = abathur(
        "search",
        "--db",
        str(backend.target),
        "tea",
        "--memories",
        "--prefix",
        "user:alice",
        "--mode",
        "keyword",
        cwd=tmp_path,
    )
    assert human.returncode == 0, human.stderr
    assert "user:alice:preferences / drink" in human.stdout


def test_reindex_dry_run_then_reindex_then_compact(project: Path) -> None:
    ok_json(abathur("sync", "--db", "agent.db", "docs", "--json", cwd=project))
    before = counts(project / "agent.db")

    plan = ok_json(abathur("reindex", "--db", "agent.db", "--dry-run", "--json", cwd=project))
    assert (plan["action"], plan["is_dry_run"]) == ("reindex", True)
    assert plan["items"] == {"memory": 0, "chunk": 3}
    assert plan["embedder"] == plan["recorded_embedder"] == "bundled:all-MiniLM-L6-v2"
    assert {t["name"]: t["live_rows"] for t in plan["tables"]} == {
        "chunks_vec": 3,
        "memories_vec": 0,
    }
    assert counts(project / "agent.db") == before

    done = ok_json(abathur("reindex", "--db", "agent.db", "--json", cwd=project))
    assert (done["action"], done["is_dry_run"], done["queued"]) == ("reindex", False, 3)
    assert done["embeddings"]["embedded"] == 3 == done["embeddings"]["cache_hits"]

    (project / "docs" / "kitchen.md").write_text(TEA + "\nAdd honey.\n")
    ok_json(abathur("sync", "--db", "agent.db", "docs", "--json", cwd=project))
    compacted = ok_json(abathur("reindex", "--db", "agent.db", "--compact", "--json", cwd=project))
    tables = {r["table"]: r for r in compacted["compacted"]}
    assert tables["chunks_vec"]["live_rows"] == 3 and tables["chunks_vec"]["dead_rows"] == 1

    human = abathur("reindex", "--db", "agent.db", "--dry-run", cwd=project)
    assert human.returncode == 0, human.stderr
    assert "dry run: nothing changed" in human.stdout and "chunks_vec" in human.stdout


def test_reindex_with_no_embedder_is_refused(project: Path) -> None:
    ok_json(abathur("init", "--db", "agent.db", "--json", cwd=project))
    done = abathur("reindex", "--db", "agent.db", "--embedder", "none", "--json", cwd=project)
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"]["code"] == "invalid_input"
    plan = ok_json(
        abathur(
            "reindex", "--db", "agent.db", "--embedder", "none", "--dry-run", "--json", cwd=project
        )
    )
    assert plan["embedder"] is None


def test_demo_syncs_and_searches_the_project_docs(project: Path) -> None:
    (project / "README.md").write_text("# Project\n\nAn example project about tea.\n")
    (project / "runbooks").mkdir()
    (project / "runbooks" / "restore.md").write_text(RESTORE)
    data = ok_json(abathur("demo", "--db", "demo.db", "--json", cwd=project))
    docs = data["documents"]
    assert docs["root"] == str(project)
    assert docs["patterns"] == ["README.md", "docs/**/*.md", "runbooks/**/*.md"]
    assert docs["sync"]["added"] == [
        "README.md",
        "docs/kitchen.md",
        "docs/runbooks/restore.md",
        "runbooks/restore.md",
    ]
    assert docs["search"]["query"] == "how do I restore a backup"
    assert docs["search"]["mode"] == "hybrid"
    assert "restore" in docs["search"]["hits"][0]["path"].lower()
    human = abathur("demo", "--db", "demo.db", cwd=project)
    assert human.returncode == 0, human.stderr
    assert 'search "how do I restore a backup" (hybrid)' in human.stdout


def test_demo_says_so_when_there_are_no_docs(tmp_path: Path) -> None:
    data = ok_json(abathur("demo", "--db", "demo.db", "--json", cwd=tmp_path))
    assert "no README.md, docs/ or runbooks/" in data["documents"]["skipped"]
    human = abathur("demo", "--db", "demo.db", cwd=tmp_path)
    assert "documents: skipped" in human.stdout


def test_unsync_takes_a_directory_out_and_refuses_what_was_never_synced(project: Path) -> None:
    ok_json(abathur("sync", "--db", "agent.db", "docs", "--no-wait", "--json", cwd=project))
    before = counts(project / "agent.db")

    never = abathur("unsync", "--db", "agent.db", "elsewhere", "--json", cwd=project)
    assert never.returncode == 3
    assert json.loads(never.stdout)["error"]["code"] == "not_found"
    # Nothing but the call's own latency sample (the metrics table, see abathur stats).
    data = {t: n for t, n in counts(project / "agent.db").items() if t != "metrics"}
    assert data == {t: n for t, n in before.items() if t != "metrics"}
    missing_db = abathur("unsync", "--db", "none.db", "docs", cwd=project)
    assert missing_db.returncode == 3 and not (project / "none.db").exists()

    gone = ok_json(abathur("unsync", "--db", "agent.db", "docs", "--json", cwd=project))
    assert gone["root"] == str(project / "docs")
    assert gone["removed"] == ["kitchen.md", "runbooks/restore.md"]
    assert gone["chunks_removed"] == 3
    after = counts(project / "agent.db")
    assert after["documents"] == after["chunks"] == after["document_roots"] == 0
    assert after["embedding_queue"] == 0

    human = abathur("unsync", "--db", "agent.db", "docs", cwd=project)
    assert human.returncode == 3 and "never synced" in human.stderr


def run_bytes(*args: str | bytes, cwd: Path) -> tuple[int, str, str]:
    """The CLI with raw argv bytes; stdout and stderr decoded as strict UTF-8 (or this fails)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABATHUR_")}
    done = subprocess.run(
        [sys.executable, "-m", "abathur", *args],
        cwd=cwd,
        env={**base, "ABATHUR_EMBEDDER": "none"},
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")


def test_a_file_name_that_is_not_utf8_is_listed_as_failed_in_valid_utf8_json(
    project: Path,
) -> None:
    # Issue 11, item 5: `abathur sync` died with UnicodeEncodeError on every run.
    docs = os.fsencode(project / "docs")
    with open(docs + b"/bad\xff.md", "wb") as handle:
        handle.write(b"# Bad\n\nsteep green leaves\n")
    os.mkdir(docs + b"/dir\xfe")
    with open(docs + b"/dir\xfe/in.md", "wb") as handle:
        handle.write(b"# In\n\nsteep green leaves\n")
    failed = {
        "blob.md": "binary file (NUL byte at offset 0)",
        "bad\\xff.md": "file name is not valid UTF-8 (byte 0xff at offset 3): rename it to sync it",
        "dir\\xfe": "directory name is not valid UTF-8 (byte 0xfe at offset 3): rename it to "
        "sync the files under it",
    }
    for run in (1, 2):  # the rerun is the same
        code, out, err = run_bytes("sync", "--db", "agent.db", "docs", "--json", cwd=project)
        assert code == 0, err
        data = json.loads(out)
        assert data["added"] == ([] if run == 2 else ["kitchen.md", "runbooks/restore.md"])
        assert {f["path"]: f["reason"] for f in data["failed"]} == failed

    code, out, err = run_bytes("sync", "--db", "agent.db", "docs", cwd=project)
    assert code == 0, err
    assert "bad\\xff.md" in out and "dir\\xfe" in out

    code, out, err = run_bytes("search", "--db", "agent.db", "green leaves", "--json", cwd=project)
    assert code == 0, err
    assert [hit["path"] for hit in json.loads(out)["hits"]] == ["kitchen.md"]

    code, out, err = run_bytes("unsync", "--db", "agent.db", "docs", "--json", cwd=project)
    assert code == 0, err
    assert json.loads(out)["removed"] == ["kitchen.md", "runbooks/restore.md"]


def test_a_root_whose_name_is_not_utf8_is_a_clean_error(project: Path) -> None:
    root = os.fsencode(project) + b"/r\xff"
    os.mkdir(root)
    with open(root + b"/a.md", "wb") as handle:
        handle.write(b"# A\n\nalpha\n")
    for command in ("sync", "unsync"):
        code, out, err = run_bytes(command, "--db", "agent.db", b"r\xff", "--json", cwd=project)
        assert code == 3, err
        error = json.loads(out)["error"]
        assert error["code"] == "invalid_input" and "r\\xff' is not valid UTF-8" in error["message"]
        assert "Traceback" not in err and "r\\xff" in err


# -- secrets (issue 11, item 11) ------------------------------------------------

PASSWORD = "S3C#r/t?x"
API_KEY = "sk-live-7f3a9c2e1b"


def assert_no_secret(done: subprocess.CompletedProcess, *extra: str) -> None:
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    shown = done.stdout + done.stderr
    for secret in (PASSWORD, "S3C", "r/t", quote(PASSWORD, safe=""), basic, API_KEY, *extra):
        assert secret not in shown, f"{secret!r} leaked:\n{shown}"


def test_an_ollama_url_that_cannot_be_parsed_is_a_clean_error_that_hides_the_password(
    project: Path,
) -> None:
    # The password's '#' used to make urllib say "Port could not be cast to
    # integer value as 'S3C'", on stderr and in --json.
    ok_json(abathur("init", "--db", "agent.db", "--json", cwd=project))
    env = {
        "ABATHUR_EMBEDDER": "ollama",
        "ABATHUR_OLLAMA_HOST": f"http://alice:{PASSWORD}@127.0.0.1:11434",
    }
    for args in (
        ("search", "--db", "agent.db", "restore", "--json"),
        ("sync", "--db", "agent.db", "docs", "--json"),
        ("reindex", "--db", "agent.db", "--embedder", "ollama", "--json"),
    ):
        done = abathur("--log-level", "debug", *args, cwd=project, env=env)
        assert done.returncode == 3, done.stderr
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "invalid_input"
        assert "'http://***@127.0.0.1:11434' is not a valid URL" in error["message"]
        assert "percent-encode" in error["message"]
        assert_no_secret(done)
    done = abathur("health", "--db", "agent.db", "--json", cwd=project, env=env)
    assert done.returncode in (0, 1) and json.loads(done.stdout)["items"]
    assert_no_secret(done)


@pytest.mark.parametrize("credential", ["basic", "bearer"])
def test_an_ollama_error_body_echoing_the_credential_never_reaches_output_logs_or_the_file(
    project: Path, credential: str
) -> None:
    with OllamaServer(dims=8) as server:
        env = {"ABATHUR_EMBEDDER": "ollama", "ABATHUR_OLLAMA_RETRIES": "0"}
        if credential == "basic":
            env["ABATHUR_OLLAMA_HOST"] = (
                f"http://alice:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
            )
        else:
            env["ABATHUR_OLLAMA_HOST"] = server.url
            env["OLLAMA_API_KEY"] = API_KEY  # the client sends it as a bearer token
        first = ok_json(abathur("sync", "--db", "agent.db", "docs", "--json", cwd=project, env=env))
        assert first["embeddings"]["embedded"] == 3
        sent = server.requests[-1].headers["authorization"]
        assert sent.startswith("Basic " if credential == "basic" else f"Bearer {API_KEY}")

        server.echo_headers_next(1000)  # a proxy now answers 500, echoing Authorization
        done = abathur(
            "--log-level",
            "debug",
            "search",
            "--db",
            "agent.db",
            "restore a backup",
            "--json",
            cwd=project,
            env=env,
        )
        found = ok_json(done)
        assert_no_secret(done, sent)
        assert found["is_degraded"] and found["mode"] == "keyword"
        assert "HTTP 500: upstream error" in found["degraded_reason"]
        assert f"{sent.split()[0]} ***" in found["degraded_reason"]

        (project / "docs" / "new.md").write_text("# New\n\nFresh words to embed.\n")
        done = abathur(
            "--log-level",
            "debug",
            "sync",
            "--db",
            "agent.db",
            "docs",
            "--json",
            cwd=project,
            env=env,
        )
        synced = ok_json(done)
        assert_no_secret(done, sent)
        assert synced["added"] == ["new.md"] and "***" in synced["embeddings"]["error"]["message"]
        assert "embedder.ollama" in done.stderr  # the failure was logged, without the credential

        done = abathur("sync", "--db", "agent.db", "docs", cwd=project, env=env)  # human output
        assert done.returncode == 0 and "not embedded" in done.stdout
        assert_no_secret(done, sent)

        done = abathur("health", "--db", "agent.db", "--json", cwd=project, env=env)
        assert json.loads(done.stdout)["items"]
        assert_no_secret(done, sent)

    stored = b"".join(p.read_bytes() for p in project.glob("agent.db*") if p.is_file())
    for secret in (PASSWORD, quote(PASSWORD, safe=""), sent.split()[1], API_KEY):
        assert secret.encode() not in stored, f"{secret!r} was written to the database"


async def test_search_fresh_sees_what_was_just_written_and_min_score_drops_the_rest(
    backend: BackendHandle, tmp_path: Path
) -> None:
    # Written with no worker and never drained: only --fresh can make them vector hits.
    async with backend.open(embed_worker=False) as ab:
        await ab.memory.put("user:alice:preferences", "language", "She speaks French at home")
        await ab.memory.put("user:alice:preferences", "pet", "A grey cat called Miso")
        await ab.memory.put("user:alice:garden", "plants", "Tomatoes and basil on the balcony")
    common = ["search", "--db", str(backend.target), "which language does she speak", "--memories",
              "--prefix", "user:alice", "--mode", "vector", "--json"]  # fmt: skip
    stale = ok_json(abathur(*common, cwd=tmp_path))
    assert stale["pending"] == 3 and stale["is_degraded"]  # nothing embedded: keyword instead
    fresh = ok_json(abathur(*common, "--fresh", cwd=tmp_path))
    assert fresh["mode"] == "vector" and not fresh["is_degraded"] and fresh["pending"] == 0
    assert len(fresh["hits"]) == 3
    assert fresh["hits"][0]["key"] == "language"
    floor = fresh["hits"][0]["relevance"] - 1e-6  # only the best hit reaches it
    assert fresh["hits"][1]["relevance"] < floor
    floored = ok_json(abathur(*common, "--min-score", str(floor), cwd=tmp_path))
    assert [h["key"] for h in floored["hits"]] == ["language"]
    human = abathur(*common[:-1], "--min-score", str(floor), cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "relevance" in human.stdout and "user:alice:preferences / language" in human.stdout
    bad = abathur(*common, "--min-score", "high", cwd=tmp_path)
    assert bad.returncode == 2 and "--min-score" in bad.stderr

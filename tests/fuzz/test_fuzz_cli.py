"""The fuzzer over the CLI's arguments (issue 11), in-process with click's CliRunner.

Strings with lone surrogates stand for argv bytes that are not UTF-8 (click
decodes argv with surrogateescape); the real-subprocess versions of those
cases are in tests/unit/test_hostile_input.py. Properties, on one real file:

1. no exception escapes a command: every run ends with an exit code from
   the documented set (0 ok, 1 findings, 2 usage, 3 error) and no traceback;
2. a command that fails (exit 2 or 3) leaves the file's main tables as they were;
3. the file passes ``abathur check`` after the batch.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from abathur import Abathur
from abathur.cli import main
from abathur.cli.options import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from abathur.ops.integrity import run_checks
from tests.fuzz.strategies import EDGE_INTS, HOSTILE_TEXT, fingerprint, fuzz_share, text_or

EXIT_CODES = {EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_ERROR}


@dataclass
class CliWorld:
    root: Path
    db: Path
    docs: Path
    outcomes: dict[str, int] = field(default_factory=dict)


async def _seed(db: Path, docs: Path) -> None:
    async with Abathur.open(db, embedder="none", embed_worker=False) as ab:
        await ab.memory.put("user:alice", "tea", "green tea", metadata={"source": "chat"})
        await ab.memory.put("user:alice:prefs", "lang", "French")
        await ab.sessions.create(app="helpdesk", user="alice", session_id="s1")
        await ab.tasks.create(session_id="s1", prompt="summarise", task_id="t1")
        await ab.documents.sync(docs)
        await ab.transfer.export_to(db.parent / "export.jsonl")
    lines = (db.parent / "export.jsonl").read_bytes().splitlines(keepends=True)
    (db.parent / "half.jsonl").write_bytes(b"".join(lines[: len(lines) // 2]))


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory: pytest.TempPathFactory) -> CliWorld:
    root = tmp_path_factory.mktemp("cli-fuzz")
    docs = root / "docs"
    (docs / "ops").mkdir(parents=True)
    (docs / "ops" / "restore.md").write_text("# Restore\n\nHow to restore a backup.\n")
    db = root / "agent.db"
    asyncio.run(_seed(db, docs))
    return CliWorld(root, db, docs)


@pytest.fixture(scope="module")
def runner() -> Iterator[CliRunner]:
    # The bundled model would load on every command: keyword search is enough here.
    yield CliRunner(env={"ABATHUR_EMBEDDER": "none", "ABATHUR_DB": None})


def _read_fingerprint(db: Path) -> dict[str, tuple[int, str]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return fingerprint(conn)
    finally:
        conn.close()


def as_argv(text: str) -> str:
    """``text`` as a process would receive it: what Python makes of the bytes in argv.

    A real argv never holds NUL, and its only surrogates are surrogateescape's
    (U+DC80..U+DCFF, one per byte that is not UTF-8): other lone surrogates
    become the bytes of their (invalid) UTF-8 encoding, as if a C caller sent them.
    """
    raw = bytearray()
    for ch in text.replace("\x00", ""):
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            raw.append(ord(ch) - 0xDC00)
        else:
            raw += ch.encode("utf-8", "surrogatepass")
    return os.fsdecode(bytes(raw))


#: Raw bytes as argv: mostly not UTF-8 at all.
ARGV_BYTES = st.binary(min_size=1, max_size=16).map(os.fsdecode)


def cli_text_or(valid: list[str]) -> Any:
    return st.one_of(text_or(valid), ARGV_BYTES)


INT_TEXT = st.one_of(
    st.integers(-2, 60).map(str), st.sampled_from(EDGE_INTS).map(str), HOSTILE_TEXT
)
FLAG = st.sampled_from([[], ["--json"]])


def _under(root: Path, valid: list[str]) -> Any:
    """A path: one that exists, or hostile text *inside* the fuzz directory (never "/").

    No ".." either: export would write wherever it leads.
    """
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.one_of(HOSTILE_TEXT, ARGV_BYTES)
        .filter(lambda t: ".." not in t)
        .map(lambda t: f"{root}/{t}"),
    )


def _options(*pairs: tuple[str, Any]) -> Any:
    """Any subset of the options, each with its drawn value, flattened into argv."""
    chosen = st.lists(st.sampled_from(range(len(pairs))), unique=True, max_size=len(pairs))

    def build(indexes: list[int]) -> Any:
        parts = [pairs[i][1].map(lambda v, name=pairs[i][0]: [name, v]) for i in indexes]
        return st.tuples(*parts).map(lambda ps: [x for p in ps for x in p])

    return chosen.flatmap(build)


def _commands(world: CliWorld) -> Any:
    docs = [str(world.docs), str(world.docs / "ops")]
    query = cli_text_or(["restore", "tea", "green tea"])
    return st.one_of(
        st.tuples(
            st.just(["search"]),
            query.map(lambda q: [q]),
            _options(
                ("--prefix", cli_text_or(["user:alice", "ops", "user"])),
                ("--mode", cli_text_or(["keyword", "hybrid", "vector"])),
                ("-k", INT_TEXT),
            ),
            st.sampled_from([[], ["--memories"], ["--docs"]]),
        ),
        st.tuples(
            st.just(["sync"]),
            _under(world.root, docs).map(lambda d: [d]),
            _options(
                ("--pattern", cli_text_or(["**/*.md", "ops/*.md", "/abs"])),
                ("--exclude", cli_text_or(["ops/**"])),
                ("--max-file-bytes", INT_TEXT),
            ),
            st.just(["--no-wait"]),
        ),
        st.tuples(st.just(["unsync"]), _under(world.root, docs).map(lambda d: [d])),
        st.tuples(
            st.just(["cost", "report"]),
            _options(
                ("--since", cli_text_or(["7d", "30m"])), ("--by", cli_text_or(["app", "user"]))
            ),
        ),
        st.tuples(
            st.just(["stats"]),
            _options(
                ("--since", cli_text_or(["7d"])),
                ("--days", INT_TEXT),
                ("--depth", INT_TEXT),
                ("--top", INT_TEXT),
            ),
        ),
        st.tuples(
            st.just(["archive", "list"]),
            _options(
                ("--before", INT_TEXT),
                ("--limit", INT_TEXT),
                ("--ref", cli_text_or(["s1", "user:alice/tea"])),
                ("--kind", cli_text_or(["session", "memory", "versions"])),
            ),
        ),
        st.tuples(st.just(["archive", "show"]), INT_TEXT.map(lambda i: [i])),
        st.tuples(
            st.just(["backup", "verify"]),
            _under(world.root, [str(world.root / "missing.db.zst")]).map(lambda f: [f]),
        ),
        st.tuples(
            st.sampled_from([["info"], ["check", "--quick"], ["health"], ["metrics"]]),
        ),
        st.tuples(
            st.sampled_from([["memory"], ["memory", "namespaces"]]),
            st.one_of(st.just([]), cli_text_or(["user", "user:alice"]).map(lambda p: [p])),
            _options(("--limit", INT_TEXT)),
        ),
        st.tuples(
            st.just(["memory", "list"]),
            cli_text_or(["user:alice", "user", "user:al"]).map(lambda p: [p]),
            _options(
                ("--type", cli_text_or(["semantic", "episodic", "procedural"])),
                ("--limit", INT_TEXT),
                ("--offset", INT_TEXT),
            ),
            st.sampled_from([[], ["--include-deleted"]]),
        ),
        st.tuples(
            st.sampled_from([["memory", "get"], ["memory", "history"]]),
            cli_text_or(["user:alice", "user:alice:prefs"]).map(lambda n: [n]),
            cli_text_or(["tea", "lang", "missing"]).map(lambda k: [k]),
        ),
        st.tuples(
            st.just(["memory", "get"]),
            st.just(["user:alice:prefs", "lang", "--version"]),
            INT_TEXT.map(lambda v: [v]),
        ),
        st.tuples(
            st.sampled_from([["session"], ["session", "list"]]),
            _options(
                ("--app", cli_text_or(["helpdesk", "other"])),
                ("--user", cli_text_or(["alice", "bob"])),
                ("--status", cli_text_or(["active", "created", "terminated"])),
                ("--limit", INT_TEXT),
            ),
        ),
        st.tuples(
            st.just(["session", "show"]),
            cli_text_or(["s1", "s2"]).map(lambda i: [i]),
            _options(("--last", INT_TEXT)),
        ),
        st.tuples(
            st.sampled_from([["task"], ["task", "list"]]),
            _options(
                ("--session", cli_text_or(["s1", "s2"])),
                ("--status", cli_text_or(["pending", "running", "failed"])),
                ("--limit", INT_TEXT),
            ),
        ),
        st.tuples(
            st.just(["export"]),
            _under(world.root, [str(world.root / "out.jsonl")]).map(lambda f: [f]),
            _options(
                ("--prefix", cli_text_or(["user:alice", "user"])),
                ("--app", cli_text_or(["helpdesk"])),
                ("--user", cli_text_or(["alice"])),
            ),
        ),
        st.tuples(
            st.just(["import"]),
            _under(world.root, [str(world.root / n) for n in ("export.jsonl", "half.jsonl")]).map(
                lambda f: [f]
            ),
            st.sampled_from([["--dry-run"], ["--dry-run"], []]),
        ),
    ).map(lambda parts: [x for p in parts for x in p])


def _db_option(world: CliWorld) -> Any:
    """Mostly the fuzz file; else a hostile path inside the fuzz directory."""
    good = st.just(["--db", str(world.db)])
    inside = HOSTILE_TEXT.filter(lambda t: ".." not in t)
    hostile = inside.map(lambda t: ["--db", f"{world.root}/{t}"])
    return st.one_of(good, good, good, good, hostile)


@fuzz_share(3)  # a command opens the file (and more), an API call does not
@given(data=st.data())
def test_cli_arguments_end_in_a_documented_exit_code(
    cli_world: CliWorld, runner: CliRunner, data: Any
) -> None:
    argv = data.draw(_commands(cli_world), label="command")
    argv += data.draw(_db_option(cli_world), label="db") + data.draw(FLAG, label="json")
    argv = [as_argv(a) for a in argv]
    before = _read_fingerprint(cli_world.db)
    result = runner.invoke(main, argv, catch_exceptions=True)
    shown = repr(argv)[:400]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"abathur {shown} raised {type(result.exception).__name__}: {result.exception}"
        ) from result.exception
    assert result.exit_code in EXIT_CODES, (shown, result.exit_code, result.output[-500:])
    assert "Traceback" not in result.output, (shown, result.output[-2000:])
    if result.exit_code in (EXIT_USAGE, EXIT_ERROR) and str(cli_world.db) in argv:
        assert _read_fingerprint(cli_world.db) == before, f"abathur {shown} failed but wrote"
    group = argv[0] in ("cost", "archive", "backup", "memory", "session", "task")
    key = f"{' '.join(argv[: 2 if group else 1])}: {result.exit_code}"
    cli_world.outcomes[key] = cli_world.outcomes.get(key, 0) + 1


def test_the_file_passes_check_after_the_cli_batch(cli_world: CliWorld) -> None:
    assert cli_world.outcomes, "the CLI fuzz test did not run first"
    for outcome, count in sorted(cli_world.outcomes.items()):
        print(f"{count:6}  {outcome}")
    report = run_checks(cli_world.db)
    bad = [(r.name, r.findings) for r in report.results if r.status not in ("ok", "skipped")]
    assert report.is_ok, bad
    assert any(k.endswith(": 0") for k in cli_world.outcomes)
    assert any(k.endswith((": 2", ": 3")) for k in cli_world.outcomes)

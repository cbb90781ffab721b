"""Hostile input (issue 11, items 6 and 7): every bad argument is a typed error.

Lone surrogates (what Python makes of bytes that are not UTF-8), JSON nested a
thousand levels deep or containing itself, integers beyond SQLite's 64 bits,
infinite or absurd durations: each public call answers with an
:class:`~abathur.errors.InvalidInputError` (or a subclass), never a
``UnicodeEncodeError``, ``RecursionError`` or ``OverflowError``, and leaves the
file exactly as it was. The CLI gets the same through real subprocesses with
undecodable bytes in argv. And one such call no longer loses the metrics of
the calls around it (item 7).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from abathur import Abathur, Event, InvalidInputError
from abathur.values import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, encode
from tests.backends import BACKENDS, handle
from tests.helpers import assert_unchanged

LONE = "\ud800"  # a lone high surrogate: no UTF-8 encoding exists
ESCAPED = "\udcff"  # what os.fsdecode / click make of the byte 0xff (surrogateescape)
HUGE = 2**63  # one past SQLite's largest integer
TINY = -(2**63) - 1  # one below its smallest


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@dataclass
class World:
    """What a hostile call may name: a live session, a task, a synced directory."""

    ab: Abathur
    session: str
    task: str
    docs: Path


# One database for every hostile call of this module: each call must leave it
# exactly as it was (assert_unchanged), so sharing it costs nothing in rigour
# and saves a file, a sync and a seed per case.
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=[spec.name for spec in BACKENDS]
)
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One database per registered backend (tests/backends.py), shared by the module."""
    root = tmp_path_factory.mktemp("hostile")
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Restore\n\nhow to restore a backup\n")
    async with handle(request.param, root, request).open(embed_worker=False) as ab:
        await ab.documents.sync(docs)
        await ab.memory.put("user:alice", "lang", "fr", metadata={"source": "chat"})
        s = await ab.sessions.create(app="a", user="alice")
        t = await ab.tasks.create(session_id=s.id, prompt="summarise")
        yield World(ab, s.id, t.id, docs)


Call = Callable[[World, Any], Awaitable[Any]]

# Every public call and every text argument it takes; ``x`` is the hostile string.
TEXT_ARGUMENTS: dict[str, Call] = {
    "memory.put namespace": lambda w, x: w.ab.memory.put(f"user:{x}", "k", 1),
    "memory.put key": lambda w, x: w.ab.memory.put("user:alice", f"k{x}", 1),
    "memory.put value": lambda w, x: w.ab.memory.put("user:alice", "k", f"v{x}"),
    "memory.put value deep": lambda w, x: w.ab.memory.put("user:alice", "k", {"a": [x]}),
    "memory.put value key": lambda w, x: w.ab.memory.put("user:alice", "k", {x: 1}),
    "memory.put type": lambda w, x: w.ab.memory.put("user:alice", "k", 1, type=x),
    "memory.put metadata key": lambda w, x: w.ab.memory.put("user:alice", "k", 1, metadata={x: 1}),
    "memory.put metadata value": lambda w, x: w.ab.memory.put(
        "user:alice", "k", 1, metadata={"m": x}
    ),
    "memory.get namespace": lambda w, x: w.ab.memory.get(f"user:{x}", "lang"),
    "memory.get key": lambda w, x: w.ab.memory.get("user:alice", x),
    "memory.history namespace": lambda w, x: w.ab.memory.history(x, "lang"),
    "memory.history key": lambda w, x: w.ab.memory.history("user:alice", x),
    "memory.list prefix": lambda w, x: w.ab.memory.list(f"user:{x}"),
    "memory.list filter key": lambda w, x: w.ab.memory.list("user", filter={x: 1}),
    "memory.list filter value": lambda w, x: w.ab.memory.list("user", filter={"source": x}),
    "memory.delete namespace": lambda w, x: w.ab.memory.delete(f"user:{x}", "lang"),
    "memory.delete key": lambda w, x: w.ab.memory.delete("user:alice", f"lang{x}"),
    "memory.restore namespace": lambda w, x: w.ab.memory.restore(f"user:{x}", "lang"),
    "memory.restore key": lambda w, x: w.ab.memory.restore("user:alice", x),
    "memory.namespaces prefix": lambda w, x: w.ab.memory.namespaces(x),
    "memory.consolidate prefix": lambda w, x: w.ab.memory.consolidate(f"user:{x}"),
    "memory.search query": lambda w, x: w.ab.memory.search(f"lang {x}", prefix="user"),
    "memory.search keyword query": lambda w, x: w.ab.memory.search(
        f"lang {x}", prefix="user", mode="keyword"
    ),
    "memory.search prefix": lambda w, x: w.ab.memory.search("lang", prefix=f"user:{x}"),
    "memory.search filter key": lambda w, x: w.ab.memory.search(
        "lang", prefix="user", filter={x: "chat"}
    ),
    "memory.search filter value": lambda w, x: w.ab.memory.search(
        "lang", prefix="user", filter={"source": x}
    ),
    "memory.search mode": lambda w, x: w.ab.memory.search("lang", prefix="user", mode=x),
    "memory.context prefix": lambda w, x: w.ab.memory.context(f"user:{x}", "lang"),
    "memory.context query": lambda w, x: w.ab.memory.context("user", f"lang {x}"),
    "sessions.create app": lambda w, x: w.ab.sessions.create(app=f"a{x}", user="u"),
    "sessions.create user": lambda w, x: w.ab.sessions.create(app="a", user=x),
    "sessions.create session_id": lambda w, x: w.ab.sessions.create(
        app="a", user="u", session_id=f"s{x}"
    ),
    "sessions.create state key": lambda w, x: w.ab.sessions.create(
        app="a", user="u", state={f"k{x}": 1}
    ),
    "sessions.create state value": lambda w, x: w.ab.sessions.create(
        app="a", user="u", state={"k": x}
    ),
    "sessions.create user: state": lambda w, x: w.ab.sessions.create(
        app="a", user="u", state={"user:lang": [x]}
    ),
    "sessions.create app: state key": lambda w, x: w.ab.sessions.create(
        app="a", user="u", state={f"app:{x}": 1}
    ),
    "sessions.get session_id": lambda w, x: w.ab.sessions.get(x),
    "sessions.list app": lambda w, x: w.ab.sessions.list(app=x),
    "sessions.list user": lambda w, x: w.ab.sessions.list(app="a", user=x),
    "sessions.list status": lambda w, x: w.ab.sessions.list(app="a", status=x),
    "sessions.append_event session_id": lambda w, x: w.ab.sessions.append_event(
        f"{w.session}{x}", Event(author="user")
    ),
    "sessions.append_event content": lambda w, x: w.ab.sessions.append_event(
        w.session, Event(author="user", content={"text": x})
    ),
    "sessions.append_event metadata": lambda w, x: w.ab.sessions.append_event(
        w.session, Event(author="user", metadata={"m": x})
    ),
    "sessions.append_event delta value": lambda w, x: w.ab.sessions.append_event(
        w.session, Event(author="user", state_delta={"topic": x})
    ),
    "sessions.append_event delta key": lambda w, x: w.ab.sessions.append_event(
        w.session, Event(author="user", state_delta={f"user:{x}": 1})
    ),
    "sessions.append_event author": lambda w, x: w.ab.sessions.append_event(
        w.session, Event(author=f"user{x}")
    ),
    "sessions.get_user_state app": lambda w, x: w.ab.sessions.get_user_state(app=x, user="u"),
    "sessions.get_user_state user": lambda w, x: w.ab.sessions.get_user_state(app="a", user=x),
    "sessions.get_app_state app": lambda w, x: w.ab.sessions.get_app_state(app=x),
    "sessions.set_status session_id": lambda w, x: w.ab.sessions.set_status(x, "active"),
    "sessions.set_status status": lambda w, x: w.ab.sessions.set_status(w.session, x),
    "sessions.terminate session_id": lambda w, x: w.ab.sessions.terminate(f"{w.session}{x}"),
    "sessions.delete session_id": lambda w, x: w.ab.sessions.delete(f"{w.session}{x}"),
    "tasks.create session_id": lambda w, x: w.ab.tasks.create(session_id=x, prompt="p"),
    "tasks.create prompt": lambda w, x: w.ab.tasks.create(session_id=w.session, prompt=f"p{x}"),
    "tasks.create metadata": lambda w, x: w.ab.tasks.create(
        session_id=w.session, prompt="p", metadata={"m": x}
    ),
    "tasks.create task_id": lambda w, x: w.ab.tasks.create(
        session_id=w.session, prompt="p", task_id=f"t{x}"
    ),
    "tasks.get task_id": lambda w, x: w.ab.tasks.get(x),
    "tasks.update task_id": lambda w, x: w.ab.tasks.update(f"{w.task}{x}", status="running"),
    "tasks.update status": lambda w, x: w.ab.tasks.update(w.task, status=x),
    "tasks.update result": lambda w, x: w.ab.tasks.update(w.task, status="running", result=[x]),
    "tasks.update error": lambda w, x: w.ab.tasks.update(w.task, status="running", error=x),
    "archival.list ref": lambda w, x: w.ab.archival.list(kind="session", ref=x),
    "memory.purge prefix": lambda w, x: w.ab.memory.purge(f"user:{x}"),
    "sessions.purge app": lambda w, x: w.ab.sessions.purge(app=x, user="alice"),
    "sessions.purge user": lambda w, x: w.ab.sessions.purge(app="a", user=f"alice{x}"),
    "transfer.export_to prefix": lambda w, x: w.ab.transfer.export_to(io.BytesIO(), prefix=x),
    "transfer.export_to app": lambda w, x: w.ab.transfer.export_to(io.BytesIO(), app=x),
    "tasks.list session_id": lambda w, x: w.ab.tasks.list(session_id=x),
    "tasks.list status": lambda w, x: w.ab.tasks.list(session_id=w.session, status=x),
    "documents.search query": lambda w, x: w.ab.documents.search(f"restore {x}"),
    "documents.search keyword query": lambda w, x: w.ab.documents.search(
        f"restore {x}", mode="keyword"
    ),
    "documents.search path_prefix": lambda w, x: w.ab.documents.search(
        "restore", path_prefix=f"ops{x}"
    ),
    "documents.search root": lambda w, x: w.ab.documents.search("restore", root=f"{w.docs}{x}"),
    "documents.sync root": lambda w, x: w.ab.documents.sync(f"{w.docs}{x}"),
    "documents.sync pattern": lambda w, x: w.ab.documents.sync(w.docs, [f"**/*{x}.md"]),
    "documents.sync exclude": lambda w, x: w.ab.documents.sync(w.docs, exclude=[f"a{x}"]),
    "documents.forget root": lambda w, x: w.ab.documents.forget(f"{w.docs}{x}"),
    "documents.watch root": lambda w, x: w.ab.documents.watch(f"{w.docs}{x}"),
}


async def assert_refused(w: World, call: Call, argument: Any) -> InvalidInputError:
    """The call raises an InvalidInputError whose message is printable, and writes nothing."""
    async with assert_unchanged(w.ab):
        with pytest.raises(InvalidInputError) as caught:
            await call(w, argument)
    message = caught.value.message
    message.encode("utf-8")  # a message must print anywhere, so it holds no surrogate itself
    assert len(message) < 2000, message[:200]
    return caught.value


@shared_loop
@pytest.mark.parametrize("hostile", [LONE, ESCAPED], ids=["lone", "escaped"])
@pytest.mark.parametrize("case", sorted(TEXT_ARGUMENTS))
async def test_text_that_is_not_unicode_is_a_typed_error(
    world: World, case: str, hostile: str
) -> None:
    await assert_refused(world, TEXT_ARGUMENTS[case], hostile)


@shared_loop
async def test_the_message_says_what_is_wrong_with_the_text(world: World) -> None:
    error = await assert_refused(world, TEXT_ARGUMENTS["memory.put key"], ESCAPED)
    assert "memory key" in error.message and "surrogate" in error.message
    assert "\\udcff" in error.message  # shown escaped, never raw
    error = await assert_refused(world, TEXT_ARGUMENTS["memory.search prefix"], LONE)
    assert error.code == "memory.invalid_namespace" and "\\ud800" in error.message


# Values nested far deeper than any real data, or containing themselves.
JSON_ARGUMENTS: dict[str, Call] = {
    "memory.put value": lambda w, v: w.ab.memory.put("user:alice", "k", v),
    "memory.put metadata": lambda w, v: w.ab.memory.put("user:alice", "k", 1, metadata={"m": v}),
    "sessions.create state": lambda w, v: w.ab.sessions.create(app="a", user="u", state={"k": v}),
    "sessions.create user: state": lambda w, v: w.ab.sessions.create(
        app="a", user="u", state={"user:k": v}
    ),
    "sessions.append_event content": lambda w, v: w.ab.sessions.append_event(
        w.session, Event(author="user", content=v)
    ),
    "tasks.create metadata": lambda w, v: w.ab.tasks.create(
        session_id=w.session, prompt="p", metadata={"m": v}
    ),
    "tasks.update result": lambda w, v: w.ab.tasks.update(w.task, status="running", result=v),
}


@shared_loop
@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda: nested(1200), id="list-1200"),
        pytest.param(lambda: nested_dict(1200), id="dict-1200"),
        pytest.param(lambda: nested(MAX_JSON_DEPTH + 1), id="list-over-limit"),
        pytest.param(cyclic, id="cyclic"),
    ],
)
@pytest.mark.parametrize("case", sorted(JSON_ARGUMENTS))
async def test_json_nested_too_deep_is_a_typed_error(
    world: World, case: str, shape: Callable[[], Any]
) -> None:
    await assert_refused(world, JSON_ARGUMENTS[case], shape())


@shared_loop
async def test_json_at_the_depth_limit_is_stored_and_read_back(world: World) -> None:
    value = nested(MAX_JSON_DEPTH - 1)  # the limit counts the levels of the stored document
    await world.ab.memory.put("user:alice", "deep", {"v": value})
    found = await world.ab.memory.get("user:alice", "deep")
    assert found is not None and found.value == {"v": value}
    with pytest.raises(InvalidInputError, match="nested"):
        encode({"v": nested(MAX_JSON_DEPTH)}, what="value", limit=10**9)


# Integers SQLite cannot hold, and durations no clock can reach.
NUMBER_ARGUMENTS: dict[str, Call] = {
    "memory.put value": lambda w, n: w.ab.memory.put("user:alice", "k", {"n": n}),
    "memory.put metadata": lambda w, n: w.ab.memory.put("user:alice", "k", 1, metadata={"n": n}),
    "memory.put ttl": lambda w, n: w.ab.memory.put("user:alice", "k", 1, ttl=n),
    "memory.put expected_version": lambda w, n: w.ab.memory.put(
        "user:alice", "lang", "en", expected_version=n
    ),
    "memory.delete expected_version": lambda w, n: w.ab.memory.delete(
        "user:alice", "lang", expected_version=n
    ),
    "memory.list filter": lambda w, n: w.ab.memory.list("user", filter={"n": n}),
    "memory.list offset": lambda w, n: w.ab.memory.list("user", offset=n),
    "memory.list limit": lambda w, n: w.ab.memory.list("user", limit=n),
    "memory.namespaces max_depth": lambda w, n: w.ab.memory.namespaces(max_depth=n),
    "memory.namespaces limit": lambda w, n: w.ab.memory.namespaces(limit=n),
    "memory.search filter": lambda w, n: w.ab.memory.search(
        "lang", prefix="user", filter={"n": n}, mode="keyword"
    ),
    "memory.search k": lambda w, n: w.ab.memory.search("lang", prefix="user", k=n),
    "memory.context max_tokens": lambda w, n: w.ab.memory.context("user", "lang", max_tokens=n),
    "memory.context k": lambda w, n: w.ab.memory.context("user", "lang", k=n),
    "sessions.create state": lambda w, n: w.ab.sessions.create(app="a", user="u", state={"n": n}),
    "sessions.get last_n": lambda w, n: w.ab.sessions.get(w.session, last_n=n),
    "sessions.get after": lambda w, n: w.ab.sessions.get(w.session, after=n),
    "sessions.list limit": lambda w, n: w.ab.sessions.list(app="a", limit=n),
    "sessions.append_event expected_revision": lambda w, n: w.ab.sessions.append_event(
        w.session, Event(author="user"), expected_revision=n
    ),
    "sessions.append_event content": lambda w, n: w.ab.sessions.append_event(
        w.session, Event(author="user", content=[n])
    ),
    "sessions.set_status expected_revision": lambda w, n: w.ab.sessions.set_status(
        w.session, "active", expected_revision=n
    ),
    "tasks.create metadata": lambda w, n: w.ab.tasks.create(
        session_id=w.session, prompt="p", metadata={"n": n}
    ),
    "tasks.update result": lambda w, n: w.ab.tasks.update(w.task, status="running", result=n),
    "documents.search k": lambda w, n: w.ab.documents.search("restore", k=n),
    "archival.show entry_id": lambda w, n: w.ab.archival.show(n),
    "archival.restore entry_id": lambda w, n: w.ab.archival.restore(n),
    "archival.list before": lambda w, n: w.ab.archival.list(before=n),
    "documents.sync max_file_bytes": lambda w, n: w.ab.documents.sync(w.docs, max_file_bytes=n),
}

# Which numbers each argument must refuse (a ttl of -2**63 is refused for being
# negative; what matters here is that it is refused with a typed error).
NUMBERS = {
    "huge": HUGE,
    "tiny": TINY,
    "googol-ish": 10**400,
    "negative googol-ish": -(10**400),
}


@shared_loop
@pytest.mark.parametrize("number", sorted(NUMBERS))
@pytest.mark.parametrize("case", sorted(NUMBER_ARGUMENTS))
async def test_integers_beyond_64_bits_are_a_typed_error(
    world: World, case: str, number: str
) -> None:
    await assert_refused(world, NUMBER_ARGUMENTS[case], NUMBERS[number])


@shared_loop
@pytest.mark.parametrize(
    "ttl",
    [float("inf"), float("-inf"), float("nan"), 10**400, 0, -1, True, "60"],
    ids=["inf", "-inf", "nan", "1e400", "0", "-1", "True", "str"],
)
async def test_a_ttl_must_be_a_positive_finite_number(world: World, ttl: Any) -> None:
    error = await assert_refused(world, NUMBER_ARGUMENTS["memory.put ttl"], ttl)
    assert "ttl" in error.message


@shared_loop
@pytest.mark.parametrize(
    "after",
    [float("inf"), float("nan"), 10**400, -(10**400)],
    ids=["inf", "nan", "1e400", "-1e400"],
)
async def test_sessions_get_after_must_be_finite(world: World, after: Any) -> None:
    await assert_refused(world, NUMBER_ARGUMENTS["sessions.get after"], after)


@shared_loop
@pytest.mark.parametrize("edge", [INT64_MAX, INT64_MIN])
async def test_metadata_at_the_64_bit_edges_is_stored_and_filterable(
    world: World, edge: int
) -> None:
    """The rule is one: integers SQLite can hold are stored and found; others are refused."""
    ab = world.ab
    await ab.memory.put("user:bob", "edge", {"n": edge}, metadata={"n": edge})
    found = await ab.memory.list("user:bob", filter={"n": edge})
    assert [(m.key, m.metadata, m.value) for m in found] == [("edge", {"n": edge}, {"n": edge})]
    hits = await ab.memory.search("edge", prefix="user:bob", filter={"n": edge}, mode="keyword")
    assert [h.key for h in hits.hits] == ["edge"]


@shared_loop
async def test_a_failed_hostile_call_leaves_the_session_usable(world: World) -> None:
    ab = world.ab
    with pytest.raises(InvalidInputError):
        await ab.sessions.append_event(world.session, Event(author="user", content=LONE))
    before = await ab.sessions.get(world.session)
    s = await ab.sessions.append_event(world.session, Event(author="user", content="fine"))
    assert s.revision == before.revision + 1 and s.events[0].content == "fine"


# ---------------------------------------------------------------------------
# Item 7: one bad call never loses the timings of the others.
# ---------------------------------------------------------------------------


async def metric_rows(ab: Abathur, kind: str) -> dict[str, int]:
    rows = await ab.db.read(
        lambda tx: tx.conn.execute(
            "SELECT name, sum(count) FROM metrics WHERE kind = ? GROUP BY name", (kind,)
        ).fetchall()
    )
    return dict(rows)


@pytest.mark.sqlite_only("reads the metrics table through tx.conn")
async def test_a_surrogate_namespace_does_not_lose_the_window_of_metrics(
    db_path: Path,
) -> None:
    async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
        await ab.memory.put("user:alice", "lang", "fr")
        await ab.analytics.flush()
        for _ in range(50):
            await ab.memory.get("user:alice", "lang")
        with pytest.raises(InvalidInputError):
            await ab.memory.get(f"user:{ESCAPED}", "lang")
        written = await ab.analytics.flush()
        calls = await metric_rows(ab, "call")
        reads = await metric_rows(ab, "reads")
    assert written >= 3  # the memory.get window, and two namespaces read
    assert calls["memory.get"] == 51  # 50 good calls and the refused one, all timed
    # The hostile label is kept, escaped, so an operator sees what was tried.
    assert reads == {"user:alice": 50, "user:\\udcff": 1}


@pytest.mark.sqlite_only("reads the metrics table through tx.conn")
async def test_a_record_that_cannot_be_stored_is_skipped_with_a_warning(db_path: Path) -> None:
    async with Abathur.open(db_path, embedder="none", embed_worker=False) as ab:
        for _ in range(50):
            await ab.memory.get("user:alice", "lang")
        ab.analytics.recorder.count("budget.warn", HUGE)  # no SQLite integer holds it
        with capture_logs() as logs:
            written = await ab.analytics.flush()
        calls = await metric_rows(ab, "call")
        counters = await metric_rows(ab, "counter")
    assert calls == {"memory.get": 50} and counters == {}
    assert written == 2  # memory.get and the reads of user:alice; the counter skipped
    skipped = [e for e in logs if e["event"] == "analytics.record_skipped"]
    assert [(e["log_level"], e["name"]) for e in skipped] == [("warning", "budget.warn")]


# ---------------------------------------------------------------------------
# The CLI: undecodable bytes in argv, through a real process.
# ---------------------------------------------------------------------------


def abathur(*argv: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "abathur", *argv],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "agent.db"
    done = abathur("init", "--db", str(path))
    assert done.returncode == 0, done.stderr
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["search", "--memories", "--prefix", b"user:\xff", "tea"], id="prefix"),
        pytest.param(
            ["search", "--memories", "--prefix", b"user:\xff", "tea", "--json"], id="prefix-json"
        ),
        pytest.param(["search", b"tea \xff"], id="query"),
        pytest.param(["search", "tea", "--prefix", b"run\xffbooks"], id="path-prefix"),
        pytest.param(["sync", b"\xff"], id="sync-dir"),
        pytest.param(["sync", ".", "--pattern", b"*\xff.md"], id="sync-pattern"),
        pytest.param(["unsync", b"gone\xff"], id="unsync-dir"),
        pytest.param(["cost", "report", "--since", b"7d\xff"], id="cost-since"),
    ],
)
def test_cli_argument_that_is_not_utf8_is_invalid_input(
    cli_db: Path, tmp_path: Path, argv: list[str | bytes]
) -> None:
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"\xff"))
    before = digest(cli_db)
    done = subprocess.run(
        [sys.executable, "-m", "abathur", *argv, "--db", str(cli_db)],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    stderr = done.stderr.decode("utf-8")  # the message itself is valid UTF-8
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "[invalid_input]" in stderr and "not valid UTF-8" in stderr and "\\xff" in stderr
    if "--json" in argv:  # the error as JSON on stdout, like every other error
        assert json.loads(done.stdout)["error"]["code"] == "invalid_input"
    else:
        assert done.stdout == b""
    assert digest(cli_db) == before


@pytest.mark.parametrize("via", ["option", "env"])
def test_cli_db_path_that_is_not_utf8_is_invalid_input(tmp_path: Path, via: str) -> None:
    bad = os.path.join(os.fsencode(tmp_path), b"agent\xff.db")
    if via == "option":
        done = subprocess.run(
            [sys.executable, "-m", "abathur", "init", "--db", bad],
            capture_output=True,
            timeout=120,
            check=False,
        )
    else:
        env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        env[b"ABATHUR_DB"] = bad
        done = subprocess.run(
            [sys.executable, "-m", "abathur", "init"],
            capture_output=True,
            timeout=120,
            env=env,
            check=False,
        )
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr and "--db" in stderr
    assert not os.path.exists(bad)


# ---------------------------------------------------------------------------
# Database paths no file system takes (found by the CLI fuzzer).
# ---------------------------------------------------------------------------

UNUSABLE_PATHS = {
    "name too long": lambda tmp: tmp / ("é" * 200 + ".db"),
    "not utf-8": lambda tmp: tmp / f"agent{ESCAPED}.db",
    "lone surrogate": lambda tmp: tmp / f"agent{LONE}.db",
}


@pytest.mark.sqlite_only("database file paths no file system can hold")
@pytest.mark.parametrize("case", sorted(UNUSABLE_PATHS))
async def test_opening_an_unusable_path_is_a_typed_error(tmp_path: Path, case: str) -> None:
    path = UNUSABLE_PATHS[case](tmp_path)
    with pytest.raises(InvalidInputError, match="database path"):
        async with Abathur.open(path, embedder="none"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["info"], ["init"], ["search", "tea"], ["check"]])
def test_cli_db_path_too_long_is_invalid_input(tmp_path: Path, command: list[str]) -> None:
    done = abathur(*command, "--db", str(tmp_path / ("é" * 200 + ".db")))
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr and "--db" in stderr and "too long" in stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_db_name_too_long_for_the_journal_creates_nothing(tmp_path: Path) -> None:
    """252 bytes fit a name, not with -journal: refused before an empty file is made."""
    docs = tmp_path / "docs"
    docs.mkdir()
    db = tmp_path / ("a" * 252)
    done = abathur("sync", str(docs), "--db", str(db))
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr and "-journal" in stderr
    assert not db.exists()


def test_an_event_nested_too_deep_gets_a_short_message() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Event(author="user", content=nested(1200))
    assert len(caught.value.message) < 200, caught.value.message
    assert caught.value.message.startswith("invalid Event: content.list.0")


# Export and import paths (found by the fuzzer): a lone surrogate no file name
# can hold, a name too long for the file system.
TRANSFER_PATHS: dict[str, Call] = {
    "export_to lone surrogate": lambda w, _: w.ab.transfer.export_to(
        w.docs.parent / f"out{LONE}.jsonl"
    ),
    "export_to name too long": lambda w, _: w.ab.transfer.export_to(
        w.docs.parent / ("é" * 200 + ".jsonl")
    ),
    "import_from lone surrogate": lambda w, _: w.ab.transfer.import_from(
        w.docs.parent / f"in{LONE}.jsonl"
    ),
    "import_from name too long": lambda w, _: w.ab.transfer.import_from(
        w.docs.parent / ("é" * 200 + ".jsonl")
    ),
}


@shared_loop
@pytest.mark.parametrize("case", sorted(TRANSFER_PATHS))
async def test_an_export_or_import_path_no_file_can_have_is_a_typed_error(
    world: World, case: str
) -> None:
    await assert_refused(world, TRANSFER_PATHS[case], None)


@pytest.mark.parametrize("command", [["import", "--dry-run"], ["export"]], ids=["import", "export"])
def test_cli_file_argument_too_long_is_invalid_input(
    cli_db: Path, tmp_path: Path, command: list[str]
) -> None:
    before = digest(cli_db)
    done = abathur(*command, str(tmp_path / ("é" * 200 + ".jsonl")), "--db", str(cli_db))
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr and "too long" in stderr
    assert digest(cli_db) == before

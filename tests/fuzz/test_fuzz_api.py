"""The fuzzer over the async API (issue 11): hostile arguments to every public call.

Properties, checked on one real database file that lives for the whole batch:

1. only :class:`~abathur.errors.AbathurError` subclasses escape a call;
2. a call that fails changes nothing (:func:`~tests.fuzz.strategies.fingerprint`
   of the main tables before and after);
3. the file passes ``abathur check`` (:func:`~abathur.ops.integrity.run_checks`)
   after the batch.

Run more of it with ``make fuzz`` (``HYPOTHESIS_PROFILE=long``).
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abathur import Abathur, Event
from abathur.documents import DocumentService
from abathur.errors import AbathurError
from abathur.memory import MemoryService
from abathur.ops.integrity import run_checks
from abathur.sessions import SessionService
from abathur.tasks import TaskService
from abathur.transfer import TransferService
from tests.fuzz.strategies import (
    ANYTHING,
    FILTER,
    FUZZ,
    HOSTILE_TEXT,
    INT,
    METADATA,
    NAMESPACE,
    NOT_JSON,
    NUMBER,
    VALUE,
    fingerprint,
    fuzz_share,
    text_or,
)

# s1 takes events (nothing ends it); s2 and s3 go through their lifecycle.
SESSIONS = ["s1", "s2", "s3"]
ENDABLE = ["s2", "s3"]
TASKS = ["t1", "t2"]


@dataclass
class Fuzzed:
    """One database for a whole batch, driven from one event loop."""

    loop: asyncio.AbstractEventLoop
    ab: Abathur
    path: Path
    docs: Path
    outcomes: dict[str, int] = field(default_factory=dict)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


async def _seed(ab: Abathur, docs: Path) -> None:
    await ab.memory.put("user:alice:prefs", "lang", "fr", metadata={"source": "chat", "n": 1})
    await ab.memory.put("user:alice", "tea", "green tea", metadata={"source": "form"})
    await ab.memory.put("user:bob", "lang", {"value": "en"}, type="episodic", ttl=3600)
    await ab.sessions.create(app="helpdesk", user="alice", session_id="s1", state={"user:x": 1})
    await ab.sessions.create(app="helpdesk", user="bob", session_id="s2")
    await ab.tasks.create(session_id="s1", prompt="summarise", task_id="t1")
    await ab.documents.sync(docs)
    await ab.embeddings.drain()  # so vector and hybrid searches have vectors to rank


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    docs = root / "docs"
    (docs / "ops").mkdir(parents=True)
    (docs / "ops" / "restore.md").write_text("# Restore\n\nHow to restore a backup.\n")
    (docs / "tea.md").write_text("# Tea\n\nGreen tea at five.\n")
    loop = asyncio.new_event_loop()
    path = root / "fuzz.db"
    ab = loop.run_until_complete(Abathur.open(path, embed_worker=False))
    loop.run_until_complete(_seed(ab, docs))
    # Files for import_from: a faithful export, and copies of it spoiled line by line.
    good = root / "export.jsonl"
    loop.run_until_complete(ab.transfer.export_to(good))
    lines = good.read_bytes().splitlines()
    (root / "truncated.jsonl").write_bytes(b"\n".join(lines[: len(lines) // 2])[:-7])
    (root / "not-utf8.jsonl").write_bytes(lines[0] + b"\n\xff\xfe\n")
    spoiled = [json.loads(line) for line in lines]
    for record in spoiled[1:]:
        for field_name in record:
            if field_name not in ("kind", "format"):
                record[field_name] = [10**400 if isinstance(v, int) else "\udcff" for v in (1, "")]
                break
    (root / "spoiled.jsonl").write_text(
        "\n".join(json.dumps(r) for r in spoiled) + "\n", encoding="utf-8"
    )
    try:
        yield Fuzzed(loop, ab, path, docs)
    finally:
        loop.run_until_complete(ab.close())
        loop.close()


class LazyEvent:
    """An Event built inside the call, so that building it is part of what is judged."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return f"Event(**{self.fields!r})"

    def build(self) -> Any:
        return Event(**self.fields)


class Sink:
    """A fresh in-memory stream for export_to, made inside the call."""

    def __repr__(self) -> str:
        return "BytesIO()"

    def build(self) -> Any:
        return io.BytesIO()


class Under:
    """A path inside the fuzz directory, made inside the call: never "/" or the cwd."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<fuzz dir>/{self.name!r}"

    def build(self, root: Path) -> Any:
        return f"{root}/{self.name}"


def _built(value: Any, root: Path) -> Any:
    if isinstance(value, Under):
        return value.build(root)
    return value.build() if isinstance(value, LazyEvent | Sink) else value


SESSION = text_or(SESSIONS)
TASK = text_or(TASKS)
APP = text_or(["helpdesk", "other"])
USER = text_or(["alice", "bob"])
KEY = text_or(["lang", "tea", "missing"])
QUERY = text_or(["tea", "restore backup", "language", "the"])
MODE = text_or(["keyword", "vector", "hybrid"])
MEMORY_TYPE = st.one_of(st.none(), text_or(["semantic", "episodic", "procedural"]))
SESSION_STATUS = text_or(["active", "paused", "terminated", "archived", "created"])
TASK_STATUS = text_or(["running", "succeeded", "failed", "cancelled", "pending"])
STATE = st.one_of(
    st.none(),
    st.dictionaries(
        st.one_of(st.sampled_from(["topic", "user:lang", "app:tier", "temp:x"]), HOSTILE_TEXT),
        VALUE,
        max_size=3,
    ),
    VALUE,
)
_GOOD_EVENT = st.builds(
    LazyEvent,
    author=text_or(["user", "agent"]),
    content=VALUE,
    state_delta=STATE.map(lambda s: s if isinstance(s, dict) else {}),
    metadata=METADATA.map(lambda m: m if isinstance(m, dict) else {}),
)
EVENT = st.one_of(
    _GOOD_EVENT,
    _GOOD_EVENT,
    _GOOD_EVENT,
    st.builds(LazyEvent, author=text_or(["user"]), id=HOSTILE_TEXT, timestamp=NUMBER),
    ANYTHING,
)
REVISION = st.one_of(st.none(), st.none(), INT, ANYTHING)


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    """(method, positional, keyword) strategy; keyword values may be absent."""
    required = {k: v for k, v in kwargs.items() if not k.startswith("opt_")}
    optional = {k[4:]: v for k, v in kwargs.items() if k.startswith("opt_")}
    return st.tuples(
        st.just(name),
        st.tuples(*args),
        st.fixed_dictionaries(required, optional=optional),
    )


OPS: dict[str, Any] = {
    "sessions.create": call(
        "sessions.create", app=APP, user=USER, opt_state=STATE, opt_session_id=SESSION
    ),
    "sessions.get": call("sessions.get", SESSION, opt_last_n=REVISION, opt_after=NUMBER),
    "sessions.list": call(
        "sessions.list",
        opt_app=st.one_of(APP, APP, st.none()),
        opt_user=USER,
        opt_status=SESSION_STATUS,
        opt_limit=INT,
    ),
    "sessions.append_event": call(
        "sessions.append_event", text_or(["s1"]), EVENT, opt_expected_revision=REVISION
    ),
    "sessions.get_user_state": call("sessions.get_user_state", app=APP, user=USER),
    "sessions.get_app_state": call("sessions.get_app_state", app=APP),
    "sessions.set_status": call(
        "sessions.set_status", text_or(ENDABLE), SESSION_STATUS, opt_expected_revision=REVISION
    ),
    "sessions.terminate": call(
        "sessions.terminate", text_or(ENDABLE), opt_expected_revision=REVISION
    ),
    "sessions.delete": call("sessions.delete", st.one_of(st.just("s3"), HOSTILE_TEXT)),
    "memory.put": call(
        "memory.put",
        NAMESPACE,
        KEY,
        VALUE,
        opt_type=MEMORY_TYPE,
        opt_metadata=METADATA,
        opt_ttl=st.one_of(st.none(), NUMBER),
        opt_expected_version=REVISION,
    ),
    "memory.get": call("memory.get", NAMESPACE, KEY),
    "memory.history": call("memory.history", NAMESPACE, KEY),
    "memory.get_version": call("memory.get_version", NAMESPACE, KEY, INT),
    "memory.list": call(
        "memory.list",
        NAMESPACE,
        opt_type=MEMORY_TYPE,
        opt_filter=FILTER,
        opt_limit=INT,
        opt_offset=INT,
        opt_include_deleted=st.one_of(st.booleans(), ANYTHING),
    ),
    "memory.delete": call("memory.delete", NAMESPACE, KEY, opt_expected_version=REVISION),
    "memory.restore": call("memory.restore", NAMESPACE, KEY),
    "memory.namespaces": call(
        "memory.namespaces", st.one_of(st.none(), NAMESPACE), opt_max_depth=INT, opt_limit=INT
    ),
    "memory.namespace_counts": call(
        "memory.namespace_counts", st.one_of(st.none(), NAMESPACE), opt_limit=INT
    ),
    "memory.consolidate": call(
        "memory.consolidate", NAMESPACE, opt_dry_run=st.one_of(st.booleans(), ANYTHING)
    ),
    "memory.search": call(
        "memory.search",
        QUERY,
        prefix=NAMESPACE,
        opt_type=MEMORY_TYPE,
        opt_filter=FILTER,
        opt_k=INT,
        opt_mode=MODE,
    ),
    "memory.context": call(
        "memory.context",
        NAMESPACE,
        QUERY,
        opt_max_tokens=INT,
        opt_type=MEMORY_TYPE,
        opt_k=INT,
        opt_mode=MODE,
    ),
    "tasks.create": call(
        "tasks.create",
        session_id=SESSION,
        prompt=text_or(["summarise", " "]),
        opt_metadata=METADATA,
        opt_task_id=TASK,
    ),
    "tasks.get": call("tasks.get", TASK),
    "tasks.update": call(
        "tasks.update",
        TASK,
        status=TASK_STATUS,
        opt_result=VALUE,
        opt_error=st.one_of(st.none(), HOSTILE_TEXT, ANYTHING),
    ),
    "tasks.list": call(
        "tasks.list",
        opt_session_id=st.one_of(SESSION, SESSION, st.none()),
        opt_status=TASK_STATUS,
        opt_limit=st.one_of(st.none(), INT),
    ),
    "documents.search": call(
        "documents.search",
        QUERY,
        opt_k=INT,
        opt_mode=MODE,
        opt_path_prefix=st.one_of(st.none(), text_or(["ops", "ops/", "tea.md"])),
        opt_root=st.one_of(st.none(), HOSTILE_TEXT),
    ),
}


IMPORTS = ["export.jsonl", "truncated.jsonl", "not-utf8.jsonl", "spoiled.jsonl", "missing"]
# Never a bare string as a file: export_to("../x") would write outside the fuzz
# directory. Strings go through Under; the junk is anything but a string.
NOT_A_PATH = st.one_of(NUMBER, st.none(), NOT_JSON)
OPS["transfer.export_to"] = call(
    "transfer.export_to",
    st.one_of(
        st.builds(Sink),
        st.builds(Sink),
        HOSTILE_TEXT.filter(lambda t: ".." not in t).map(lambda t: Under(f"out-{t}")),
        NOT_A_PATH,
    ),
    opt_prefix=st.one_of(st.none(), NAMESPACE),
    opt_app=st.one_of(st.none(), APP),
    opt_user=st.one_of(st.none(), USER),
)
OPS["transfer.import_from"] = call(
    "transfer.import_from",
    st.one_of(st.sampled_from(IMPORTS).map(Under), HOSTILE_TEXT.map(Under), NOT_A_PATH),
    opt_dry_run=st.one_of(st.booleans(), ANYTHING),
)


# Roots handed to sync/forget: the synced directory, paths under it that do not
# exist, and hostile text *under* it, never a bare string: sync("/") would walk
# the whole machine.
def _roots(docs: Path) -> Any:
    return st.one_of(
        st.just(str(docs)),
        st.just(str(docs / "ops")),
        # No "..": sync("<docs>/../../..") would walk the machine.
        HOSTILE_TEXT.filter(lambda t: ".." not in t).map(lambda t: f"{docs}/{t}"),
    )


# Public calls deliberately left out, with the reason. A new public method must
# be added to OPS (or here): test_every_public_call_is_fuzzed says so.
NOT_FUZZED = {
    "documents.watch": "runs sync in a background task; its arguments are sync's, fuzzed there",
    "documents.close": "stops watches; takes no argument",
}
PATH_OPS = {"documents.sync", "documents.forget"}


def _public(service: type) -> set[str]:
    return {
        name
        for name, _ in inspect.getmembers(service, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


SERVICES = {
    "sessions": SessionService,
    "memory": MemoryService,
    "tasks": TaskService,
    "documents": DocumentService,
    "transfer": TransferService,
}

# Erase (issue 11). Mostly names nothing was seeded under, so a purge that
# succeeds does not leave the rest of the batch an empty file; sometimes the
# seeded ones. everything=True is never drawn: that would be the same for good.
NOT_TRUE = st.one_of(st.just(False), st.just(False), NUMBER.filter(lambda v: v is not True))
OPS["memory.purge"] = call(
    "memory.purge",
    st.one_of(st.just("scratch"), st.just("user:bob"), st.none(), st.just(""), NAMESPACE),
    opt_everything=NOT_TRUE,
    opt_dry_run=st.one_of(st.booleans(), ANYTHING),
)
OPS["sessions.purge"] = call(
    "sessions.purge",
    app=st.one_of(text_or(["other"]), APP),
    user=st.one_of(text_or(["carol"]), USER),
    opt_dry_run=st.one_of(st.booleans(), ANYTHING),
)


def test_every_public_call_is_fuzzed() -> None:
    public = {f"{svc}.{name}" for svc, cls in SERVICES.items() for name in _public(cls)}
    missing = public - set(OPS) - set(NOT_FUZZED) - PATH_OPS
    assert not missing, f"add these to OPS in {__file__} (or to NOT_FUZZED, with why): {missing}"


def _judge(fuzzed: Fuzzed, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ab = fuzzed.ab
    service, method = name.split(".")
    before = fuzzed.run(ab.db.read(lambda tx: fingerprint(tx.conn)))

    async def go() -> Any:
        root = fuzzed.path.parent
        built = [_built(a, root) for a in args]
        named = {k: _built(v, root) for k, v in kwargs.items()}
        return await getattr(getattr(ab, service), method)(*built, **named)

    try:
        fuzzed.run(go())
    except AbathurError as exc:
        outcome = type(exc).__name__
        after = fuzzed.run(ab.db.read(lambda tx: fingerprint(tx.conn)))
        changed = [t for t in before if before[t] != after.get(t)]
        assert not changed, f"{name} failed ({exc.code}) but changed {changed}"
        exc.message.encode("utf-8")  # an error message is always printable text
    except Exception as exc:
        raise AssertionError(
            f"{name}(*{args!r:.300}, **{kwargs!r:.300}) raised {type(exc).__name__}, "
            "not an AbathurError"
        ) from exc
    else:
        outcome = "ok"
    key = f"{name}: {outcome}"
    fuzzed.outcomes[key] = fuzzed.outcomes.get(key, 0) + 1


def _check(fuzzed: Fuzzed) -> None:
    report = run_checks(fuzzed.path)
    bad = [
        (r.name, r.summary, r.findings) for r in report.results if r.status not in ("ok", "skipped")
    ]
    assert report.is_ok, bad


@pytest.mark.sqlite_only("judged by a fingerprint of the SQLite file through tx.conn")
@FUZZ
@given(op=st.sampled_from(sorted(OPS)).flatmap(lambda name: OPS[name]))
def test_api_calls_raise_only_typed_errors_and_fail_cleanly(
    fuzzed: Fuzzed, op: tuple[str, tuple[Any, ...], dict[str, Any]]
) -> None:
    _judge(fuzzed, *op)


@pytest.mark.sqlite_only("judged by a fingerprint of the SQLite file through tx.conn")
@fuzz_share(4)  # a sync walks and hashes files
@given(data=st.data())
def test_document_sync_and_forget_with_hostile_arguments(fuzzed: Fuzzed, data: Any) -> None:
    root = data.draw(_roots(fuzzed.docs), label="root")
    if data.draw(st.booleans(), label="forget"):
        _judge(fuzzed, "documents.forget", (root,), {})
        return
    patterns = data.draw(
        st.one_of(
            st.just(["**/*.md"]),
            st.lists(text_or(["**/*.md", "*.md", "ops/*.md", "/abs", "../up"]), max_size=3),
            ANYTHING,
        ),
        label="patterns",
    )
    kwargs = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "exclude": st.one_of(st.none(), st.lists(HOSTILE_TEXT, max_size=2), ANYTHING),
                "max_file_bytes": INT,
            },
        ),
        label="kwargs",
    )
    _judge(fuzzed, "documents.sync", (root, patterns), kwargs)


@pytest.mark.sqlite_only("runs abathur check (a SQLite file check) on the fuzzed file")
def test_the_file_passes_check_after_the_batch(fuzzed: Fuzzed) -> None:
    """Runs after the fuzz tests above (same module, same file): `abathur check` is clean."""
    assert fuzzed.outcomes, "the fuzz tests did not run first"
    # What was reached, for whoever reads the log of a run (pytest -s).
    for outcome, count in sorted(fuzzed.outcomes.items()):
        print(f"{count:6}  {outcome}")
    _check(fuzzed)
    # Both kinds of outcome were reached: calls got past validation and were refused.
    assert any(k.endswith(": ok") for k in fuzzed.outcomes)
    assert any(not k.endswith(": ok") for k in fuzzed.outcomes)

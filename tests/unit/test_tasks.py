"""TaskService: create/get/update/list, the task lifecycle and its errors."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from abathur import (
    Abathur,
    AbathurError,
    AlreadyExistsError,
    InvalidIdError,
    InvalidInputError,
    InvalidTransitionError,
    SessionNotFoundError,
    Task,
    TaskNotFoundError,
    ValueNotSerializableError,
    ValueTooLargeError,
)
from abathur import tasks as tasks_module
from abathur.backends.sqlite import tasks as sqlite_tasks
from tests.helpers import assert_unchanged

LEGAL = [
    ("pending", "running"), ("pending", "cancelled"), ("running", "succeeded"),
    ("running", "failed"), ("running", "cancelled"),
]
ALL_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"]
ILLEGAL = [(a, b) for a in ALL_STATUSES for b in ALL_STATUSES if (a, b) not in LEGAL]
PATH_TO = {
    "pending": [], "running": ["running"], "succeeded": ["running", "succeeded"],
    "failed": ["running", "failed"], "cancelled": ["cancelled"],
}


async def expect_error(ab: Abathur, cls: type[AbathurError], code: str,
                       call: Callable[[], Awaitable[Any]]) -> AbathurError:
    """The call raises ``cls`` with ``code`` and leaves the file untouched."""
    async with assert_unchanged(ab):
        with pytest.raises(cls) as ei:
            await call()
    assert ei.value.code == code
    return ei.value


@pytest.fixture
async def sid(ab) -> str:
    return (await ab.sessions.create(app="a", user="u", session_id="s1")).id


async def task_in(ab: Abathur, session_id: str, status: str) -> Task:
    task = await ab.tasks.create(session_id=session_id, prompt="do it")
    for step in PATH_TO[status]:
        task = await ab.tasks.update(task.id, status=step)
    assert task.status == status
    return task


# --- create / get ---------------------------------------------------------------


async def test_create_and_get(ab, sid):
    t = await ab.tasks.create(session_id=sid, prompt="summarise ticket")
    assert (t.session_id, t.prompt, t.status, t.result, t.error, t.metadata) == (
        sid, "summarise ticket", "pending", None, None, {})
    assert len(t.id) == 32 and int(t.id, 16) >= 0
    assert t.created_at == t.updated_at
    assert await ab.tasks.get(t.id) == t


async def test_create_with_id_and_metadata(ab, sid):
    meta = {"priority": 1, "tags": ["x"], "none": None}
    t = await ab.tasks.create(session_id=sid, prompt="p", metadata=meta, task_id="t1")
    meta["tags"].append("y")
    assert (t.id, t.metadata) == ("t1", {"priority": 1, "tags": ["x"], "none": None})
    assert (await ab.tasks.get("t1")).metadata == {"priority": 1, "tags": ["x"], "none": None}


async def test_create_is_audited(ab, sid):
    t = await ab.tasks.create(session_id=sid, prompt="p")
    (record,) = await ab.audit.records(entity="task", entity_id=t.id)
    assert (record.action, record.detail) == ("task.create", {"session_id": sid})


async def test_create_unknown_session(ab):
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.tasks.create(session_id="nope", prompt="p"))


async def test_create_duplicate_id(ab, sid):
    await ab.tasks.create(session_id=sid, prompt="p", task_id="t1")
    err = await expect_error(ab, AlreadyExistsError, "already_exists",
                             lambda: ab.tasks.create(session_id=sid, prompt="q", task_id="t1"))
    assert "t1" in str(err)


@pytest.mark.parametrize("prompt", ["", "   ", "\n", None, 5, ["p"], "a NUL \x00 inside"])
async def test_create_rejects_bad_prompt(ab, sid, prompt):
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.tasks.create(session_id=sid, prompt=prompt))


@pytest.mark.parametrize("metadata", [[1], "m", 3])
async def test_create_rejects_non_dict_metadata(ab, sid, metadata):
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.tasks.create(session_id=sid, prompt="p", metadata=metadata))


async def test_create_rejects_non_json_metadata(ab, sid):
    await expect_error(ab, ValueNotSerializableError, "invalid_json",
                       lambda: ab.tasks.create(session_id=sid, prompt="p",
                                               metadata={"x": {1, 2}}))


async def test_size_limits(backend):
    async with backend.open(max_value_bytes=64) as ab:
        s = await ab.sessions.create(app="a", user="u")
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.tasks.create(session_id=s.id, prompt="x" * 100))
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.tasks.create(session_id=s.id, prompt="p",
                                                   metadata={"m": "x" * 100}))
        t = await ab.tasks.create(session_id=s.id, prompt="p")
        await ab.tasks.update(t.id, status="running")
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.tasks.update(t.id, status="succeeded", result="x" * 100))
        await expect_error(ab, ValueTooLargeError, "value_too_large",
                           lambda: ab.tasks.update(t.id, status="failed", error="x" * 100))


async def test_get_unknown_task(ab):
    err = await expect_error(ab, TaskNotFoundError, "task.not_found",
                             lambda: ab.tasks.get("nope"))
    assert "nope" in str(err) and isinstance(err, LookupError)


# --- update -------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), LEGAL)
async def test_legal_transitions(ab, sid, old, new):
    t = await task_in(ab, sid, old)
    after = await ab.tasks.update(t.id, status=new)
    assert after.status == new and after.updated_at >= t.updated_at
    assert await ab.tasks.get(t.id) == after
    records = await ab.audit.records(entity="task", entity_id=t.id)
    # replaces: the record this update supersedes (the one before it), see abathur.audit.
    assert (records[-1].action, records[-1].detail) == (
        "task.update", {"from": old, "to": new, "replaces": records[-2].seq}
    )


async def test_illegal_transitions(ab, sid):
    for old, new in ILLEGAL:
        t = await task_in(ab, sid, old)
        err = await expect_error(ab, InvalidTransitionError, "invalid_transition",
                                 lambda t=t, new=new: ab.tasks.update(t.id, status=new))
        assert repr(old) in str(err) and repr(new) in str(err)
    assert ("succeeded", "running") in ILLEGAL and ("running", "running") in ILLEGAL


def test_transition_table_matches_the_brief():
    legal = {(a, b) for a, targets in tasks_module.TRANSITIONS.items() for b in targets}
    assert legal == set(LEGAL)
    assert set(tasks_module.STATUSES) == set(ALL_STATUSES)


async def test_update_records_result_and_error(ab, sid):
    t = await task_in(ab, sid, "running")
    done = await ab.tasks.update(t.id, status="succeeded", result={"summary": [1, None]})
    assert (done.result, done.error) == ({"summary": [1, None]}, None)
    assert (await ab.tasks.get(t.id)).result == {"summary": [1, None]}
    t2 = await task_in(ab, sid, "running")
    failed = await ab.tasks.update(t2.id, status="failed", error="timed out")
    assert (failed.result, failed.error) == (None, "timed out")
    assert (await ab.tasks.get(t2.id)).error == "timed out"


async def test_update_unknown_task(ab):
    await expect_error(ab, TaskNotFoundError, "task.not_found",
                       lambda: ab.tasks.update("nope", status="running"))


@pytest.mark.parametrize("status", ["RUNNING", "done", "", None, 1])
async def test_update_rejects_unknown_status(ab, sid, status):
    t = await ab.tasks.create(session_id=sid, prompt="p")
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.tasks.update(t.id, status=status))


async def test_update_rejects_bad_result_and_error(ab, sid):
    t = await task_in(ab, sid, "running")
    await expect_error(ab, ValueNotSerializableError, "invalid_json",
                       lambda: ab.tasks.update(t.id, status="succeeded", result=math.inf))
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.tasks.update(t.id, status="failed", error=RuntimeError("x")))
    # Stored as is, so no NUL (PostgreSQL text cannot hold one): refused on every backend.
    err = await expect_error(ab, InvalidInputError, "invalid_input",
                             lambda: ab.tasks.update(t.id, status="failed", error="boom\x00"))
    assert "NUL" in str(err)


# --- list ---------------------------------------------------------------------------


async def test_list_in_creation_order_with_status_filter(ab, sid):
    other = await ab.sessions.create(app="a", user="u")
    created = [await ab.tasks.create(session_id=sid, prompt=f"p{i}") for i in range(4)]
    await ab.tasks.create(session_id=other.id, prompt="elsewhere")
    await ab.tasks.update(created[1].id, status="running")
    await ab.tasks.update(created[3].id, status="cancelled")
    listed = await ab.tasks.list(session_id=sid)
    assert [t.id for t in listed] == [t.id for t in created]
    assert listed[1].status == "running"
    assert [t.id for t in await ab.tasks.list(session_id=sid, status="pending")] == [
        created[0].id, created[2].id]
    assert await ab.tasks.list(session_id=sid, status="failed") == []
    fresh = await ab.sessions.create(app="a", user="u")
    assert await ab.tasks.list(session_id=fresh.id) == []


async def test_list_unknown_session(ab):
    await expect_error(ab, SessionNotFoundError, "session.not_found",
                       lambda: ab.tasks.list(session_id="nope"))


async def test_list_rejects_unknown_status(ab, sid):
    await expect_error(ab, InvalidInputError, "invalid_input",
                       lambda: ab.tasks.list(session_id=sid, status="done"))


async def test_tasks_go_with_their_session(ab, sid):
    t = await ab.tasks.create(session_id=sid, prompt="p")
    await ab.sessions.delete(sid)
    await expect_error(ab, TaskNotFoundError, "task.not_found", lambda: ab.tasks.get(t.id))


async def test_reopened_database_returns_the_same_tasks(backend):
    async with backend.open() as ab:
        s = await ab.sessions.create(app="a", user="u")
        t = await ab.tasks.create(session_id=s.id, prompt="p", metadata={"k": 1})
        await ab.tasks.update(t.id, status="running")
        await ab.tasks.update(t.id, status="succeeded", result=[1, "two"])
        before = await ab.tasks.list(session_id=s.id)
    async with backend.open() as ab:
        assert await ab.tasks.list(session_id=s.id) == before
        assert before[0].result == [1, "two"]


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite store's SQL")
async def test_tasks_of_session_uses_its_index(ab):
    plan = await ab.db.read(lambda tx: tx.conn.execute(
        "EXPLAIN QUERY PLAN " + sqlite_tasks.SQL_TASKS_OF_SESSION, ("s",)).fetchall())
    details = " | ".join(row[-1] for row in plan)
    assert "USING INDEX tasks_by_session" in details, details
    assert "TEMP B-TREE" not in details, details


# --- ids ----------------------------------------------------------------------------

BAD_IDS = ["", "   ", " t1", "t1 ", "t\n1", "x" * 257, 7, None]

ID_CALLS: list[tuple[str, Callable[[Abathur, Any], Awaitable[Any]]]] = [
    ("create session_id", lambda ab, bad: ab.tasks.create(session_id=bad, prompt="p")),
    ("create task_id", lambda ab, bad: ab.tasks.create(session_id="s1", prompt="p",
                                                       task_id=bad)),
    ("get", lambda ab, bad: ab.tasks.get(bad)),
    ("update", lambda ab, bad: ab.tasks.update(bad, status="running")),
    ("list", lambda ab, bad: ab.tasks.list(session_id=bad)),
]


@pytest.mark.parametrize(("name", "call"), ID_CALLS, ids=[name for name, _ in ID_CALLS])
async def test_bad_ids_are_rejected_everywhere(ab, sid, name, call):
    await ab.tasks.create(session_id=sid, prompt="p", task_id="t1")
    for bad in BAD_IDS:
        if name == "create task_id" and bad is None:
            continue  # task_id=None means "make one up"
        if name == "list" and bad is None:
            continue  # session_id=None means "every session"
        await expect_error(ab, InvalidIdError, "invalid_id", lambda bad=bad: call(ab, bad))

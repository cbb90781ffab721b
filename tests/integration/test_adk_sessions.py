"""AbathurSessionService against ADK's session-service contract (google-adk 2.13.0).

The contract is what ``BaseSessionService``'s docstrings say and what ADK's
own ``InMemorySessionService`` does. Tests marked ``both`` run the same
scenario against the in-memory service and ours and must agree; where
abathur differs on purpose, the test is named ``test_divergence_*`` and says
why (the module docstring of abathur.integrations.adk.sessions lists them).
"""

from __future__ import annotations

import asyncio
import math
import typing
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Any

import pytest

pytest.importorskip("google.adk", reason="the adk extra is not installed")

from google.adk.agents import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events import Event
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService, Session
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.tools.tool_confirmation import ToolConfirmation
from google.genai import types
from pydantic import BaseModel

import abathur
from abathur import Abathur, errors
from abathur.integrations.adk import EVENT_FORMAT, AbathurSessionService
from tests.backends import BACKENDS, BackendHandle, handle
from tests.helpers import assert_unchanged

T0 = 1_742_000_000.0


@pytest.fixture
def service(ab: Abathur) -> AbathurSessionService:
    return AbathurSessionService(ab)


@pytest.fixture(params=["in-memory", *(spec.name for spec in BACKENDS)])
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseSessionService]:
    """ADK's in-memory service, then ours on each backend: a test using it must pass on each."""
    if request.param == "in-memory":
        yield InMemorySessionService()
        return
    async with handle(request.param, tmp_path, request).open(embed_worker=False) as ab:
        yield AbathurSessionService(ab)


def text(words: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=words)])


def ev(event_id: str, ts: float, delta: dict[str, Any] | None = None, **kw: Any) -> Event:
    return Event(
        id=event_id,
        author=kw.pop("author", "user"),
        invocation_id="inv",
        timestamp=ts,
        content=kw.pop("content", text(event_id)),
        actions=EventActions(state_delta=delta or {}),
        **kw,
    )


def rich_event() -> Event:
    """One of everything an event can carry that a lossy store would drop or mangle."""
    return Event(
        id="e-rich",
        invocation_id="inv-1",
        author="planner",
        branch="root.planner",
        timestamp=1_742_000_123.456789,
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="here is the chart"),
                types.Part(
                    inline_data=types.Blob(
                        mime_type="image/png", data=bytes(range(256)) * 4, display_name="chart.png"
                    )
                ),
                types.Part(
                    function_call=types.FunctionCall(
                        id="fc-1", name="lookup", args={"q": "x", "n": None}
                    )
                ),
                types.Part(
                    function_response=types.FunctionResponse(
                        id="fc-0", name="lookup", response={"rows": [1, 2.5, "three", None]}
                    )
                ),
                types.Part(text="thinking...", thought=True, thought_signature=b"\x00\xffsig"),
            ],
        ),
        actions=EventActions(
            state_delta={"topic": "billing", "nested": {"a": [1, {"b": None}]}, "gone": None},
            artifact_delta={"chart.png": 2},
            transfer_to_agent="billing_agent",
            escalate=True,
            skip_summarization=True,
            requested_tool_confirmations={
                "fc-1": ToolConfirmation(
                    hint="charge the card?",
                    confirmed=False,
                    payload={"amount": 12.5, "currency": None},
                ),
            },
            compaction=EventCompaction(
                start_timestamp=1.5, end_timestamp=2.25, compacted_content=text("summary")
            ),
        ),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=12,
            candidates_token_count=34,
            total_token_count=46,
            cached_content_token_count=5,
        ),
        custom_metadata={
            "trace": "t-1",
            "score": 0.1 + 0.2,
            "big": 2**53 + 1,
            "none": None,
            "deep": {"list": [True, False, None]},
        },
        long_running_tool_ids={"fc-2", "fc-1"},
        finish_reason=types.FinishReason.STOP,
        model_version="gemini-x",
        error_code=None,
        output={"answer": 42},
    )


async def stored_events(ab: Abathur, session_id: str) -> list[abathur.Event]:
    return (await ab.sessions.get(session_id)).events


# --- create -------------------------------------------------------------------------------


async def test_create_returns_the_session_with_merged_state(both: BaseSessionService) -> None:
    await both.create_session(app_name="app", user_id="other", state={"app:tier": "gold"})
    s = await both.create_session(
        app_name="app",
        user_id="u",
        session_id="s1",
        state={"user:lang": "fr", "topic": None, "temp:draft": 1},
    )
    assert (s.id, s.app_name, s.user_id, s.events) == ("s1", "app", "u", [])
    # temp: keys are dropped at creation (ADK's extract_state_delta), None is kept,
    # and the app's existing state shows through.
    assert s.state == {"app:tier": "gold", "user:lang": "fr", "topic": None}
    assert abs(s.last_update_time - datetime.now(UTC).timestamp()) < 60


async def test_create_without_an_id_generates_one(both: BaseSessionService) -> None:
    first = await both.create_session(app_name="app", user_id="u")
    second = await both.create_session(app_name="app", user_id="u", session_id="")
    assert first.id and second.id and first.id != second.id


async def test_create_strips_the_session_id(both: BaseSessionService) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="  s1 ")
    assert s.id == "s1"
    assert await both.get_session(app_name="app", user_id="u", session_id=" s1") is not None


async def test_create_with_a_taken_id_raises_adks_already_exists(
    ab: Abathur, service: AbathurSessionService
) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s1")
    async with assert_unchanged(ab):
        with pytest.raises(AlreadyExistsError):
            await service.create_session(
                app_name="app", user_id="u", session_id="s1", state={"app:x": 1}
            )


async def test_divergence_session_ids_are_unique_across_users(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # ADK keys sessions by (app, user, id), so in memory two users may both own
    # "s1". abathur's session id is the primary key of one database: the second
    # create is refused, and the first owner's session stays theirs alone.
    memory = InMemorySessionService()
    await memory.create_session(app_name="app", user_id="u", session_id="s1")
    await memory.create_session(app_name="app", user_id="v", session_id="s1")

    await service.create_session(app_name="app", user_id="u", session_id="s1")
    async with assert_unchanged(ab):
        with pytest.raises(AlreadyExistsError):
            await service.create_session(app_name="app", user_id="v", session_id="s1")
    assert await service.get_session(app_name="app", user_id="v", session_id="s1") is None
    assert await service.get_session(app_name="other", user_id="u", session_id="s1") is None


async def test_divergence_invalid_ids_are_refused_on_create(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # The in-memory service takes any string; abathur ids are 1..256 characters
    # without control characters or padding (the same rule as its own API).
    for kwargs in (
        {"app_name": "a\nb", "user_id": "u"},
        {"app_name": "a", "user_id": " u"},
        {"app_name": "a", "user_id": "u", "session_id": "x" * 257},
        {"app_name": "a", "user_id": "u", "state": {" padded": 1}},
        {"app_name": "a", "user_id": "u", "state": {"app:": 1}},
    ):
        async with assert_unchanged(ab):
            with pytest.raises(errors.InvalidIdError) as ei:
                await service.create_session(**kwargs)
        assert ei.value.code == "invalid_id"
        assert isinstance(ei.value, ValueError)


async def test_divergence_state_values_are_stored_in_their_json_form(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # The in-memory service keeps Python objects as given; a store keeps JSON.
    # As ADK's DatabaseSessionService/SqliteSessionService do, rich values are
    # stored as their JSON form; values with none are refused, not mangled.
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    kept = await InMemorySessionService().create_session(
        app_name="a", user_id="u", state={"when": when}
    )
    assert kept.state == {"when": when}
    s = await service.create_session(
        app_name="a", user_id="u", state={"when": when, "tags": ("x", "y")}
    )
    assert s.state == {"when": "2026-01-02T03:04:05Z", "tags": ["x", "y"]}
    async with assert_unchanged(ab):
        with pytest.raises(errors.ValueNotSerializableError) as ei:
            await service.create_session(app_name="a", user_id="u", state={"f": object()})
    assert ei.value.code == "invalid_json"


# --- get --------------------------------------------------------------------------------------


async def test_get_a_missing_session_returns_none(both: BaseSessionService) -> None:
    await both.create_session(app_name="app", user_id="u", session_id="s1")
    assert await both.get_session(app_name="app", user_id="u", session_id="nope") is None
    assert await both.get_session(app_name="app", user_id="v", session_id="s1") is None
    assert await both.get_session(app_name="zzz", user_id="u", session_id="s1") is None


async def test_get_with_ids_that_cannot_exist_returns_none(service: AbathurSessionService) -> None:
    for app, user, sid in (
        ("", "u", "s"),
        ("a", "u\x00", "s"),
        ("a", "u", "\t"),
        ("a", "u", "x" * 300),
    ):
        assert await service.get_session(app_name=app, user_id=user, session_id=sid) is None


async def events_seen(service: BaseSessionService, config: GetSessionConfig | None) -> list[str]:
    s = await service.get_session(app_name="app", user_id="u", session_id="s1", config=config)
    assert s is not None
    return [e.id for e in s.events]


@pytest.mark.parametrize(
    ("num", "after", "expected"),
    [
        (None, None, ["e0", "e1", "e2", "e3", "e4"]),
        (0, None, []),
        (2, None, ["e3", "e4"]),
        (9, None, ["e0", "e1", "e2", "e3", "e4"]),
        (None, T0 + 2, ["e2", "e3", "e4"]),  # >= : the event at exactly T0+2 is in
        (None, T0 + 2.000001, ["e3", "e4"]),
        (None, T0 + 99, []),
        (None, T0 - 1, ["e0", "e1", "e2", "e3", "e4"]),
        (2, T0 + 1, ["e3", "e4"]),
        (9, T0 + 3, ["e3", "e4"]),
        (0, T0, []),
        (None, -math.inf, ["e0", "e1", "e2", "e3", "e4"]),
        (None, math.inf, []),
    ],
)
async def test_get_session_config(
    both: BaseSessionService, num: int | None, after: float | None, expected: list[str]
) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="s1")
    for n in range(5):
        await both.append_event(s, ev(f"e{n}", T0 + n))
    config = GetSessionConfig(num_recent_events=num, after_timestamp=after)
    assert await events_seen(both, config) == expected


def test_get_session_config_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="num_recent_events"):
        GetSessionConfig(num_recent_events=-1)


async def test_divergence_after_timestamp_filters_out_of_order_events(
    service: AbathurSessionService,
) -> None:
    # With timestamps going backwards, ADK's in-memory service cuts the list
    # after the newest event older than the bound (it walks back from the end);
    # abathur, like ADK's database services, keeps every event at or after it.
    memory = InMemorySessionService()
    results = []
    for svc in (memory, service):
        s = await svc.create_session(app_name="app", user_id="u", session_id="s1")
        for event_id, ts in (("a", T0 + 5), ("b", T0 + 1), ("c", T0 + 6)):
            await svc.append_event(s, ev(event_id, ts))
        results.append(await events_seen(svc, GetSessionConfig(after_timestamp=T0 + 3)))
    assert results == [["c"], ["a", "c"]]


# --- events round-trip --------------------------------------------------------------------------


async def test_an_event_reloads_equal_to_the_original(
    backend: BackendHandle, service: AbathurSessionService
) -> None:
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    event = rich_event()
    original = event.model_copy(deep=True)
    returned = await service.append_event(s, event)
    assert returned == original
    assert s.events == [original]
    again = await service.get_session(app_name="app", user_id="u", session_id="s1")
    assert again.events == [original]
    reloaded = again.events[0]
    assert reloaded.content.parts[1].inline_data.data == bytes(range(256)) * 4
    assert reloaded.content.parts[4].thought_signature == b"\x00\xffsig"
    assert reloaded.actions.requested_tool_confirmations["fc-1"].payload == {
        "amount": 12.5,
        "currency": None,
    }
    assert reloaded.usage_metadata.total_token_count == 46
    assert reloaded.custom_metadata["big"] == 2**53 + 1
    assert reloaded.long_running_tool_ids == {"fc-1", "fc-2"}
    # And through a second service on the same file (a new process, in effect).
    async with AbathurSessionService(backend.target) as fresh:
        cold = await fresh.get_session(app_name="app", user_id="u", session_id="s1")
    assert cold.events == [original]


def _optional_fields_with_non_none_defaults() -> list[str]:
    """Fields in Event's model tree where None and "left out" would mean different things."""

    def allows_none(ann: Any) -> bool:
        if ann is Any or ann is None or ann is type(None):
            return True
        if typing.get_origin(ann) in (typing.Union, UnionType):
            return any(allows_none(a) for a in typing.get_args(ann))
        return False

    def models(ann: Any) -> list[type[BaseModel]]:
        found = [ann] if isinstance(ann, type) and issubclass(ann, BaseModel) else []
        for arg in typing.get_args(ann):
            found += models(arg)
        return found

    seen: set[type[BaseModel]] = set()
    bad: list[str] = []
    todo: list[type[BaseModel]] = [Event]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            has_default = field.default_factory is not None or field.default is not None
            if allows_none(field.annotation) and has_default and not field.is_required():
                bad.append(f"{model.__name__}.{name}")
            todo.extend(models(field.annotation))
    assert len(seen) > 20, "the walk found too few models to mean anything"
    return bad


def test_exclude_none_is_lossless_for_this_adk_version() -> None:
    # Events are stored as model_dump(mode="json", exclude_none=True), the form
    # ADK's own DatabaseSessionService stores. That drops None-valued fields, which
    # is lossless only while every optional field defaults to None. If an ADK
    # upgrade adds a field where None is not the default, this fails first.
    assert _optional_fields_with_non_none_defaults() == []


async def test_the_event_is_stored_as_json_in_abathurs_own_fields(
    ab: Abathur, service: AbathurSessionService
) -> None:
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    event = ev("e1", T0 + 0.125, {"topic": "x", "temp:t": 1}, author="agent")
    await service.append_event(s, event)
    (stored,) = await stored_events(ab, "s1")
    assert (stored.id, stored.author, stored.timestamp) == ("e1", "agent", T0 + 0.125)
    assert stored.state_delta == {"topic": "x"}
    assert stored.metadata["format"] == EVENT_FORMAT
    assert Event.model_validate(stored.content) == event


async def test_an_event_without_an_author_is_stored(
    service: AbathurSessionService, ab: Abathur
) -> None:
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    event = Event(author="", invocation_id="i")
    await service.append_event(s, event)
    again = await service.get_session(app_name="app", user_id="u", session_id="s1")
    assert again.events == [event] and again.events[0].author == ""
    assert (await stored_events(ab, "s1"))[0].author == "unknown"


async def test_last_update_time_is_the_last_events_timestamp_exactly(
    both: BaseSessionService,
) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="s1")
    for ts in (T0 + 0.1, T0 + 0.123456789012, 1_742_000_000.9999999):
        await both.append_event(s, ev(f"e{ts}", ts))
        assert s.last_update_time == ts
        again = await both.get_session(app_name="app", user_id="u", session_id="s1")
        assert again.last_update_time == ts
        assert again.last_update_time == again.events[-1].timestamp
        listed = (await both.list_sessions(app_name="app", user_id="u")).sessions
        assert [x.last_update_time for x in listed] == [ts]


async def test_events_written_through_abathur_read_as_text_events(
    ab: Abathur, service: AbathurSessionService
) -> None:
    s = await ab.sessions.create(app="app", user="u", session_id="s1")
    await ab.sessions.append_event(
        s.id,
        abathur.Event(id="n1", author="user", content="hello", state_delta={"k": 1}, timestamp=T0),
    )
    await ab.sessions.append_event(
        s.id, abathur.Event(id="n2", author="bot", content={"answer": 42}, timestamp=T0 + 1)
    )
    got = await service.get_session(app_name="app", user_id="u", session_id="s1")
    assert [(e.id, e.author, e.timestamp) for e in got.events] == [
        ("n1", "user", T0),
        ("n2", "bot", T0 + 1),
    ]
    assert got.events[0].content == text("hello")
    assert got.events[0].actions.state_delta == {"k": 1}
    assert got.events[1].content.role == "model"
    assert got.events[1].content.parts[0].text == '{"answer": 42}'
    assert got.state == {"k": 1}


# --- state --------------------------------------------------------------------------------------


async def test_scoped_state_follows_adks_rules(both: BaseSessionService) -> None:
    s1 = await both.create_session(
        app_name="app", user_id="u", session_id="s1", state={"plan": {"a": 1, "b": 2}}
    )
    s2 = await both.create_session(app_name="app", user_id="u", session_id="s2")
    s3 = await both.create_session(app_name="app", user_id="v", session_id="s3")
    delta = {
        "app:tier": "gold",
        "user:lang": "fr",
        "temp:scratch": [1],
        "plan": {"a": 9},
        "cleared": None,
    }
    event = ev("e1", T0, delta)
    await both.append_event(s1, event)
    # The temp: key reached the live session object only, and left the event.
    assert s1.state["temp:scratch"] == [1]
    assert event.actions.state_delta == {k: v for k, v in delta.items() if k != "temp:scratch"}

    async def state(user: str, sid: str) -> dict[str, Any]:
        return (await both.get_session(app_name="app", user_id=user, session_id=sid)).state

    # replace, not merge; None stored; temp: never persisted
    assert await state("u", "s1") == {
        "plan": {"a": 9},
        "cleared": None,
        "app:tier": "gold",
        "user:lang": "fr",
    }
    assert await state("u", "s2") == {"app:tier": "gold", "user:lang": "fr"}
    assert await state("v", "s3") == {"app:tier": "gold"}
    assert await both.get_user_state(app_name="app", user_id="u") == {"lang": "fr"}
    assert await both.get_user_state(app_name="app", user_id="v") == {}
    assert (s2.state, s3.state) == ({}, {})  # objects read earlier are snapshots


async def test_temp_state_reaches_later_agents_of_the_same_invocation(
    service: AbathurSessionService,
) -> None:
    # The reason ADK applies temp: to the live session: later steps of the same
    # run read it (output_key="temp:..." feeding the next agent). Run a real Runner.
    class TwoStep(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncIterator[Event]:
            yield Event(
                author=self.name,
                invocation_id=ctx.invocation_id,
                actions=EventActions(state_delta={"temp:draft": "d1", "turns": 1}),
            )
            seen = ctx.session.state.get("temp:draft")
            yield Event(
                author=self.name,
                invocation_id=ctx.invocation_id,
                content=types.Content(role="model", parts=[types.Part(text=f"{seen}")]),
            )

    root = TwoStep(name="w")
    runner = Runner(agent=root, app_name="app", session_service=service)
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    replies = [
        e.content.parts[0].text
        async for e in runner.run_async(user_id="u", session_id=s.id, new_message=text("go"))
        if e.content
    ]
    await runner.close()
    assert replies == ["d1"]
    stored = await service.get_session(app_name="app", user_id="u", session_id="s1")
    assert stored.state == {"turns": 1}
    assert [e.author for e in stored.events][:2] == ["user", "w"]
    assert all("temp:draft" not in e.actions.state_delta for e in stored.events)


async def test_divergence_invalid_state_keys_are_refused(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # abathur state keys follow its id rule; the in-memory service takes any string.
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    async with assert_unchanged(ab):
        with pytest.raises(errors.InvalidIdError) as ei:
            await service.append_event(s, ev("e1", T0, {"user:": 1}))
    assert ei.value.code == "invalid_id"
    assert s.events == []


# --- append -------------------------------------------------------------------------------------


async def test_partial_events_are_not_persisted(ab: Abathur, both: BaseSessionService) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="s1")
    partial = ev("p1", T0, {"k": 1, "temp:t": 1}, partial=True)
    if isinstance(both, AbathurSessionService):
        async with assert_unchanged(ab):
            assert await both.append_event(s, partial) is partial
    else:
        assert await both.append_event(s, partial) is partial
    assert s.events == [] and s.state == {}
    again = await both.get_session(app_name="app", user_id="u", session_id="s1")
    assert again.events == [] and again.state == {}


async def test_appending_to_a_missing_session_raises_adks_not_found(
    ab: Abathur, both: BaseSessionService
) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="s1")
    await both.delete_session(app_name="app", user_id="u", session_id="s1")
    with pytest.raises(SessionNotFoundError):
        await both.append_event(s, ev("e1", T0))
    ghost = Session(id="ghost", app_name="app", user_id="u")
    with pytest.raises(SessionNotFoundError):
        await both.append_event(ghost, ev("e2", T0))


async def test_a_stale_session_object_is_refused(
    ab: Abathur, service: AbathurSessionService
) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s1")
    first = await service.get_session(app_name="app", user_id="u", session_id="s1")
    second = await service.get_session(app_name="app", user_id="u", session_id="s1")
    await service.append_event(first, ev("e1", T0))
    async with assert_unchanged(ab):
        with pytest.raises(StaleSessionError, match="stale"):
            await service.append_event(second, ev("e2", T0 + 1, {"app:k": 1}))
    assert second.events == []
    # Re-reading gives a fresh object that appends fine.
    fresh = await service.get_session(app_name="app", user_id="u", session_id="s1")
    await service.append_event(fresh, ev("e2", T0 + 1))
    assert [e.id for e in await stored_events(ab, "s1")] == ["e1", "e2"]


async def test_two_racing_stale_writers_exactly_one_wins(
    ab: Abathur, service: AbathurSessionService
) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s1")
    for round_no in range(5):
        writers = [
            await service.get_session(app_name="app", user_id="u", session_id="s1")
            for _ in range(2)
        ]
        results = await asyncio.gather(
            *(
                service.append_event(w, ev(f"r{round_no}w{n}", T0 + round_no, {"who": n}))
                for n, w in enumerate(writers)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, Event)]
        losses = [r for r in results if isinstance(r, StaleSessionError)]
        assert (len(wins), len(losses)) == (1, 1), results
    stored = await stored_events(ab, "s1")
    assert len(stored) == 5


async def test_a_session_object_without_a_revision_uses_adks_timestamp_rule(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # A Session built by hand (or copied from another service) carries no
    # revision: like ADK's SqliteSessionService it is stale exactly when storage
    # was updated after its last_update_time.
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    await service.append_event(s, ev("e1", T0 + 10))
    behind = Session(id="s1", app_name="app", user_id="u", last_update_time=T0 + 9)
    async with assert_unchanged(ab):
        with pytest.raises(StaleSessionError):
            await service.append_event(behind, ev("e2", T0 + 11))
    level = Session(id="s1", app_name="app", user_id="u", last_update_time=T0 + 10)
    await service.append_event(level, ev("e2", T0 + 11))
    assert level.last_update_time == T0 + 11
    wrong_user = Session(id="s1", app_name="app", user_id="v", last_update_time=T0 + 99)
    with pytest.raises(SessionNotFoundError):
        await service.append_event(wrong_user, ev("e3", T0 + 12))


async def test_re_delivering_an_equal_event_is_a_no_op(
    ab: Abathur, both: BaseSessionService
) -> None:
    s = await both.create_session(app_name="app", user_id="u", session_id="s1")
    event = ev("e1", T0, {"n": 1})
    await both.append_event(s, event)
    copy = event.model_copy(deep=True)
    assert await both.append_event(s, copy) is copy
    again = await both.get_session(app_name="app", user_id="u", session_id="s1")
    assert [e.id for e in again.events] == ["e1"]


async def test_divergence_a_different_event_reusing_an_id_is_refused(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # In memory, two different events with one id are both kept; abathur's event
    # ids are unique per session, so the second is refused with ADK's error.
    memory = InMemorySessionService()
    m = await memory.create_session(app_name="app", user_id="u")
    await memory.append_event(m, ev("e1", T0))
    await memory.append_event(m, ev("e1", T0 + 1))
    assert len(m.events) == 2

    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    await service.append_event(s, ev("e1", T0))
    async with assert_unchanged(ab):
        with pytest.raises(AlreadyExistsError, match="e1"):
            await service.append_event(s, ev("e1", T0 + 1))


async def test_divergence_an_event_too_large_is_refused_until_the_limit_is_raised(
    backend: BackendHandle, tmp_path: Path
) -> None:
    # The in-memory service has no size limit; abathur caps every JSON value at
    # max_value_bytes (1 MiB by default), a setting.
    big = ev(
        "big",
        T0,
        content=types.Content(
            role="user",
            parts=[
                types.Part(
                    inline_data=types.Blob(
                        mime_type="application/octet-stream", data=b"\x01" * 20_000
                    )
                )
            ],
        ),
    )
    async with backend.open(max_value_bytes=16_384) as ab:
        service = AbathurSessionService(ab)
        s = await service.create_session(app_name="app", user_id="u", session_id="s1")
        async with assert_unchanged(ab):
            with pytest.raises(errors.ValueTooLargeError) as ei:
                await service.append_event(s, big)
        assert ei.value.code == "value_too_large"
    (tmp_path / "big").mkdir()  # a second fresh database on the same backend
    big_db = handle(backend.name, tmp_path / "big").target
    async with AbathurSessionService(big_db, max_value_bytes=65_536) as service:
        s = await service.create_session(app_name="app", user_id="u", session_id="s1")
        await service.append_event(s, big)
        again = await service.get_session(app_name="app", user_id="u", session_id="s1")
        assert again.events == [big]


async def test_divergence_a_terminated_session_takes_no_events(
    ab: Abathur, service: AbathurSessionService
) -> None:
    # ADK has no session lifecycle; abathur does, and ADK respects it.
    s = await service.create_session(app_name="app", user_id="u", session_id="s1")
    await ab.sessions.terminate("s1")
    fresh = await service.get_session(app_name="app", user_id="u", session_id="s1")
    async with assert_unchanged(ab):
        with pytest.raises(errors.InvalidTransitionError):
            await service.append_event(fresh, ev("e1", T0))
    assert s.events == []


# --- list, delete ---------------------------------------------------------------------------------


async def test_list_sessions_oldest_update_first_with_state_and_no_events(
    both: BaseSessionService,
) -> None:
    made = {}
    for user, sid in (("u", "a"), ("v", "b"), ("u", "c"), ("w", "d")):
        made[sid] = await both.create_session(
            app_name="app", user_id=user, session_id=sid, state={"own": sid}
        )
    await both.create_session(app_name="other", user_id="u", session_id="z")
    # Updates reorder them: c, then a, then d get events (b stays at creation).
    for n, sid in enumerate(("c", "a", "d")):
        await both.append_event(made[sid], ev(f"e{sid}", T0 + 1e9 + n, {"user:seen": n}))

    everyone = (await both.list_sessions(app_name="app")).sessions
    assert [s.id for s in everyone] == ["b", "c", "a", "d"]
    assert all(s.events == [] for s in everyone)
    assert {s.id: s.state for s in everyone} == {
        "a": {"own": "a", "user:seen": 1},
        "b": {"own": "b"},
        "c": {"own": "c", "user:seen": 1},
        "d": {"own": "d", "user:seen": 2},
    }
    assert [s.id for s in (await both.list_sessions(app_name="app", user_id="u")).sessions] == [
        "c",
        "a",
    ]
    assert (await both.list_sessions(app_name="app", user_id="nobody")).sessions == []
    assert (await both.list_sessions(app_name="nothing")).sessions == []


async def test_list_breaks_ties_by_user_then_id(both: BaseSessionService) -> None:
    for user, sid in (("v", "2"), ("u", "9"), ("u", "1")):
        s = await both.create_session(app_name="app", user_id=user, session_id=sid)
        await both.append_event(s, ev(f"e{sid}", T0))
    listed = (await both.list_sessions(app_name="app")).sessions
    assert [(s.user_id, s.id) for s in listed] == [("u", "1"), ("u", "9"), ("v", "2")]


async def test_a_listed_session_can_be_appended_to(service: AbathurSessionService) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s1")
    (listed,) = (await service.list_sessions(app_name="app", user_id="u")).sessions
    await service.append_event(listed, ev("e1", T0))
    assert listed.events[0].id == "e1"


async def test_delete_removes_the_session_and_is_quiet_when_absent(
    ab: Abathur, both: BaseSessionService
) -> None:
    await both.create_session(app_name="app", user_id="u", session_id="s1", state={"user:keep": 1})
    await both.delete_session(app_name="app", user_id="u", session_id="s1")
    assert await both.get_session(app_name="app", user_id="u", session_id="s1") is None
    assert (await both.list_sessions(app_name="app")).sessions == []
    assert await both.get_user_state(app_name="app", user_id="u") == {"keep": 1}
    await both.delete_session(app_name="app", user_id="u", session_id="s1")
    await both.delete_session(app_name="app", user_id="u", session_id="\x00")


async def test_delete_as_another_user_deletes_nothing(
    ab: Abathur, service: AbathurSessionService
) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="s1")
    async with assert_unchanged(ab):
        await service.delete_session(app_name="app", user_id="v", session_id="s1")
        await service.delete_session(app_name="zzz", user_id="u", session_id="s1")
    assert await service.get_session(app_name="app", user_id="u", session_id="s1")


async def test_get_user_state_without_any(both: BaseSessionService) -> None:
    assert await both.get_user_state(app_name="app", user_id="u") == {}


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.sqlite_only("checks the file's existence to show the service opens lazily")
async def test_a_service_on_a_path_opens_lazily_and_closes(db_path: Path) -> None:
    service = AbathurSessionService(db_path)
    assert not db_path.exists()
    await service.create_session(app_name="a", user_id="u", session_id="s1")
    assert db_path.exists()
    await service.close()
    assert service.is_closed
    with pytest.raises(errors.ClosedError) as ei:
        await service.get_session(app_name="a", user_id="u", session_id="s1")
    assert ei.value.code == "closed"
    async with Abathur.open(db_path) as ab:
        assert (await ab.sessions.get("s1")).app == "a"


async def test_closing_a_service_leaves_a_given_abathur_open(ab: Abathur) -> None:
    service = AbathurSessionService(ab)
    await service.create_session(app_name="a", user_id="u", session_id="s1")
    await service.close()
    assert not ab.is_closed
    assert (await ab.sessions.get("s1")).user == "u"

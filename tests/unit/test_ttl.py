"""A ttl is seconds or a datetime.timedelta (issue 12): ``ttl=timedelta(minutes=5)``
used to be refused. Both spellings write the same expiry; a bad duration is a typed
error that leaves the file as it was."""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest

from abathur import Abathur, InvalidInputError
from tests.backends import BackendHandle
from tests.helpers import assert_unchanged


async def test_a_timedelta_ttl_is_its_seconds(ab: Abathur) -> None:
    before = time.time()
    m = await ab.memory.put("user:alice", "note", "call back", ttl=timedelta(minutes=5))
    assert m.expires_at is not None
    assert before + 300 <= m.expires_at <= time.time() + 300
    seconds = await ab.memory.put("user:alice", "other", "x", ttl=300)
    assert seconds.expires_at is not None
    assert abs((seconds.expires_at - seconds.updated_at) - (m.expires_at - m.updated_at)) < 1e-6


async def test_a_timedelta_ttl_expires(ab: Abathur) -> None:
    await ab.memory.put("user:alice", "note", "soon gone", ttl=timedelta(milliseconds=50))
    assert await ab.memory.get("user:alice", "note") is not None
    time.sleep(0.1)
    assert await ab.memory.get("user:alice", "note") is None


@pytest.mark.parametrize(
    "ttl",
    [timedelta(0), timedelta(seconds=-1), timedelta(days=-3), "300", [300]],
)
async def test_a_bad_duration_is_refused_and_changes_nothing(ab: Abathur, ttl: object) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(InvalidInputError) as caught:
            await ab.memory.put("user:alice", "note", "x", ttl=ttl)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_input"
    assert "ttl must be" in caught.value.message


async def test_the_largest_timedelta_fits(ab: Abathur) -> None:
    m = await ab.memory.put("user:alice", "note", "for ever, nearly", ttl=timedelta.max)
    assert m.expires_at is not None and m.expires_at > time.time() + 10**13
    assert (await ab.memory.get("user:alice", "note")) is not None


async def test_the_adk_service_takes_a_timedelta_ttl(backend: BackendHandle) -> None:
    pytest.importorskip("google.adk")
    from google.adk.events import Event
    from google.genai import types

    from abathur.integrations.adk import AbathurMemoryService, namespace_for

    async with backend.open(embedder="none") as ab:
        memory = AbathurMemoryService(ab)
        said = types.Content(role="user", parts=[types.Part(text="call me back")])
        await memory.add_events_to_memory(
            app_name="a",
            user_id="u",
            events=[Event(id="e1", author="user", content=said)],
            custom_metadata={"ttl": timedelta(hours=1)},
        )
        m = await ab.memory.get(namespace_for("a", "u"), "e1")
        assert m is not None and m.expires_at is not None
        assert abs(m.expires_at - m.updated_at - 3600) < 1e-6
        with pytest.raises(InvalidInputError):
            await memory.add_events_to_memory(
                app_name="a",
                user_id="u",
                events=[Event(id="e2", author="user", content=said)],
                custom_metadata={"ttl": timedelta(0)},
            )


async def test_a_cost_report_takes_a_timedelta_since(ab: Abathur) -> None:
    await ab.memory.put("user:alice", "note", "the same text")
    await ab.embeddings.drain()
    by_text = await ab.costs.report(since="2h")
    by_delta = await ab.costs.report(since=timedelta(hours=2))
    assert by_delta.total.texts == by_text.total.texts == 1
    assert abs((by_delta.until - by_delta.since) - 7200) < 1e-6


@pytest.mark.parametrize("since", [timedelta(0), timedelta(hours=-1), 10**400, math.inf])
async def test_a_bad_since_is_refused(ab: Abathur, since: object) -> None:
    with pytest.raises(InvalidInputError, match="since must be a positive duration"):
        await ab.costs.report(since=since)  # type: ignore[arg-type]

"""AbathurMemoryService against ADK's memory-service contract (google-adk 2.13.0).

The contract is ``BaseMemoryService``'s docstrings and what ADK's
``InMemoryMemoryService`` does; tests using ``both`` run against it and ours.
Deliberate differences are the ``test_divergence_*`` tests, each saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.adk", reason="the adk extra is not installed")

from google.adk.events import Event
from google.adk.memory import BaseMemoryService
from google.adk.memory.in_memory_memory_service import InMemoryMemoryService
from google.adk.memory.memory_entry import MemoryEntry
from google.adk.sessions import Session
from google.genai import types

from abathur import Abathur, errors
from abathur.integrations.adk import AbathurMemoryService, namespace_for
from tests.backends import BACKENDS, BackendHandle, handle
from tests.helpers import assert_unchanged

T0 = 1_742_000_000.0

TALK = {
    "e1": "We booked a ski chalet in Chamonix for February",
    "e2": "My daughter is allergic to peanuts",
    "e3": "Please send the invoice to the Lyon office",
}


@pytest.fixture
def memory(ab: Abathur) -> AbathurMemoryService:
    return AbathurMemoryService(ab)


@pytest.fixture(params=["in-memory", *(spec.name for spec in BACKENDS)])
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseMemoryService]:
    if request.param == "in-memory":
        yield InMemoryMemoryService()
        return
    async with handle(request.param, tmp_path, request).open(embed_worker=False) as ab:
        yield AbathurMemoryService(ab)


def said(words: str, role: str = "user") -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=words)])


def event(event_id: str, words: str | None, n: int = 0, **kw: Any) -> Event:
    return Event(
        id=event_id,
        author=kw.pop("author", "user"),
        invocation_id="inv",
        timestamp=T0 + n,
        content=None if words is None else said(words),
        **kw,
    )


def session(
    sid: str = "s1", app: str = "app", user: str = "alice", talk: dict[str, str] = TALK
) -> Session:
    return Session(
        id=sid,
        app_name=app,
        user_id=user,
        events=[event(k, v, n) for n, (k, v) in enumerate(talk.items())],
    )


async def ids(
    service: BaseMemoryService, query: str, app: str = "app", user: str = "alice"
) -> list[str]:
    found = await service.search_memory(app_name=app, user_id=user, query=query)
    return [m.id for m in found.memories]


# --- add_session_to_memory / search -----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ski chalet", ["e1"]),
        ("peanuts allergy", ["e2"]),
        ("invoice office", ["e3"]),
    ],
)
async def test_a_remembered_session_is_searchable(
    both: BaseMemoryService, query: str, expected: list[str]
) -> None:
    await both.add_session_to_memory(session())
    assert await ids(both, query) == expected


async def test_a_memory_entry_carries_the_event(memory: AbathurMemoryService) -> None:
    pic = types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG..."))
    content = types.Content(role="model", parts=[types.Part(text="Chamonix chalet photo"), pic])
    ev = Event(id="e9", author="planner", timestamp=T0 + 0.5, content=content, invocation_id="i")
    await memory.add_session_to_memory(
        Session(id="s1", app_name="app", user_id="alice", events=[ev])
    )
    (entry,) = (
        await memory.search_memory(app_name="app", user_id="alice", query="chalet photo")
    ).memories
    assert entry == MemoryEntry(
        id="e9",
        content=content,
        author="planner",
        timestamp=datetime.fromtimestamp(T0 + 0.5).isoformat(),
        custom_metadata={},
    )
    assert entry.content.parts[1].inline_data.data == b"\x89PNG..."


async def test_search_is_scoped_to_the_app_and_user(both: BaseMemoryService) -> None:
    await both.add_session_to_memory(session())
    assert await ids(both, "ski chalet", user="bob") == []
    assert await ids(both, "ski chalet", app="other") == []


async def test_scopes_with_colons_never_collide(memory: AbathurMemoryService) -> None:
    # Namespaces are colon-separated; app "a:b" + user "c" and app "a" + user
    # "b:c" would both be "adk.a:b:c" without escaping.
    await memory.add_session_to_memory(session(app="a:b", user="c", talk={"x1": "ski chalet"}))
    await memory.add_session_to_memory(session(app="a", user="b:c", talk={"x2": "ski chalet"}))
    assert await ids(memory, "ski chalet", app="a:b", user="c") == ["x1"]
    assert await ids(memory, "ski chalet", app="a", user="b:c") == ["x2"]
    assert namespace_for("a:b", "c") != namespace_for("a", "b:c")


async def test_an_empty_query_finds_nothing(both: BaseMemoryService) -> None:
    await both.add_session_to_memory(session())
    assert await ids(both, "") == []
    assert await ids(both, "   ") == []


async def test_an_unrelated_query_finds_nothing(both: BaseMemoryService) -> None:
    await both.add_session_to_memory(session())
    assert await ids(both, "quantum chromodynamics lattice gauge") == []


async def test_adding_a_session_again_writes_nothing(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    await memory.add_session_to_memory(session())
    await ab.embeddings.drain()  # so the background worker changes nothing below
    async with assert_unchanged(ab):
        await memory.add_session_to_memory(session())
        await memory.add_events_to_memory(
            app_name="app", user_id="alice", events=session().events, session_id="s1"
        )
    stored = await ab.memory.list(namespace_for("app", "alice"))
    assert sorted(m.key for m in stored) == ["e1", "e2", "e3"]
    assert {m.version for m in stored} == {1}
    assert {m.type for m in stored} == {"episodic"}


async def test_a_growing_session_adds_only_its_new_events(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    s = session(talk={"e1": TALK["e1"]})
    await memory.add_session_to_memory(s)
    s.events.append(event("e2", TALK["e2"], 1))
    await memory.add_session_to_memory(s)
    stored = await ab.memory.list(namespace_for("app", "alice"))
    assert [(m.key, m.version, m.metadata["session_id"]) for m in stored] == [
        ("e1", 1, "s1"),
        ("e2", 1, "s1"),
    ]


async def test_divergence_events_without_text_are_not_stored(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    # The in-memory service keeps any event with parts; a text query can never
    # match one without text, so (like ADK's SqliteMemoryService) we skip them.
    call = types.Content(
        role="model", parts=[types.Part(function_call=types.FunctionCall(name="f", args={}))]
    )
    thought = types.Content(role="model", parts=[types.Part(text="hmm ski", thought=True)])
    s = Session(
        id="s1",
        app_name="app",
        user_id="alice",
        events=[
            event("none", None),
            Event(id="call", author="a", content=call),
            Event(id="thought", author="a", content=thought),
            event("blank", "   "),
        ],
    )
    async with assert_unchanged(ab):
        await memory.add_session_to_memory(s)


# --- add_events_to_memory, add_memory -----------------------------------------------------------


async def test_add_events_is_a_delta_with_session_and_options(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    await memory.add_events_to_memory(
        app_name="app",
        user_id="alice",
        events=[event("t1", "ski chalet booked")],
        session_id="s9",
        custom_metadata={"ttl": 3600, "metadata": {"topic": "travel"}, "stream_id": "ignored"},
    )
    await memory.add_events_to_memory(
        app_name="app", user_id="alice", events=[event("t2", "peanut allergy")]
    )
    (found,) = (
        await memory.search_memory(app_name="app", user_id="alice", query="ski chalet")
    ).memories
    assert found.custom_metadata == {"topic": "travel"}
    t1 = await ab.memory.get(namespace_for("app", "alice"), "t1")
    t2 = await ab.memory.get(namespace_for("app", "alice"), "t2")
    assert t1.metadata["session_id"] == "s9" and t2.metadata["session_id"] is None
    assert t1.expires_at == pytest.approx(t1.updated_at + 3600)
    assert t2.expires_at is None


@pytest.mark.parametrize(
    ("custom_metadata", "message"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": "1h"}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"metadata": ["x"]}, "metadata"),
        (["ttl"], "mapping"),
    ],
)
async def test_bad_options_are_refused(
    ab: Abathur, memory: AbathurMemoryService, custom_metadata: Any, message: str
) -> None:
    async with assert_unchanged(ab):
        with pytest.raises(errors.InvalidInputError, match=message) as ei:
            await memory.add_events_to_memory(
                app_name="app",
                user_id="alice",
                events=[event("t1", "ski")],
                custom_metadata=custom_metadata,
            )
    assert ei.value.code == "invalid_input"


async def test_invalid_ids_are_refused_on_writes_and_find_nothing(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    for kwargs in ({"app_name": "", "user_id": "u"}, {"app_name": "a", "user_id": "u\n"}):
        async with assert_unchanged(ab):
            with pytest.raises(errors.InvalidIdError) as ei:
                await memory.add_events_to_memory(events=[event("t1", "ski")], **kwargs)
        assert ei.value.code == "invalid_id"
        assert (await memory.search_memory(query="ski", **kwargs)).memories == []
    async with assert_unchanged(ab):
        with pytest.raises(errors.InvalidIdError):
            await memory.add_events_to_memory(
                app_name="a", user_id="u", events=[event(" padded", "ski")]
            )


async def test_divergence_add_memory_is_supported(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    # ADK's in-memory service raises NotImplementedError for add_memory (the base
    # class's default); abathur stores explicit entries as semantic memories.
    with pytest.raises(NotImplementedError):
        await InMemoryMemoryService().add_memory(app_name="app", user_id="alice", memories=[])

    fact = MemoryEntry(
        id="diet",
        content=said("Alice is vegetarian", "model"),
        author="agent",
        timestamp="2026-01-01T00:00:00",
        custom_metadata={"confidence": 0.9},
    )
    anonymous = MemoryEntry(content=said("Alice lives in Lyon"))
    await memory.add_memory(
        app_name="app",
        user_id="alice",
        memories=[fact, anonymous],
        custom_metadata={"metadata": {"origin": "profile"}},
    )
    (found,) = (
        await memory.search_memory(app_name="app", user_id="alice", query="vegetarian")
    ).memories
    assert found == fact.model_copy(
        update={"custom_metadata": {"origin": "profile", "confidence": 0.9}}
    )
    (where,) = (await memory.search_memory(app_name="app", user_id="alice", query="Lyon")).memories
    assert where.id and where.content == anonymous.content
    stored = await ab.memory.get(namespace_for("app", "alice"), "diet")
    assert (stored.type, stored.value) == ("semantic", "Alice is vegetarian")

    # The same id again: unchanged is a no-op, changed is a new version.
    await ab.embeddings.drain()  # so the background worker changes nothing below
    async with assert_unchanged(ab):
        await memory.add_memory(
            app_name="app",
            user_id="alice",
            memories=[fact],
            custom_metadata={"metadata": {"origin": "profile"}},
        )
    vegan = fact.model_copy(update={"content": said("Alice is vegan", "model")})
    await memory.add_memory(app_name="app", user_id="alice", memories=[vegan])
    history = await ab.memory.history(namespace_for("app", "alice"), "diet")
    assert [m.value for m in history] == ["Alice is vegetarian", "Alice is vegan"]


# --- delete_memory ------------------------------------------------------------------------------


async def test_delete_memory_forgets_it_for_good(both: BaseMemoryService) -> None:
    s = session()
    await both.add_session_to_memory(s)
    await both.delete_memory(app_name="app", user_id="alice", memory_id="e1")
    assert await ids(both, "ski chalet") == []
    # Re-adding the session does not bring it back (ADK: "prevent re-ingestion").
    await both.add_session_to_memory(s)
    assert await ids(both, "ski chalet") == []
    assert await ids(both, "peanuts") == ["e2"]


async def test_delete_memory_of_nothing_does_nothing(ab: Abathur, both: BaseMemoryService) -> None:
    await both.add_session_to_memory(session())
    await both.delete_memory(app_name="app", user_id="alice", memory_id=None)
    await both.delete_memory(app_name="app", user_id="alice", memory_id="nope")
    await both.delete_memory(app_name="app", user_id="bob", memory_id="e1")
    assert await ids(both, "ski chalet") == ["e1"]


async def test_a_deleted_memory_can_be_restored_through_abathur(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    await memory.add_session_to_memory(session())
    await memory.delete_memory(app_name="app", user_id="alice", memory_id="e1")
    await ab.memory.restore(namespace_for("app", "alice"), "e1")
    assert await ids(memory, "ski chalet") == ["e1"]


async def test_an_explicit_add_brings_a_deleted_memory_back(memory: AbathurMemoryService) -> None:
    fact = MemoryEntry(id="m1", content=said("parking spot 42"))
    await memory.add_memory(app_name="app", user_id="alice", memories=[fact])
    await memory.delete_memory(app_name="app", user_id="alice", memory_id="m1")
    await memory.add_memory(app_name="app", user_id="alice", memories=[fact])
    assert await ids(memory, "parking spot") == ["m1"]


# --- relevance -----------------------------------------------------------------------------------

MORE = {
    "e4": "Alice is vegetarian",
    "e5": "the wifi password is otter",
    "e6": "the cat sleeps on the mat",
}


async def remembered(ab: Abathur, memory: AbathurMemoryService) -> None:
    """TALK and MORE remembered and embedded, so search runs hybrid."""
    await memory.add_session_to_memory(session(talk={**TALK, **MORE}))
    report = await ab.embeddings.drain()
    assert report.remaining == 0
    found = await ab.memory.search("ski", prefix=namespace_for("app", "alice"))
    assert found.mode == "hybrid"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ski chalet", ["e1"]),
        ("winter holiday in the Alps", ["e1"]),
        ("Chamonix", ["e1"]),
        ("network credentials", ["e5"]),
    ],
)
async def test_hybrid_search_finds_by_meaning(
    ab: Abathur, memory: AbathurMemoryService, query: str, expected: list[str]
) -> None:
    await remembered(ab, memory)
    assert await ids(memory, query) == expected


async def test_divergence_a_query_sharing_no_word_still_finds_by_meaning(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    # ADK's in-memory service matches words only; abathur's hybrid search also
    # matches meaning ("eat meat" ~ "vegetarian").
    in_memory = InMemoryMemoryService()
    await in_memory.add_session_to_memory(session(talk={**TALK, **MORE}))
    assert await ids(in_memory, "does she eat meat") == []
    await remembered(ab, memory)
    assert await ids(memory, "does she eat meat") == ["e4"]


@pytest.mark.parametrize(
    "query",
    [
        "quantum chromodynamics lattice gauge",
        "weather tomorrow",
        "what is the plan",
    ],
)
async def test_divergence_unrelated_queries_find_nothing(
    ab: Abathur, memory: AbathurMemoryService, query: str
) -> None:
    # The relevance threshold: hybrid ranking alone returns the k "least bad"
    # memories for any query, and ADK's in-memory service returns every memory
    # sharing a word ("is", "the"); below min_similarity abathur returns none.
    await remembered(ab, memory)
    assert await ids(memory, query) == []
    if query == "what is the plan":
        in_memory = InMemoryMemoryService()
        await in_memory.add_session_to_memory(session(talk={**TALK, **MORE}))
        assert len(await ids(in_memory, query)) >= 3


async def test_min_similarity_sets_the_bar(ab: Abathur) -> None:
    strict = AbathurMemoryService(ab, min_similarity=0.95)
    await remembered(ab, strict)
    assert await ids(strict, "ski chalet") == []
    lax = AbathurMemoryService(ab, min_similarity=-1.0)
    assert "e1" in await ids(lax, "weather tomorrow")


async def test_a_memory_not_embedded_yet_is_found_by_its_words(backend: BackendHandle) -> None:
    # The worker is off, so the second session's events have no vectors when
    # searched: a hit outside the vector ranking counts on its keyword match
    # while embeddings are pending.
    async with backend.open(embed_worker=False) as ab:
        memory = AbathurMemoryService(ab)
        await memory.add_session_to_memory(session(talk=TALK))
        await ab.embeddings.drain()
        await memory.add_session_to_memory(session("s2", talk={"n1": "my passport expires soon"}))
        assert (await ab.embeddings.status()).queue_depth > 0
        assert await ids(memory, "passport") == ["n1"]
        await ab.embeddings.drain()
        assert await ids(memory, "passport") == ["n1"]


async def test_without_an_embedder_any_shared_word_counts(tmp_path: Path) -> None:
    # Search degrades to keyword: then ADK's in-memory rule applies, a shared
    # word is enough, and the two services agree, except on stop words.
    in_memory = InMemoryMemoryService()
    await in_memory.add_session_to_memory(session(talk={**TALK, **MORE}))
    async with AbathurMemoryService(tmp_path / "a.db", embedder="none") as memory:
        await memory.add_session_to_memory(session(talk={**TALK, **MORE}))
        for query in ("ski chalet", "does she eat meat", "peanuts invoice otter"):
            assert sorted(await ids(memory, query)) == sorted(await ids(in_memory, query))
        # 'is' and 'the' are all that 'what is the plan' shares with e2..e6:
        # ADK's in-memory service counts them; abathur leaves stop words out.
        assert sorted(await ids(in_memory, "what is the plan")) == ["e2", "e3", "e4", "e5", "e6"]
        assert await ids(memory, "what is the plan") == []
        # A query of stop words alone still searches them.
        assert sorted(await ids(memory, "is the")) == ["e2", "e3", "e4", "e5", "e6"]


# --- limits and lifecycle -----------------------------------------------------------------------


async def test_search_returns_at_most_max_results(ab: Abathur) -> None:
    memory = AbathurMemoryService(ab, max_results=3)
    talk = {f"m{n}": f"ski trip number {n}" for n in range(8)}
    await memory.add_session_to_memory(session(talk=talk))
    await ab.embeddings.drain()
    assert len(await ids(memory, "ski trip")) == 3


def test_options_are_checked(ab: Abathur, tmp_path: Path) -> None:
    for kwargs in (
        {"max_results": 0},
        {"max_results": 1001},
        {"max_results": 2.5},
        {"max_results": True},
        {"min_similarity": 1.5},
        {"min_similarity": "high"},
    ):
        with pytest.raises(errors.InvalidInputError) as ei:
            AbathurMemoryService(ab, **kwargs)
        assert ei.value.code == "invalid_input"
    uri = f"abathur://{tmp_path}/a.db?max_results=3&min_similarity=0.5&embedder=none"
    memory = AbathurMemoryService(uri=uri)
    assert (memory.max_results, memory.min_similarity, memory.settings.embedder) == (3, 0.5, "none")
    for bad in (
        f"abathur://{tmp_path}/a.db?max_results=many",
        f"abathur://{tmp_path}/a.db?min_similarity=0.5&min_similarity=0.6",
    ):
        with pytest.raises(errors.InvalidInputError):
            AbathurMemoryService(uri=bad)
    with pytest.raises(errors.InvalidInputError, match="both"):
        AbathurMemoryService(uri=f"abathur://{tmp_path}/a.db?max_results=3", max_results=4)
    assert not (tmp_path / "a.db").exists()


@pytest.mark.sqlite_only("checks the file's existence to show the service opens lazily")
async def test_a_memory_service_on_a_path_opens_lazily_and_closes(db_path: Path) -> None:
    memory = AbathurMemoryService(db_path)
    assert not db_path.exists()
    await memory.add_session_to_memory(session())
    await memory.close()
    with pytest.raises(errors.ClosedError):
        await memory.search_memory(app_name="app", user_id="alice", query="ski")
    async with AbathurMemoryService(db_path) as again:
        assert await ids(again, "ski chalet") == ["e1"]


def test_each_user_is_one_vector_partition() -> None:
    # abathur partitions vectors by a namespace's first two segments; the whole
    # (app, user) namespace being one partition keeps a user's search on that
    # user's vectors only, however many users the app has.
    from abathur.search import partition_of

    for app, user in (("helpdesk", "alice"), ("help.desk", "a.l:ice"), ("a:b", "c")):
        namespace = namespace_for(app, user)
        assert partition_of(namespace) == namespace


async def test_memories_written_through_abathur_are_found_as_text(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    await ab.memory.put(namespace_for("app", "alice"), "pref", "Alice likes window seats")
    await ab.memory.put(namespace_for("app", "alice"), "pets", {"dog": "Rex"})
    (found,) = (
        await memory.search_memory(app_name="app", user_id="alice", query="window seats")
    ).memories
    assert (found.id, found.content.parts[0].text, found.author) == (
        "pref",
        "Alice likes window seats",
        None,
    )
    (rex,) = (await memory.search_memory(app_name="app", user_id="alice", query="Rex")).memories
    assert rex.content.parts[0].text == '{"dog": "Rex"}'


# --- read-your-writes (issue 12) ----------------------------------------------------------------


async def test_search_right_after_add_finds_it_by_vector(
    ab: Abathur, memory: AbathurMemoryService
) -> None:
    # The bundled model, the worker off (``ab``), nothing drained: the query
    # shares no word with e1 ("in" is a stop word), so only the vector side
    # can find it, and it must see what add_session_to_memory just wrote.
    await memory.add_session_to_memory(session(talk=TALK))
    assert (await ab.embeddings.status()).queue_depth == 3
    assert await ids(memory, "winter holiday in the Alps") == ["e1"]
    assert (await ab.embeddings.status()).queue_depth == 0


async def test_search_right_after_add_with_the_worker_running(tmp_path: Path) -> None:
    # As an agent runs it: a service on a path, the background worker on.
    async with AbathurMemoryService(tmp_path / "a.db") as memory:
        await memory.add_session_to_memory(session(talk=TALK))
        assert await ids(memory, "winter holiday in the Alps") == ["e1"]
        await memory.add_session_to_memory(session("s2", talk={"n1": "my passport expires"}))
        assert await ids(memory, "travel documents") == ["n1"]

"""AbathurStore as the ``store=`` of compiled LangGraph graphs, from sync and async code.

No LLM: the nodes write and read memories through the store LangGraph hands
them (the ``store`` argument, or ``get_store()``).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the langgraph extra is not installed")

from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from abathur import Abathur, errors
from abathur.integrations.langgraph import AbathurStore
from tests.backends import BackendHandle
from tests.embedders import DIMS, toy_embed


class State(TypedDict):
    user: str
    said: str
    recalled: list[str]


def build(nodes: tuple[object, object], store: BaseStore):
    remember, recall = nodes
    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder.compile(store=store)


async def aremember(state: State, *, store: BaseStore) -> dict[str, object]:
    turn = len(await store.asearch(("memories", state["user"]), limit=100))
    await store.aput(("memories", state["user"]), f"m{turn}", {"text": state["said"]})
    return {}


async def arecall(state: State) -> dict[str, object]:
    store = get_store()
    found = await store.asearch(("memories", state["user"]), query="what drink", limit=1)
    everything = await store.asearch(("memories", state["user"]), limit=100)
    return {"recalled": [i.value["text"] for i in found + everything]}


def remember(state: State, *, store: BaseStore) -> dict[str, object]:
    turn = len(store.search(("memories", state["user"]), limit=100))
    store.put(("memories", state["user"]), f"m{turn}", {"text": state["said"]})
    return {}


def recall(state: State) -> dict[str, object]:
    store = get_store()
    found = store.search(("memories", state["user"]), query="what drink", limit=1)
    everything = store.search(("memories", state["user"]), limit=100)
    return {"recalled": [i.value["text"] for i in found + everything]}


INDEX = {"dims": DIMS, "embed": toy_embed, "fields": ["text"]}


async def test_an_async_graph_writes_and_reads_memories(ab: Abathur) -> None:
    store = AbathurStore(ab, index={"fields": ["text"]})
    graph = build((aremember, arecall), store)
    await graph.ainvoke({"user": "alice", "said": "I love green tea", "recalled": []})
    out = await graph.ainvoke({"user": "alice", "said": "I work nights", "recalled": []})
    assert out["recalled"] == ["I love green tea", "I love green tea", "I work nights"]
    other = await graph.ainvoke({"user": "bob", "said": "I drink coffee", "recalled": []})
    assert other["recalled"] == ["I drink coffee", "I drink coffee"]
    # What the graph stored is in abathur, for its search, CLI and backups.
    assert [m.namespace for m in await ab.memory.list("langgraph:memories")] == [
        "langgraph:memories:alice",
        "langgraph:memories:alice",
        "langgraph:memories:bob",
    ]


def test_a_sync_graph_writes_and_reads_memories(tmp_path: Path) -> None:
    with AbathurStore(tmp_path / "agent.db", index=INDEX) as store:
        graph = build((remember, recall), store)
        graph.invoke({"user": "alice", "said": "tea with milk, no sugar", "recalled": []})
        out = graph.invoke({"user": "alice", "said": "the dog is called Rex", "recalled": []})
    assert out["recalled"] == [
        "tea with milk, no sugar",
        "tea with milk, no sugar",
        "the dog is called Rex",
    ]
    # The file outlives the store.
    with AbathurStore(tmp_path / "agent.db", index=INDEX) as again:
        assert len(again.search(("memories", "alice"))) == 2


async def test_sync_nodes_under_ainvoke_use_the_sync_api_from_worker_threads(
    ab: Abathur,
) -> None:
    # LangGraph runs sync nodes in threads; their sync calls reach the loop ab lives on.
    store = AbathurStore(ab)
    graph = build((remember, recall), store)
    out = await graph.ainvoke({"user": "carol", "said": "likes jazz", "recalled": []})
    assert out["recalled"] == ["likes jazz", "likes jazz"]  # no index: the query is ignored


def test_the_sync_api_works_from_plain_code(tmp_path: Path) -> None:
    with AbathurStore(tmp_path / "a.db") as store:
        store.put(("docs",), "1", {"kind": "note", "n": 1})
        store.put(("docs", "sub"), "2", {"kind": "task", "n": 2})
        assert store.get(("docs",), "1").value == {"kind": "note", "n": 1}
        assert [i.key for i in store.search(("docs",), filter={"n": {"$gt": 1}})] == ["2"]
        assert store.list_namespaces(prefix=("docs",)) == [("docs",), ("docs", "sub")]
        store.delete(("docs",), "1")
        assert store.get(("docs",), "1") is None
        assert store.list_namespaces(max_depth=1) == [("docs",)]


def test_a_store_serves_several_event_loops_one_after_another(tmp_path: Path) -> None:
    store = AbathurStore(tmp_path / "a.db")
    try:
        asyncio.run(store.aput(("n",), "k", {"v": 1}))
        assert asyncio.run(store.aget(("n",), "k")).value == {"v": 1}
        assert store.get(("n",), "k").value == {"v": 1}
    finally:
        store.close()


async def test_a_path_store_works_from_any_loop_and_thread(tmp_path: Path) -> None:
    async with AbathurStore(tmp_path / "a.db") as store:
        await store.aput(("n",), "k", {"v": 1})
        await asyncio.to_thread(store.put, ("n",), "k2", {"v": 2})
        # Even the sync API from this very loop: the database lives on the store's own loop.
        assert store.get(("n",), "k2").value == {"v": 2}
        results = await asyncio.gather(*(store.aget(("n",), k) for k in ("k", "k2", "k3")))
        assert [None if r is None else r.value for r in results] == [{"v": 1}, {"v": 2}, None]


async def test_the_sync_api_on_the_loop_of_a_given_abathur_raises_instead_of_hanging(
    ab: Abathur,
) -> None:
    store = AbathurStore(ab)
    with pytest.raises(asyncio.InvalidStateError, match=r"await store\.abatch"):
        store.put(("n",), "k", {"v": 1})
    with pytest.raises(asyncio.InvalidStateError):
        store.get(("n",), "k")
    # From another thread, while this loop awaits, it works.
    await asyncio.to_thread(store.put, ("n",), "k", {"v": 1})
    assert (await store.aget(("n",), "k")).value == {"v": 1}


async def test_a_given_abathur_is_reached_from_another_event_loop(ab: Abathur) -> None:
    store = AbathurStore(ab)
    await store.aput(("n",), "k", {"v": 1})

    def elsewhere() -> object:
        return asyncio.run(store.aget(("n",), "k"))

    assert (await asyncio.to_thread(elsewhere)).value == {"v": 1}


async def test_a_given_abathur_needs_its_running_loop(ab: Abathur) -> None:
    with pytest.raises(errors.InvalidInputError, match="event loop") as ei:
        await asyncio.to_thread(AbathurStore, ab)
    assert ei.value.code == "invalid_input"


async def test_closing_a_store(ab: Abathur, tmp_path: Path) -> None:
    given = AbathurStore(ab)
    await given.aclose()
    assert given.is_closed and not ab.is_closed  # the caller's Abathur stays open
    with pytest.raises(errors.ClosedError):
        await given.aget(("n",), "k")
    owned = AbathurStore(tmp_path / "own.db")
    await owned.aput(("n",), "k", {"v": 1})
    name = f"abathur-langgraph {tmp_path / 'own.db'}"
    assert name in {t.name for t in threading.enumerate()}
    await owned.aclose()
    await owned.aclose()
    with pytest.raises(errors.ClosedError):
        owned.get(("n",), "k")
    assert name not in {t.name for t in threading.enumerate()}
    never_used = AbathurStore(tmp_path / "never.db")
    never_used.close()
    assert not (tmp_path / "never.db").exists()


# --- the docs ---------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "langgraph.md"


def test_the_docs_example_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    (code, *_rest) = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), flags=re.S)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    claimed = re.findall(r"print\(.*?\)  # (.*)", code)
    printed = [line for line in done.stdout.splitlines() if line in claimed]
    assert claimed and printed == claimed, done.stdout


def test_a_given_abathur_whose_loop_stopped_raises_instead_of_hanging(
    backend: BackendHandle,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        ab = loop.run_until_complete(backend.open(embedder="none"))

        async def make() -> AbathurStore:
            return AbathurStore(ab)

        store = loop.run_until_complete(make())
        # The loop exists but runs nothing now: a call handed to it would never return.
        with pytest.raises(errors.ClosedError, match="not running"):
            store.get(("n",), "k")
        with pytest.raises(errors.ClosedError, match="not running"):
            asyncio.run(store.aget(("n",), "k"))
        loop.run_until_complete(store.aput(("n",), "k", {"v": 1}))
        assert loop.run_until_complete(store.aget(("n",), "k")).value == {"v": 1}
        loop.run_until_complete(ab.close())
    finally:
        loop.close()

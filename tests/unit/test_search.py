"""memory.search: keyword (FTS5 BM25), vector (binary first pass + exact rescoring) and
hybrid (RRF); filters applied before ranking, so a filter matching 1% of 10k memories
still returns k hits; hostile query text; TTL, tombstones and superseded versions never
returned; the mode actually used is reported.

The ``embedder`` fixture is the WordHashEmbedder test double (see
tests/unit/test_embedding_queue.py); every test here runs on the bundled MiniLM by
returning ``BundledEmbedder()`` from it instead (slower: the 10k corpus takes ~15 s to
embed), except the exact-score assertions that name the double's vectors.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from abathur import (
    Abathur,
    InvalidIdError,
    InvalidInputError,
    InvalidMemoryTypeError,
    InvalidNamespaceError,
    SearchHit,
    SearchResult,
)
from abathur.backends.sqlite.search import scope_tokens
from abathur.backends.sqlite.vectors import SQL_CHUNKS_OF_PARTITION, vector_candidates
from abathur.embeddings.bundled import BundledEmbedder
from abathur.memory import MEMORY_KIND, _Indexing, _write_version
from abathur.search import VectorFilter, fts_query, partition_of, rrf
from tests.backends import BACKENDS, BackendHandle, handle
from tests.embedders import WordHashEmbedder
from tests.helpers import assert_unchanged

MODES = ("keyword", "vector", "hybrid")


@pytest.fixture
def embedder() -> WordHashEmbedder:
    return WordHashEmbedder()


@pytest.fixture
async def sab(backend: BackendHandle, embedder):
    async with backend.open(embedder=embedder, embed_worker=False) as opened:
        yield opened


def keys(result: SearchResult) -> list[str]:
    return [hit.key for hit in result.hits]


async def put_all(ab: Abathur, items: dict[str, str], namespace: str = "user:alice") -> None:
    for key, text in items.items():
        await ab.memory.put(namespace, key, text)
    await ab.embeddings.drain()


FACTS = {
    "language": "Alice speaks French at home",
    "drink": "Alice drinks green tea every morning",
    "pet": "Alice has a cat named Felix",
    "city": "Alice lives in Lyon near the river",
}


# --------------------------------------------------------------------------- the three modes


@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_finds_the_best_match_and_says_which_mode(sab: Abathur, mode) -> None:
    await put_all(sab, FACTS)
    found = await sab.memory.search("green tea in the morning", prefix="user:alice", mode=mode)
    assert (found.mode, found.requested_mode, found.is_degraded) == (mode, mode, False)
    assert found.degraded_reason is None and found.query == "green tea in the morning"
    assert keys(found)[0] == "drink"
    hit = found.hits[0]
    assert isinstance(hit, SearchHit)
    assert (hit.namespace, hit.value, hit.type, hit.metadata, hit.version) == (
        "user:alice",
        FACTS["drink"],
        "semantic",
        {},
        1,
    )
    scores = [h.score for h in found.hits]
    assert scores == sorted(scores, reverse=True)


async def test_scores_per_mode(sab: Abathur, embedder) -> None:
    await put_all(sab, FACTS)
    vector = await sab.memory.search("cat Felix", prefix="user:alice", mode="vector", k=4)
    assert len(vector.hits) == 4  # every memory has a vector, k caps the list
    expected = np.dot(embedder.vector("cat Felix"), embedder.vector("pet: " + FACTS["pet"]))
    assert vector.hits[0].key == "pet"
    assert vector.hits[0].score == pytest.approx(expected, abs=1e-6)
    keyword = await sab.memory.search("cat Felix", prefix="user:alice", mode="keyword")
    assert keys(keyword) == ["pet"] and keyword.hits[0].score > 0
    hybrid = await sab.memory.search("cat Felix", prefix="user:alice", k=4)
    assert hybrid.hits[0].key == "pet"
    rrf_k = sab.settings.search_rrf_k
    assert hybrid.hits[0].score == pytest.approx(2 / (rrf_k + 1))  # first in both rankings


async def test_the_key_is_searchable(sab: Abathur) -> None:
    await put_all(sab, {"language": {"value": "French"}})
    for mode in MODES:
        assert keys(await sab.memory.search("language", prefix="user", mode=mode)) == ["language"]


async def test_a_new_memory_is_found_by_keyword_at_once_by_vector_after_embedding(
    sab: Abathur,
) -> None:
    await sab.memory.put("user:alice", "pet", "a cat named Felix")
    first = await sab.memory.search("Felix", prefix="user", mode="vector")
    assert (first.mode, first.degraded_reason, keys(first)) == (
        "keyword",
        "no vectors yet: nothing has been embedded in this file",
        ["pet"],
    )
    await sab.embeddings.drain()
    await sab.memory.put("user:alice", "dog", "a dog named Rex")
    assert keys(await sab.memory.search("Rex", prefix="user", mode="keyword")) == ["dog"]
    before = await sab.memory.search("Rex", prefix="user", mode="vector")
    assert (before.mode, keys(before)) == ("vector", ["pet"])
    await sab.embeddings.drain()
    after = await sab.memory.search("Rex", prefix="user", mode="vector")
    assert keys(after)[0] == "dog"


async def test_rrf_fuses_rankings() -> None:
    fused = rrf([[1, 2, 3], [3, 4]], k=60)
    assert [item for item, _ in fused] == [3, 1, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


# --------------------------------------------------------------------------- degradation


async def test_no_embedder_falls_back_to_keyword_and_says_so(backend: BackendHandle) -> None:
    async with backend.open(embedder="none") as ab:
        await put_all(ab, FACTS)
        for mode in ("vector", "hybrid"):
            found = await ab.memory.search("green tea", prefix="user:alice", mode=mode)
            assert (found.mode, found.requested_mode, found.is_degraded) == ("keyword", mode, True)
            assert found.degraded_reason == (
                "no embedder is configured (Settings.embedder is 'none')"
            )
            assert keys(found) == ["drink"]
        keyword = await ab.memory.search("green tea", prefix="user:alice", mode="keyword")
        assert (keyword.is_degraded, keyword.degraded_reason) == (False, None)


async def test_embedder_down_search_is_keyword_and_fast(sab: Abathur, embedder) -> None:
    await put_all(sab, FACTS)
    embedder.available = False
    embedder.delay_s = 0.2
    first = await sab.memory.search("green tea", prefix="user:alice")
    assert (first.mode, first.is_degraded) == ("keyword", True)
    assert first.degraded_reason == "the embedder is unavailable: test embedder switched off"
    started = time.perf_counter()
    again = await sab.memory.search("cat", prefix="user:alice")
    assert time.perf_counter() - started < 0.15, "a known-down embedder is not asked again"
    assert (again.mode, keys(again)) == ("keyword", ["pet"])


# --------------------------------------------------------------------------- hostile text


HOSTILE = [
    '"',
    '""',
    "AND",
    "OR",
    "NOT",
    "*",
    "tea*",
    "NEAR(",
    "NEAR(tea green, 2)",
    "^tea",
    "-tea",
    "+tea",
    "tea:",
    "key:tea",
    "{key}: tea",
    "(",
    ")",
    "'",
    "\\",
    "tea AND",
    "OR tea",
    "café",
    "thé vert",
    "茶",
    "🍵 tea",
    "a\x00b",
    "tea\ttime",
    "col : x",
    '"unbalanced',
    "x" * 5000,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_queries_are_words_never_syntax(sab: Abathur, query: str) -> None:
    await put_all(
        sab,
        {
            "gate": "the AND gate and the OR gate, NOT the NEAR one",
            "tea": "green tea: thé vert, 茶, café",
            "star": "tea* and *",
        },
    )
    for mode in MODES:
        found = await sab.memory.search(query, prefix="user:alice", mode=mode)
        assert found.mode == mode
        if mode == "keyword":
            # Every term is a literal word: a hit holds one of the query's words.
            wanted = words(query)
            for hit in found.hits:
                assert wanted & words(f"{hit.key} {hit.value}"), (query, hit.key)


def words(text: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    return set(re.findall(r"\w+", "".join(ch for ch in folded if not unicodedata.combining(ch))))


async def test_operators_are_searched_as_words(sab: Abathur) -> None:
    await put_all(sab, {"gate": "the AND gate", "other": "nothing here", "uni": "thé vert"})
    assert keys(await sab.memory.search("AND", prefix="user", mode="keyword")) == ["gate"]
    assert keys(await sab.memory.search("NEAR(", prefix="user", mode="keyword")) == []
    # Case and diacritics fold (unicode61 remove_diacritics): 'THE' and 'thé' are 'the'.
    for query in ("the", "THE", "thé"):
        found = await sab.memory.search(query, prefix="user", mode="keyword")
        assert set(keys(found)) == {"gate", "uni"}, query


def test_fts_query_quotes_every_term() -> None:
    assert fts_query('say "hi"') == '"say" OR """hi"""'
    assert fts_query("AND OR NOT") == '"AND" OR "OR" OR "NOT"'
    assert fts_query("NEAR(x y)") == '"NEAR(x" OR "y)"'
    assert fts_query("* ^ - :") is None
    assert fts_query("x\x00b c") == '"x" OR "b" OR "c"'
    assert fts_query("x x x") == '"x"'
    assert fts_query(" ".join(f"w{i}" for i in range(100))).count(" OR ") == 63


def test_fts_query_leaves_out_stop_words_unless_nothing_else_is_left() -> None:
    assert fts_query("The history of the Roman Empire") == '"history" OR "Roman" OR "Empire"'
    assert fts_query("cats (and) dogs, THE end.") == '"cats" OR "dogs," OR "end."'
    assert fts_query("to be or not to be") == '"to" OR "be" OR "or" OR "not"'
    # A stop word inside a term is part of the term, not a stop word.
    assert fts_query("the-end it's") == '"the-end" OR "it\'s"'


async def test_stop_words_do_not_change_what_a_keyword_search_finds_first(sab: Abathur) -> None:
    await sab.memory.put("user:a", "rome", "the history of the roman empire")
    await sab.memory.put("user:a", "cats", "the care of cats and the feeding of dogs")
    found = await sab.memory.search("what is the history of Rome", prefix="user", mode="keyword")
    assert keys(found) == ["rome"], "only 'what', 'history', 'Rome' are searched"
    found = await sab.memory.search("the of and", prefix="user", mode="keyword")
    assert sorted(keys(found)) == ["cats", "rome"], "a query of stop words alone still matches"


# --------------------------------------------------------------------------- filters


async def test_prefix_matches_whole_segments(sab: Abathur) -> None:
    for namespace in ("user:al", "user:al:notes", "user:alice", "user:al0", "user:al!x", "team:al"):
        await sab.memory.put(namespace, "tea", "green tea")
    await sab.embeddings.drain()
    for mode in MODES:
        found = await sab.memory.search("tea", prefix="user:al", mode=mode)
        assert sorted(h.namespace for h in found.hits) == ["user:al", "user:al:notes"], mode
        found = await sab.memory.search("tea", prefix="user:al:notes", mode=mode)
        assert [h.namespace for h in found.hits] == ["user:al:notes"], mode
        found = await sab.memory.search("tea", prefix="user", mode=mode)
        assert len(found.hits) == 5, mode
        found = await sab.memory.search("tea", prefix="us", mode=mode)
        assert found.hits == [], mode


async def test_type_and_metadata_filters(sab: Abathur) -> None:
    await sab.memory.put("user:a", "k1", "green tea", type="episodic", metadata={"src": "chat"})
    await sab.memory.put("user:a", "k2", "green tea", type="semantic", metadata={"src": "chat"})
    await sab.memory.put("user:a", "k3", "green tea", type="episodic", metadata={"src": "mail"})
    await sab.memory.put("user:a", "k4", "green tea", type="episodic", metadata={"n": 1})
    await sab.embeddings.drain()
    for mode in MODES:
        found = await sab.memory.search(
            "tea", prefix="user", type="episodic", filter={"src": "chat"}, mode=mode
        )
        assert keys(found) == ["k1"], mode
        found = await sab.memory.search("tea", prefix="user", filter={"n": 1.0}, mode=mode)
        assert keys(found) == ["k4"], mode
        found = await sab.memory.search("tea", prefix="user", filter={"n": True}, mode=mode)
        assert keys(found) == [], mode


async def test_expired_deleted_and_superseded_are_never_returned(sab: Abathur) -> None:
    await sab.memory.put("user:a:x", "ttl", "green tea expires", ttl=0.05)
    await sab.memory.put("user:a:x", "gone", "green tea deleted")
    await sab.memory.put("user:a:x", "loser", "green tea duplicate")
    await sab.memory.put("user:a:y", "winner", "green tea duplicate")
    await sab.memory.put("user:a:x", "old", "green tea old words")
    await sab.memory.put("user:a:x", "kept", "green tea kept")
    await sab.embeddings.drain()
    await sab.memory.delete("user:a:x", "gone")
    await sab.memory.consolidate("user:a")
    await sab.memory.put("user:a:x", "old", "completely different now")
    await asyncio.sleep(0.1)
    for mode in MODES:
        found = await sab.memory.search("green tea", prefix="user:a", mode=mode, k=10)
        assert sorted(keys(found)) == ["kept", "winner"], mode
    await sab.embeddings.drain()
    for mode in MODES:
        found = await sab.memory.search("green tea", prefix="user:a", mode=mode, k=10)
        assert {"ttl", "gone", "loser"}.isdisjoint(keys(found)), mode
        for hit in found.hits:  # only current versions, never an old value
            assert (hit.key, hit.version, hit.value) != ("old", 1, "green tea old words")
            assert hit.key != "old" or hit.value == "completely different now"
    found = await sab.memory.search("completely different", prefix="user:a", mode="vector")
    assert (keys(found)[0], found.hits[0].version) == ("old", 2)
    restored = await sab.memory.restore("user:a:x", "gone")
    assert restored.status == "live"
    found = await sab.memory.search("green tea deleted", prefix="user:a", mode="vector")
    assert keys(found)[0] == "gone", "a restored memory has its vector back at once"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "code"),
    [
        ({"query": ""}, InvalidInputError, "invalid_input"),
        ({"query": "   "}, InvalidInputError, "invalid_input"),
        ({"query": 42}, InvalidInputError, "invalid_input"),
        ({"query": "x" * 8193}, InvalidInputError, "invalid_input"),
        ({"prefix": "user::x"}, InvalidNamespaceError, "memory.invalid_namespace"),
        ({"prefix": ""}, InvalidNamespaceError, "memory.invalid_namespace"),
        ({"type": "factual"}, InvalidMemoryTypeError, "memory.invalid_type"),
        ({"filter": ["src"]}, InvalidInputError, "invalid_input"),
        ({"filter": {"src": [1]}}, InvalidInputError, "invalid_input"),
        ({"k": 0}, InvalidInputError, "invalid_input"),
        ({"k": 1001}, InvalidInputError, "invalid_input"),
        ({"k": True}, InvalidInputError, "invalid_input"),
        ({"mode": "semantic"}, InvalidInputError, "invalid_input"),
        ({"mode": None}, InvalidInputError, "invalid_input"),
    ],
    ids=lambda v: repr(v)[:30],
)
async def test_bad_search_input_is_a_typed_error_and_changes_nothing(
    sab: Abathur, kwargs, error, code
) -> None:
    await put_all(sab, FACTS)
    call = {"query": "tea", "prefix": "user:alice", **kwargs}
    query = call.pop("query")
    async with assert_unchanged(sab):
        with pytest.raises(error) as ei:
            await sab.memory.search(query, **call)
    assert ei.value.code == code
    assert not isinstance(ei.value, InvalidIdError)


async def test_a_query_without_words_finds_nothing(sab: Abathur) -> None:
    await put_all(sab, FACTS)
    found = await sab.memory.search('"*"', prefix="user:alice", mode="keyword")
    assert found.hits == []


# --------------------------------------------------------------------------- 10k memories

COMMON = [
    "river",
    "mountain",
    "forest",
    "lake",
    "valley",
    "meadow",
    "canyon",
    "desert",
    "island",
    "harbor",
    "bridge",
    "tower",
    "castle",
    "garden",
    "orchard",
    "vineyard",
    "village",
    "market",
    "square",
    "fountain",
]
RARE = [
    "quantum",
    "photon",
    "neutrino",
    "boson",
    "quark",
    "lepton",
    "gluon",
    "muon",
    "tau",
    "hadron",
]
TENANTS = 100
PER_TENANT = 100  # 10k in all


def corpus() -> list[tuple[str, str, str, str, dict]]:
    """(namespace, key, type, text, metadata): 1% procedural, 1% tagged rare.

    The 1% have words of their own (RARE): a query in COMMON words ranks all of
    them below the 99%, so a filter applied after a fixed candidate window would
    find none of them.
    """
    rng = np.random.default_rng(7)
    rows = []
    for i in range(TENANTS * PER_TENANT):
        tenant, j = divmod(i, PER_TENANT)
        namespace = f"user:u{tenant:03d}:{'notes' if j % 2 else 'prefs'}"
        is_procedural, is_tagged = i % 100 == 37, i % 100 == 71
        words = RARE if is_procedural or is_tagged else COMMON
        text = "note " + " ".join(rng.choice(words, size=5))
        rows.append(
            (
                namespace,
                f"k{i:05d}",
                "procedural" if is_procedural else "semantic",
                text,
                {"tag": "rare" if is_tagged else "common", "i": i},
            )
        )
    return rows


@pytest.fixture(scope="module")
def ten_k_on(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], BackendHandle]:
    """A database with 10k embedded memories on a registered backend, by name,
    built once for this module on each backend asked for."""
    built: dict[str, BackendHandle] = {}

    def on(name: str) -> BackendHandle:
        if name not in built:
            built[name] = build_ten_k(handle(name, tmp_path_factory.mktemp("tenk")))
        return built[name]

    return on


def build_ten_k(backend: BackendHandle) -> BackendHandle:
    async def build() -> None:
        async with backend.open(
            embedder=WordHashEmbedder(), embed_worker=False, embed_batch_size=2048
        ) as ab:

            def write(conn) -> None:
                # One transaction through the real write path, not 10k API round trips.
                index = _Indexing(conn, configured=True)
                now = time.time()
                for namespace, key, type_, text, metadata in corpus():
                    _write_version(
                        conn,
                        None,
                        index,
                        namespace=namespace,
                        key=key,
                        type_=type_,
                        value=json.dumps(text),
                        metadata=json.dumps(metadata),
                        status="live",
                        now=now,
                        expires_at=None,
                    )

            await ab.db.write(write)
            report = await ab.embeddings.drain()
            assert report.embedded == TENANTS * PER_TENANT

    asyncio.run(build())
    return backend


@pytest.fixture(scope="module")
def ten_k(ten_k_on: Callable[[str], BackendHandle]) -> Path:
    """The 10k memories in a SQLite file, for the tests of its vec0 index."""
    return Path(ten_k_on("sqlite").target)


@pytest.fixture
async def tab(ten_k: Path):
    async with Abathur.open(ten_k, embedder=WordHashEmbedder(), embed_worker=False) as opened:
        yield opened


@pytest.fixture(params=[spec.name for spec in BACKENDS])
def ten_k_backend(
    request: pytest.FixtureRequest, ten_k_on: Callable[[str], BackendHandle]
) -> BackendHandle:
    """The 10k memories on each registered backend (tests/backends.py)."""
    return ten_k_on(request.param)


@pytest.fixture
async def tab_on(ten_k_backend: BackendHandle):
    async with ten_k_backend.open(embedder=WordHashEmbedder(), embed_worker=False) as opened:
        yield opened


QUERY = "note river mountain lake"


@pytest.mark.parametrize("mode", MODES)
async def test_a_filter_matching_1_percent_of_10k_still_returns_k_hits(tab_on: Abathur, mode):
    tab = tab_on
    unfiltered = await tab.memory.search(QUERY, prefix="user", mode="vector", k=200)
    assert not any(
        h.type == "procedural" or h.metadata["tag"] == "rare" for h in unfiltered.hits
    ), "the 1% are outside the unfiltered top 200"

    by_type = await tab.memory.search(QUERY, prefix="user", type="procedural", mode=mode)
    assert len(by_type.hits) == 10 and {h.type for h in by_type.hits} == {"procedural"}

    by_tag = await tab.memory.search(QUERY, prefix="user", filter={"tag": "rare"}, mode=mode)
    assert len(by_tag.hits) == 10 and {h.metadata["tag"] for h in by_tag.hits} == {"rare"}

    tenant = await tab.memory.search(QUERY, prefix="user:u042", mode=mode)
    assert len(tenant.hits) == 10
    assert {partition_of(h.namespace) for h in tenant.hits} == {"user:u042"}

    deeper = await tab.memory.search(QUERY, prefix="user:u042:notes", mode=mode)
    assert len(deeper.hits) == 10 and {h.namespace for h in deeper.hits} == {"user:u042:notes"}

    both = await tab.memory.search(QUERY, prefix="user:u037", type="procedural", mode=mode)
    assert [h.key for h in both.hits] == ["k03737"]


@pytest.mark.sqlite_only("reads memories_vec and the embedding cache through tx.conn")
async def test_vector_results_equal_exact_search_when_every_candidate_is_rescored(
    ten_k: Path,
) -> None:
    embedder = WordHashEmbedder()
    async with Abathur.open(
        ten_k, embedder=embedder, embed_worker=False, search_oversample=1000
    ) as ab:
        cache = await ab.db.read(
            lambda c: c.conn.execute(
                "SELECT m.key, c.vector FROM memories_vec AS v "
                "JOIN memories AS m ON m.id = v.item_id "
                "JOIN embedding_cache AS c ON c.id = v.cache_id"
            ).fetchall()
        )
        names = [name for name, _ in cache]
        matrix = np.stack([np.frombuffer(blob, dtype="<f4") for _, blob in cache])
        for query in (QUERY, "quantum photon", "castle garden fountain"):
            target = np.asarray(embedder.vector(query))
            exact = matrix @ target / np.linalg.norm(matrix, axis=1)
            order = np.lexsort((np.arange(len(names)), -exact))[:10]
            found = await ab.memory.search(query, prefix="user", mode="vector", k=10)
            assert [h.score for h in found.hits] == pytest.approx(exact[order].tolist(), abs=1e-6)


@pytest.mark.sqlite_only("vec0 candidates of the SQLite backend, through tx.conn")
@pytest.mark.parametrize("every", [1, 2, 10, 100, 10_001])
async def test_an_accept_predicate_walks_to_the_same_answer_as_its_allowed_set(
    tab: Abathur, every: int
) -> None:
    """Walking candidates nearest first through ``accept`` == ranking its exact set.

    ``every``: the predicate passes ids divisible by it (all, half, 10%, 1%, none).
    The walk asks about few more rows than it needs: for a 10% predicate and
    50 wanted, a few hundred of the 10k, never all of them.
    """
    embedder = WordHashEmbedder()
    asked: list[int] = []

    def accept(ids: list[int]) -> set[int]:
        asked.extend(ids)
        return {i for i in ids if i % every == 0}

    def compare(conn, query: str) -> None:
        vector = np.asarray(embedder.vector(query), dtype=np.float32).tobytes()
        ((bits,),) = conn.execute("SELECT vec_quantize_binary(?)", (vector,)).fetchall()
        now = time.time()
        every_id = [i for (i,) in conn.execute("SELECT item_id FROM memories_vec")]
        allowed = [i for i in every_id if i % every == 0]
        asked.clear()
        walked = vector_candidates(
            conn, "memories_vec", bits, 50, VectorFilter(now=now, accept=accept)
        )
        ranked = vector_candidates(
            conn, "memories_vec", bits, 50, VectorFilter(now=now, allowed_ids=allowed)
        )
        assert walked == ranked
        assert len(walked) == min(50, len(allowed))
        assert len(asked) == len(set(asked)), "no id is asked about twice"
        if every <= 10:
            assert len(asked) <= 40 * every * 50 // 10 + 200, len(asked)
        if every > len(every_id):
            assert sorted(asked) == sorted(every_id), "a predicate passing none asks about all"

    for query in (QUERY, "quantum photon note"):
        await tab.db.read(lambda tx, q=query: compare(tx.conn, q))


@pytest.mark.sqlite_only("vec0 candidates of the SQLite backend, through tx.conn")
async def test_the_numpy_first_pass_returns_what_vec0_knn_returns(tab: Abathur) -> None:
    embedder = WordHashEmbedder()

    def compare(conn, query: str, partition: str | None) -> None:
        vector = np.asarray(embedder.vector(query), dtype=np.float32).tobytes()
        ((bits,),) = conn.execute("SELECT vec_quantize_binary(?)", (vector,)).fetchall()
        ours = vector_candidates(
            conn, "memories_vec", bits, 50, VectorFilter(now=time.time(), partition=partition)
        )
        sql = (
            "SELECT item_id, distance FROM memories_vec WHERE embedding MATCH "
            "vec_quantize_binary(?) AND k = 50 AND expires > ?"
        )
        params: tuple = (vector, time.time())
        if partition:
            sql += " AND scope = ?"
            params += (partition,)
        theirs = conn.execute(sql, params).fetchall()
        distance = dict(
            conn.execute(
                "SELECT item_id, vec_distance_hamming(embedding, vec_quantize_binary(?)) "
                "FROM memories_vec WHERE item_id IN (SELECT value FROM json_each(?))",
                (vector, json.dumps([i for i, _ in ours])),
            ).fetchall()
        )
        assert [distance[i] for i, _ in ours] == [d for _, d in theirs]
        cutoff = theirs[-1][1]
        assert {i for i, d in theirs if d < cutoff} == {i for i, _ in ours if distance[i] < cutoff}

    for query in (QUERY, "quantum photon note", "bridge"):
        for partition in (None, "user:u007"):
            await tab.db.read(lambda tx, q=query, p=partition: compare(tx.conn, q, p))


@pytest.mark.sqlite_only("EXPLAIN QUERY PLAN of the SQLite backend's vec0 chunks")
async def test_scoped_chunk_reads_use_the_partition_index(tab: Abathur) -> None:
    sql = "EXPLAIN QUERY PLAN " + SQL_CHUNKS_OF_PARTITION.format(table="memories_vec")
    plan = await tab.db.read(lambda c: [r[-1] for r in c.conn.execute(sql, ("user:u001",))])
    assert "USING INDEX memories_vec_by_partition (partition00=?)" in plan[0], plan
    assert all("SCAN" not in step for step in plan), plan


async def test_scope_tokens_cover_every_prefix() -> None:
    assert len(scope_tokens("a:b:c").split()) == 3
    assert scope_tokens("a:b").split()[0] == scope_tokens("a").split()[0]
    assert MEMORY_KIND.vec_table == "memories_vec"


# --------------------------------------------------------------------------- real model


async def test_bundled_model_finds_meaning_not_just_words(backend: BackendHandle) -> None:
    async with backend.open(embedder=BundledEmbedder(), embed_worker=False) as ab:
        await put_all(ab, FACTS)
        found = await ab.memory.search(
            "which beverage does she like", prefix="user:alice", mode="vector", k=1
        )
        assert keys(found) == ["drink"]
        found = await ab.memory.search("what tongue is spoken", prefix="user:alice", k=1)
        assert (found.mode, keys(found)) == ("hybrid", ["language"])


@pytest.mark.sqlite_only("reads the FTS5 and vec0 tables behind the search")
async def test_unindex_takes_a_version_out_of_every_index(sab: Abathur) -> None:
    from abathur.memory import unindex

    await put_all(sab, FACTS)
    (item_id,) = (
        await sab.db.read(
            lambda c: c.conn.execute(
                "SELECT id FROM memories WHERE key = 'drink' AND is_current = 1"
            ).fetchall()
        )
    )[0]
    await sab.db.write(lambda conn: unindex(conn, item_id))
    for mode in MODES:
        found = await sab.memory.search("green tea", prefix="user:alice", mode=mode, k=10)
        assert "drink" not in keys(found), mode


async def test_updates_that_reuse_a_vec0_slot_are_seen_by_vector_search(sab: Abathur) -> None:
    # vec0 may put a new vector in the slot a delete just freed, leaving the
    # chunk's validity bitmap unchanged; the per-process mirror must still
    # notice (regression: it used to return the old version).
    await put_all(sab, {"a": "gardening tomatoes in spring", "b": "python snakes in the zoo"})
    first = await sab.memory.search("python snakes in the zoo", prefix="user:alice", k=1,
                                    mode="vector")
    assert keys(first) == ["b"]  # the mirror now holds both chunks' slots
    for round_no in range(3):  # each round deletes a vector and inserts one
        text = f"python snakes in the zoo, round {round_no}"
        await sab.memory.put("user:alice", "a", text)
        await sab.embeddings.drain()
        found = await sab.memory.search(text, prefix="user:alice", k=2, mode="vector")
        by_key = {hit.key: hit for hit in found.hits}
        assert by_key["a"].value == text
        assert by_key["a"].version == round_no + 2

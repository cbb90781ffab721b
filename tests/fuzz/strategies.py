"""What the fuzzer throws: hostile text, numbers and JSON, plus the means to judge a call.

Strategies mix valid values (names of things that exist, so calls get past
validation and reach SQL) with hostile ones: lone surrogates, NUL and other
control characters, SQL and FTS syntax, padded and empty names, very long
strings, integers past 64 bits, NaN and infinities, JSON nested past any
limit or containing itself, and objects JSON cannot hold at all.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import apsw
from hypothesis import settings
from hypothesis import strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: The settings of the fuzz tests: the profile named by $HYPOTHESIS_PROFILE.
FUZZ = settings(settings.get_profile(PROFILE))


def fuzz_share(part: int) -> settings:
    """The profile with 1/``part`` of its examples, for a test whose examples cost more."""
    return settings(FUZZ, max_examples=max(1, (FUZZ.max_examples or 100) // part))


# -- text ---------------------------------------------------------------------

HOSTILE_PIECES = [
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "\udcff",  # a byte 0xff through surrogateescape (argv, os.listdir)
    "\x00",
    "\x07",
    "\n",
    "\u202e",  # right-to-left override
    "\ufeff",
    "\U0001f600",
    "é",
    ":",
    "::",
    " ",
    '"',
    "'",
    "%",
    "_",
    "*",
    "\\",
    "/",
    "..",
    "'; DROP TABLE memories; --",
    '" OR 1=1 --',
    "NEAR(",
    "AND",
    "user:",
    "app:",
    "temp:",
]

# Full Unicode, surrogates included (hypothesis leaves out category Cs by default).
ANY_CHAR = st.characters(exclude_categories=())
RAW_TEXT = st.text(ANY_CHAR, max_size=40)
PIECED_TEXT = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=5)), max_size=6
).map("".join)
LONG_TEXT = st.builds(
    lambda n, ch: ch * n,
    st.sampled_from([255, 256, 257, 512, 513, 8192, 8193, 70_000]),
    st.sampled_from(["a", "é", "\ud800", " "]),
)
HOSTILE_TEXT = st.one_of(RAW_TEXT, PIECED_TEXT, LONG_TEXT)

NAMES = ["alice", "bob", "a", "helpdesk", "lang", "tea", "s1"]
NAMESPACES = ["user", "user:alice", "user:alice:prefs", "user:bob", "app", "user:al"]


def text_or(valid: list[str]) -> st.SearchStrategy[Any]:
    """Mostly (4 in 5) names that exist, so calls reach the database; else hostile text.

    A call takes several arguments: were each one hostile half the time, few
    calls would get past validation to the SQL and the writes behind it.
    """
    known = st.sampled_from(valid)
    return st.one_of(known, known, known, known, HOSTILE_TEXT)


NAMESPACE = st.one_of(
    st.sampled_from(NAMESPACES),
    st.sampled_from(NAMESPACES),
    st.sampled_from(NAMESPACES),
    st.sampled_from(NAMESPACES).flatmap(lambda ns: PIECED_TEXT.map(lambda t: f"{ns}:{t}")),
    HOSTILE_TEXT,
)

# -- numbers ------------------------------------------------------------------

EDGE_INTS = [
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**400,
    -(10**400),
]
INT = st.one_of(st.integers(-3, 60), st.integers(0, 60), st.sampled_from(EDGE_INTS), st.integers())
FLOAT = st.one_of(
    st.floats(),  # NaN and both infinities included
    st.sampled_from([0.0, -0.0, 1e308, 1.5, float("inf"), float("-inf"), float("nan")]),
)
NUMBER = st.one_of(INT, FLOAT, st.booleans())

# -- JSON and what is not ---------------------------------------------------------


def nested(depth: int, *, as_dict: bool = False) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


SCALAR = st.one_of(st.none(), st.booleans(), INT, FLOAT, HOSTILE_TEXT, st.text(max_size=10))
JSONISH = st.recursive(
    SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(text_or(["k", "source", "n"]), children, max_size=4),
    ),
    max_leaves=12,
)
DEEP = st.builds(
    nested, st.sampled_from([150, 199, 200, 201, 254, 255, 990, 1200]), as_dict=st.booleans()
)
NOT_JSON = st.one_of(
    st.builds(cyclic),
    st.just({1, 2}),
    st.just(b"\xff"),
    st.just(object()),
    st.just({1: "a"}),
    st.just({None: 1}),
    st.just((1, 2)),
)
VALUE = st.one_of(JSONISH, JSONISH, JSONISH, JSONISH, DEEP, NOT_JSON)
METADATA = st.one_of(
    st.none(),
    st.dictionaries(text_or(["source", "n"]), st.one_of(SCALAR, DEEP), max_size=3),
    VALUE,
)
FILTER = st.one_of(
    st.none(),
    st.dictionaries(text_or(["source", "n"]), st.one_of(SCALAR, VALUE), max_size=3),
    VALUE,
)

#: Anything at all, for arguments of any type.
ANYTHING = st.one_of(HOSTILE_TEXT, NUMBER, VALUE, st.none())

# -- judging a call -------------------------------------------------------------

# What a failed call must leave exactly as it was. metrics and usage_ledger are
# left out: they record that calls happened (failed ones too), by design.
FINGERPRINT_TABLES = (
    "meta",
    "sessions",
    "events",
    "app_state",
    "user_state",
    "memories",
    "audit_log",
    "audit_head",
    "tasks",
    "embedding_queue",
    "embedding_cache",
    "vector_deletes",
    "vector_tables",
    "document_roots",
    "documents",
    "chunks",
    "archive",
    "archive_runs",
)


def fingerprint(conn: apsw.Connection) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row, per main table (names are our constants)."""
    found = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
    prints = {}
    for table in FINGERPRINT_TABLES:
        if table not in found:
            continue
        # Some tables are WITHOUT ROWID: order by the rows themselves.
        rows = sorted(repr(row) for row in conn.execute(f"SELECT * FROM {table}"))
        digest = hashlib.sha256("\n".join(rows).encode("utf-8", "backslashreplace"))
        prints[table] = (len(rows), digest.hexdigest())
    return prints

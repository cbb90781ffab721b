"""How a rendered pg_restore script is normalised and compared (no server needed).

The integration tests (tests/integration/test_pg_backup_schema.py) run the real
thing; these pin the rules: what is masked, what a COPY's rows are, what a
difference says.
"""

from __future__ import annotations

from abathur.backends.postgres.ops import ScriptLine, _script, first_difference, vector_tables_in


def script(text: str) -> list[ScriptLine]:
    return list(_script(line.encode() + b"\n" for line in text.split("\n")))


def texts(lines: list[ScriptLine]) -> list[str]:
    return [line.text.decode() for line in lines]


def test_copy_rows_are_left_out_and_the_rest_is_kept() -> None:
    lines = script(
        "-- Name: meta; Type: TABLE DATA; Schema: public; Owner: -\n"
        "COPY public.meta (key, value) FROM stdin;\n"
        "DROP TABLE sessions;\n"
        "\\.\n"
        "SELECT 1;"
    )
    assert texts(lines) == [
        "-- Name: meta; Type: TABLE DATA; Schema: public; Owner: -",
        "COPY public.meta (key, value) FROM stdin;",
        "\\.",
        "SELECT 1;",
    ]
    assert lines[-1].obj == "TABLE DATA meta"


def test_a_copy_that_never_ends_is_a_difference() -> None:
    lines = script("COPY public.meta (key, value) FROM stdin;\nk\tv")
    assert texts(lines)[-1] == "<the data of a COPY never ends>"


def test_only_whole_lines_are_masked() -> None:
    lines = script(
        "SELECT pg_catalog.setval('public.tasks_rowid_seq', 12, true);\n"
        "SELECT pg_catalog.setval('public.tasks_rowid_seq', 12, true); DROP TABLE meta;\n"
        "\\restrict AbC123\n"
        "-- Dumped from database version 18.6\n"
        "-- Dumped from database version 18.6; DROP TABLE meta;"
    )
    assert texts(lines) == [
        "SELECT pg_catalog.setval('public.tasks_rowid_seq', <n>, <called>);",
        "SELECT pg_catalog.setval('public.tasks_rowid_seq', 12, true); DROP TABLE meta;",
        "\\restrict <key>",
        "-- Dumped from database version <version>",
        "-- Dumped from database version 18.6; DROP TABLE meta;",
    ]


def test_the_first_difference_names_its_object_and_both_lines() -> None:
    ours = script(
        "-- Name: f(integer); Type: FUNCTION; Schema: public; Owner: -\n"
        "CREATE FUNCTION public.f(x integer) RETURNS integer\n"
        "    AS $$ SELECT x $$;"
    )
    theirs = script(
        "-- Name: f(integer); Type: FUNCTION; Schema: public; Owner: -\n"
        "CREATE FUNCTION public.f(x integer) RETURNS integer\n"
        "    AS $$ SELECT x; DELETE FROM meta $$;"
    )
    assert first_difference(ours, ours) is None
    found = first_difference(theirs, ours)
    assert found is not None and found.startswith("first at FUNCTION f(integer) (line 3)")
    assert "DELETE FROM meta" in found and "SELECT x $$" in found
    longer = first_difference([*ours, *script("CREATE EXTENSION plperlu;")], ours)
    assert longer is not None and "CREATE EXTENSION plperlu;" in longer
    assert "nothing more" in longer


def test_vector_tables_are_read_by_our_names_only() -> None:
    lines = script(
        "CREATE TABLE public.memories_vec (\n"
        "    item_id bigint NOT NULL,\n"
        "    embedding public.halfvec(384) NOT NULL,\n"
        "    type integer NOT NULL\n"
        ");\n"
        "CREATE TABLE public.other_vec (\n"
        "    embedding public.halfvec(8) NOT NULL,\n"
        ");\n"
        "CREATE TABLE public.chunks_vec (\n"
        "    embedding public.halfvec(99999) NOT NULL,\n"
        ");"
    )
    assert vector_tables_in(lines) == {"memories_vec": 384}

"""``abathur memory`` (``get``, ``list``, ``history``, ``namespaces``): the memories, shown.

Read-only: these commands never write to the file (no model is loaded either).
Values are printed as JSON, cut to one table cell in the human output and
whole with ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from abathur.api import Abathur
from abathur.cli.options import (
    Output,
    format_pairs,
    format_table,
    format_time,
    json_text,
    read_database,
    shorten,
    shown_db,
    standard_options,
)
from abathur.errors import MemoryNotFoundError
from abathur.memory import MAX_LIMIT, MEMORY_TYPES
from abathur.models import Memory, MemoryType

__all__ = ["memory"]

# The service's cap, less the one extra row fetched to tell whether there is more.
_MAX_SHOWN = MAX_LIMIT - 1
_VALUE_WIDTH = 60  # characters of a value in a table cell


def _name(namespace: str, key: str) -> str:
    """A memory named in a message: JSON strings, so odd characters stay visible."""
    return f"{json_text(namespace)}/{json_text(key)}"


def _memory_pairs(m: Memory) -> str:
    pairs: list[tuple[str, object]] = [
        ("namespace", m.namespace),
        ("key", m.key),
        ("version", m.version),
        ("status", m.status),
        ("type", m.type),
        ("created", format_time(m.created_at)),
        ("updated", format_time(m.updated_at)),
        ("expires", format_time(m.expires_at) or "never"),
    ]
    if m.superseded_by is not None:
        pairs.append(("superseded by", f"{m.superseded_by.namespace}/{m.superseded_by.key}"))
    pairs.append(("metadata", json_text(m.metadata)))
    # Whole, never cut: this is the one place a person reads a value in full.
    value = json.dumps(m.value, ensure_ascii=False, indent=2)
    return format_pairs(pairs) + "\nvalue\n" + value


def _namespaces(db_path: Path, out: Output, *, prefix: str | None, limit: int) -> None:
    async def fetch(ab: Abathur) -> list[Any]:
        return await ab.memory.namespace_counts(prefix, limit=limit + 1)

    counts = read_database(db_path, fetch)
    shown, has_more = counts[:limit], len(counts) > limit
    data = {
        "path": shown_db(db_path),
        "prefix": prefix,
        "namespaces": [c.model_dump(mode="json", exclude={"new_7d"}) for c in shown],
        "has_more": has_more,
    }
    if not shown:
        human = "no memories" + (f" under {prefix}" if prefix is not None else "")
    else:
        total = sum(c.count for c in shown)
        human = format_table(("namespace", "memories"), ((c.name, c.count) for c in shown))
        human += f"\n{len(shown)} namespace(s), {total} memory(ies)"
        if has_more:
            human += f"; more namespaces exist: raise --limit (now {limit}) or narrow PREFIX"
    out.result(data, human)


F = TypeVar("F", bound=Callable[..., Any])


def _limit_option(default: int, what: str) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(1, _MAX_SHOWN),
        default=default,
        show_default=True,
        help=f"At most this many {what}; a note says when there are more.",
    )


@click.group(invoke_without_command=True)
@_limit_option(100, "namespaces")
@standard_options
def memory(*, db_path: Path, out: Output, limit: int) -> None:
    """Memories: without a subcommand, the namespaces with how many memories each holds.

    'memory namespaces' lists them (under a prefix), 'memory list' the
    memories under a prefix, 'memory get' one memory (or one of its
    versions), 'memory history' every version of one. Only live, unexpired
    memories are counted and listed; 'get --version' and 'history' also
    show deleted and superseded versions. Nothing is written.

    \b
    Examples:
      abathur memory --db ./agent.db
      abathur memory namespaces --db ./agent.db user:alice
      abathur memory list --db ./agent.db user:alice --type semantic --limit 20
      abathur memory get --db ./agent.db user:alice:preferences language --json
      abathur memory history --db ./agent.db user:alice:preferences language
    """
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        return  # a --db / --json given here reaches the subcommand (options.standard_options)
    _namespaces(db_path, out, prefix=None, limit=limit)


@memory.command("namespaces")
@click.argument("prefix", required=False)
@_limit_option(100, "namespaces")
@standard_options
def namespaces(*, db_path: Path, out: Output, prefix: str | None, limit: int) -> None:
    """Namespaces holding live memories (under PREFIX, if given), with their counts.

    PREFIX matches whole segments: 'user:al' never lists 'user:alice'. A
    namespace's count is the memories in exactly that namespace, not below it.

    \b
    Examples:
      abathur memory namespaces --db ./agent.db
      abathur memory namespaces --db ./agent.db user:alice --json | jq '.namespaces[].count'
    """
    _namespaces(db_path, out, prefix=prefix, limit=limit)


@memory.command("list")
@click.argument("prefix")
@click.option(
    "--type",
    "type_",
    type=click.Choice(MEMORY_TYPES),
    default=None,
    help="Only memories of this type.",
)
@_limit_option(50, "memories")
@click.option(
    "--offset",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Skip this many first (the next page: the offset the note gives).",
)
@click.option(
    "--include-deleted",
    is_flag=True,
    help="Also memories deleted or superseded (what 'restore' can bring back), with a status.",
)
@standard_options
def list_(
    *,
    db_path: Path,
    out: Output,
    prefix: str,
    type_: str | None,
    limit: int,
    offset: int,
    include_deleted: bool,
) -> None:
    """List the live memories in PREFIX and below it, by namespace and key.

    PREFIX matches whole segments: 'user:al' lists 'user:al' and 'user:al:x'
    but never 'user:alice'. Values are shown as JSON, cut to fit the table;
    --json prints them whole, with "has_more" and "next_offset" for paging.
    With --include-deleted, memories deleted or superseded are listed too,
    with their status (expired ones never are).

    \b
    Examples:
      abathur memory list --db ./agent.db user:alice
      abathur memory list --db ./agent.db user --type episodic --limit 20 --offset 20
      abathur memory list --db ./agent.db user:alice --include-deleted
      abathur memory list --db ./agent.db user:alice --json | jq '.memories[].value'
    """

    async def fetch(ab: Abathur) -> list[Memory]:
        memory_type = cast(MemoryType | None, type_)  # click.Choice checked it
        return await ab.memory.list(
            prefix,
            type=memory_type,
            limit=limit + 1,
            offset=offset,
            include_deleted=include_deleted,
        )

    found = read_database(db_path, fetch)
    shown, has_more = found[:limit], len(found) > limit
    data = {
        "path": shown_db(db_path),
        "prefix": prefix,
        "type": type_,
        "offset": offset,
        "include_deleted": include_deleted,
        "memories": [m.model_dump(mode="json") for m in shown],
        "has_more": has_more,
        "next_offset": offset + limit if has_more else None,
    }
    if not shown:
        which = "memories" if include_deleted else "live memories"
        human = f"no {which} under {prefix}" + (f" of type {type_}" if type_ else "")
        if offset:
            human += f" past the first {offset}"
    else:
        header: tuple[str, ...] = ("namespace", "key", "type", "version", "updated", "value")
        rows: list[tuple[object, ...]] = [
            (
                m.namespace,
                shorten(m.key, 40),
                m.type,
                m.version,
                format_time(m.updated_at),
                shorten(json_text(m.value), _VALUE_WIDTH),
            )
            for m in shown
        ]
        if include_deleted:
            header = (*header[:4], "status", *header[4:])
            rows = [(*row[:4], m.status, *row[4:]) for row, m in zip(rows, shown, strict=True)]
        human = format_table(header, rows)
        human += f"\nmemories {offset + 1} to {offset + len(shown)}"
        if has_more:
            human += f"; more exist: --offset {offset + limit}"
    out.result(data, human)


@memory.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option(
    "--version",
    type=click.IntRange(1),
    default=None,
    help="This version (any status: deleted and superseded ones too) instead of the current.",
)
@standard_options
def get(*, db_path: Path, out: Output, namespace: str, key: str, version: int | None) -> None:
    """Print one memory: its value (whole, as JSON), type, metadata, version and times.

    Without --version: the current version, if the memory is live and has
    not expired. A memory that is absent (never written, deleted,
    superseded, expired) or a version it does not have is memory.not_found,
    exit 3: 'memory history' shows what there is.

    \b
    Examples:
      abathur memory get --db ./agent.db user:alice:preferences language
      abathur memory get --db ./agent.db user:alice:preferences language --version 1
      abathur memory get --db ./agent.db user:alice:preferences language --json | jq .memory.value
    """

    async def fetch(ab: Abathur) -> Memory | None:
        if version is None:
            return await ab.memory.get(namespace, key)
        return await ab.memory.get_version(namespace, key, version)

    found = read_database(db_path, fetch)
    if found is None:
        if version is None:
            raise MemoryNotFoundError(
                f"no live memory {_name(namespace, key)} (never written, deleted, superseded "
                "or expired: `abathur memory history` shows its versions)"
            )
        raise MemoryNotFoundError(f"memory {_name(namespace, key)} has no version {version}")
    out.result(
        {"path": shown_db(db_path), "memory": found.model_dump(mode="json")},
        _memory_pairs(found),
    )


@memory.command("history")
@click.argument("namespace")
@click.argument("key")
@standard_options
def history(*, db_path: Path, out: Output, namespace: str, key: str) -> None:
    """Every version of one memory, oldest first, deleted and superseded ones included.

    A memory never written, or whose current version has expired, has no
    history: memory.not_found, exit 3.

    \b
    Examples:
      abathur memory history --db ./agent.db user:alice:preferences language
      abathur memory history --db ./agent.db user:alice:preferences language --json
    """

    async def fetch(ab: Abathur) -> list[Memory]:
        return await ab.memory.history(namespace, key)

    versions = read_database(db_path, fetch)
    if not versions:
        raise MemoryNotFoundError(
            f"memory {_name(namespace, key)} has no versions (never written, or expired)"
        )
    data = {
        "path": shown_db(db_path),
        "namespace": namespace,
        "key": key,
        "versions": [m.model_dump(mode="json") for m in versions],
    }
    table = format_table(
        ("version", "status", "type", "written", "superseded by", "value"),
        (
            (
                m.version,
                m.status,
                m.type,
                format_time(m.updated_at),
                ""
                if m.superseded_by is None
                else f"{m.superseded_by.namespace}/{m.superseded_by.key}",
                shorten(json_text(m.value), _VALUE_WIDTH),
            )
            for m in versions
        ),
    )
    out.result(data, f"{namespace} / {key}: {len(versions)} version(s)\n{table}")

"""``abathur task`` (``list``): the tasks agents do for sessions, shown.

Read-only, like ``abathur memory``: results are printed as JSON, cut to one
table cell in the human output and whole with ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from abathur.api import Abathur
from abathur.cli.options import (
    Output,
    format_table,
    format_time,
    json_text,
    read_database,
    shorten,
    shown_db,
    standard_options,
)
from abathur.models import Task
from abathur.tasks import STATUSES

__all__ = ["task"]

_MAX_SHOWN = 9_999
_VALUE_WIDTH = 50  # characters of a prompt or a result in a table cell


def _one_line(text: str) -> str:
    # A prompt is free text: its line breaks would break the table's rows.
    return " ".join(text.split())


def _outcome(t: Task) -> str:
    if t.error is not None:
        return "error: " + _one_line(t.error)
    return "" if t.result is None else json_text(t.result)


def _list(
    db_path: Path, out: Output, *, session_id: str | None, status: str | None, limit: int
) -> None:
    async def fetch(ab: Abathur) -> list[Task]:
        # One more than shown: whether there are more is then known, not guessed.
        return await ab.tasks.list(session_id=session_id, status=status, limit=limit + 1)

    found = read_database(db_path, fetch)
    shown, has_more = found[:limit], len(found) > limit
    data = {
        "path": shown_db(db_path),
        "session_id": session_id,
        "status": status,
        "tasks": [t.model_dump(mode="json") for t in shown],
        "has_more": has_more,
    }
    if not shown:
        human = "no tasks" + (" matched" if session_id is not None or status else "")
    else:
        human = format_table(
            ("id", "session", "status", "created", "updated", "prompt", "result"),
            (
                (
                    t.id,
                    t.session_id,
                    t.status,
                    format_time(t.created_at),
                    format_time(t.updated_at),
                    shorten(_one_line(t.prompt), _VALUE_WIDTH),
                    shorten(_outcome(t), _VALUE_WIDTH),
                )
                for t in shown
            ),
        )
        order = "oldest first" if session_id is not None else "newest first"
        human += f"\n{len(shown)} task(s), {order}"
        if has_more:
            human += f"; more exist: raise --limit (now {limit})"
    out.result(data, human)


def _list_options(fn: Any) -> Any:
    fn = click.option(
        "--session",
        "session_id",
        default=None,
        help="Only this session's tasks (in creation order); unknown: session.not_found.",
    )(fn)
    fn = click.option(
        "--status", type=click.Choice(STATUSES), default=None, help="Only tasks in this status."
    )(fn)
    return click.option(
        "--limit",
        type=click.IntRange(1, _MAX_SHOWN),
        default=50,
        show_default=True,
        help="At most this many tasks; a note says when there are more.",
    )(fn)


@click.group(invoke_without_command=True)
@_list_options
@standard_options
def task(
    *, db_path: Path, out: Output, session_id: str | None, status: str | None, limit: int
) -> None:
    """Tasks: without a subcommand, list them (every session's, newest first).

    Same as 'task list'. Nothing is written.

    \b
    Examples:
      abathur task --db ./agent.db
      abathur task list --db ./agent.db --session 3f2a9c
      abathur task list --db ./agent.db --status failed --json | jq '.tasks[].error'
    """
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        return  # a --db / --json given here reaches the subcommand (options.standard_options)
    _list(db_path, out, session_id=session_id, status=status, limit=limit)


@task.command("list")
@_list_options
@standard_options
def list_(
    *, db_path: Path, out: Output, session_id: str | None, status: str | None, limit: int
) -> None:
    """List tasks: id, session, status, times, prompt and result (or error).

    With --session: that session's tasks, oldest first; without: every
    session's, newest first. Prompts and results are cut to fit the table
    (results as JSON); --json prints them whole.

    \b
    Examples:
      abathur task list --db ./agent.db
      abathur task list --db ./agent.db --session 3f2a9c --status running
      abathur task list --db ./agent.db --status failed --json | jq '.tasks[].error'
    """
    _list(db_path, out, session_id=session_id, status=status, limit=limit)

"""``abathur session`` (``list``, ``show``): sessions, their state and their events, shown.

Read-only, like ``abathur memory``: state values and event contents are
printed as JSON, cut to one table cell in the human output and whole with
``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from abathur.models import Session
from abathur.sessions import STATUSES

__all__ = ["session"]

_MAX_SHOWN = 9_999
_MAX_EVENTS = 1_000_000
_VALUE_WIDTH = 60  # characters of a value in a table cell


def _list(
    db_path: Path,
    out: Output,
    *,
    app: str | None,
    user: str | None,
    status: str | None,
    limit: int,
) -> None:
    async def fetch(ab: Abathur) -> list[Session]:
        # One more than shown: whether there are more is then known, not guessed.
        return await ab.sessions.list(app=app, user=user, status=status, limit=limit + 1)

    found = read_database(db_path, fetch)
    shown, has_more = found[:limit], len(found) > limit
    data = {
        "path": shown_db(db_path),
        "app": app,
        "user": user,
        "status": status,
        "sessions": [s.model_dump(mode="json", exclude={"events"}) for s in shown],
        "has_more": has_more,
    }
    if not shown:
        filtered = app is not None or user is not None or status is not None
        human = "no sessions matched" if filtered else "no sessions"
    else:
        human = format_table(
            ("id", "app", "user", "status", "revision", "created", "updated"),
            (
                (
                    s.id,
                    s.app,
                    s.user,
                    s.status,
                    s.revision,
                    format_time(s.created_at),
                    format_time(s.updated_at),
                )
                for s in shown
            ),
        )
        human += f"\n{len(shown)} session(s), most recently updated first"
        if has_more:
            human += f"; more exist: raise --limit (now {limit}) or filter by --app/--user"
    out.result(data, human)


def _list_options(fn: Any) -> Any:
    fn = click.option("--app", default=None, help="Only sessions of this application.")(fn)
    fn = click.option("--user", default=None, help="Only sessions of this user.")(fn)
    fn = click.option(
        "--status", type=click.Choice(STATUSES), default=None, help="Only sessions in this status."
    )(fn)
    return click.option(
        "--limit",
        type=click.IntRange(1, _MAX_SHOWN),
        default=50,
        show_default=True,
        help="At most this many sessions; a note says when there are more.",
    )(fn)


@click.group(invoke_without_command=True)
@_list_options
@standard_options
def session(
    *,
    db_path: Path,
    out: Output,
    app: str | None,
    user: str | None,
    status: str | None,
    limit: int,
) -> None:
    """Sessions: without a subcommand, list them, most recently updated first.

    'session list' lists them (by app, user, status); 'session show' prints
    one with its state and its last events. Nothing is written.

    \b
    Examples:
      abathur session --db ./agent.db
      abathur session list --db ./agent.db --app helpdesk --user alice --status active
      abathur session show --db ./agent.db 3f2a9c --last 50
    """
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        return  # a --db / --json given here reaches the subcommand (options.standard_options)
    _list(db_path, out, app=app, user=user, status=status, limit=limit)


@session.command("list")
@_list_options
@standard_options
def list_(
    *,
    db_path: Path,
    out: Output,
    app: str | None,
    user: str | None,
    status: str | None,
    limit: int,
) -> None:
    """List sessions, most recently updated first: id, app, user, status, revision, times.

    Without --app every application's sessions are listed; a session's state
    is in the --json output ("state", merged as sessions.get shows it).

    \b
    Examples:
      abathur session list --db ./agent.db
      abathur session list --db ./agent.db --app helpdesk --user alice
      abathur session list --db ./agent.db --status active --json | jq '.sessions[].id'
    """
    _list(db_path, out, app=app, user=user, status=status, limit=limit)


@session.command("show")
@click.argument("session_id")
@click.option(
    "--last",
    type=click.IntRange(0, _MAX_EVENTS),
    default=20,
    show_default=True,
    help="The newest N events (0: none); a note says when there are older ones.",
)
@standard_options
def show(*, db_path: Path, out: Output, session_id: str, last: int) -> None:
    """Print one session: its status and revision, its state, and its last events.

    State keys show their scope (app:, user:, or none for the session's own);
    values and event contents are JSON, cut to fit the tables, whole with
    --json. An unknown SESSION_ID is session.not_found, exit 3.

    \b
    Examples:
      abathur session show --db ./agent.db 3f2a9c
      abathur session show --db ./agent.db 3f2a9c --last 100
      abathur session show --db ./agent.db 3f2a9c --json | jq '.session.events[].content'
    """

    async def fetch(ab: Abathur) -> Session:
        # One more than shown: whether there are older events is then known.
        return await ab.sessions.get(session_id, last_n=last + 1)

    found = read_database(db_path, fetch)
    has_more = len(found.events) > last
    events = found.events[-last:] if last else []
    dump = found.model_dump(mode="json")
    dump["events"] = dump["events"][-last:] if last else []
    data = {
        "path": shown_db(db_path),
        "session": dump,
        "last": last,
        "has_more_events": has_more,
    }
    parts = [
        format_pairs(
            [
                ("session", found.id),
                ("app", found.app),
                ("user", found.user),
                ("status", found.status),
                ("revision", found.revision),
                ("created", format_time(found.created_at)),
                ("updated", format_time(found.updated_at)),
            ]
        ),
        "",
    ]
    if found.state:
        parts.append(f"state ({len(found.state)} key(s))")
        parts.append(
            format_table(
                ("key", "value"),
                (
                    (shorten(k, 40), shorten(json_text(v), _VALUE_WIDTH))
                    for k, v in sorted(found.state.items())
                ),
            )
        )
    else:
        parts.append("state: empty")
    parts.append("")
    if not events:
        parts.append("events: none" if not has_more else "events: not shown (--last 0)")
    else:
        older = ""
        if has_more:
            more = min(last * 2, _MAX_EVENTS)
            older = "; older ones exist" + (f": --last {more}" if more > last else "")
        parts.append(f"events (the last {len(events)}, oldest first{older})")
        parts.append(
            format_table(
                ("seq", "time", "author", "content", "state delta"),
                (
                    (
                        e.seq,
                        format_time(e.timestamp),
                        shorten(e.author, 20),
                        shorten(json_text(e.content), _VALUE_WIDTH),
                        shorten(json_text(e.state_delta), 40) if e.state_delta else "",
                    )
                    for e in events
                ),
            )
        )
    out.result(data, "\n".join(parts))

"""What every command shares: ``--db``, ``--json``, output, and the error edge.

Output contract: with ``--json`` stdout gets exactly one JSON document (keys
are snake_case, as in the models); without it, stdout gets human-readable
text. Logs and progress always go to stderr, so ``abathur info --json | jq``
works whatever is logged. An :class:`~abathur.errors.AbathurError` stops the
command at :func:`standard_options`: its code and message go to stderr (and
``{"error": {...}}`` to stdout with ``--json``) and the exit code is 3.
Exit codes are one table for every command (:data:`EXIT_CODES_HELP`).

``--db``, ``--json`` and ``--log-level`` are accepted before a command's name
too (``abathur --db x info``; the group keeps them in ``ctx.meta``) and after
it; the value given after the name wins.

Arguments are text, and abathur's text is UTF-8: an argument (or ``--db``,
or ``$ABATHUR_DB``) whose bytes are not UTF-8 reaches click as a string with
lone surrogates. :func:`standard_options` refuses it before the command runs,
as the library refuses such text: ``invalid_input``, exit 3, naming the option
and showing the bytes escaped (``'user:\\xff'``). So are a ``--db`` where no
database file can live (:func:`~abathur.backends.sqlite.database.check_db_path`) and a path
argument the file system refuses (a name too long). What is printed never
holds a surrogate (escaped, never a crash).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

import click

from abathur import logs
from abathur.errors import AbathurError, DatabaseError, InvalidInputError, SchemaError

if TYPE_CHECKING:
    from abathur.api import Abathur
    from abathur.config import PostgresUrl

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_USAGE",
    "GLOBAL_DB",
    "GLOBAL_JSON",
    "LOG_LEVELS",
    "DbTarget",
    "Output",
    "database_problem",
    "db_option",
    "format_pairs",
    "format_table",
    "format_time",
    "is_server",
    "json_text",
    "read_database",
    "shorten",
    "shown_db",
    "standard_options",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

# click rewraps help paragraphs; "\b" keeps this one as laid out.
EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}  ok
  {EXIT_FINDINGS}  findings: check/backup verify found a problem, health is not ok,
     a smoke case failed
  {EXIT_USAGE}  usage error: a bad option or argument, an unknown command
  {EXIT_ERROR}  operational error: no database at --db, a file that is not one, a locked
     file, any abathur error; its code and message are printed on stderr"""

LOG_LEVELS = ("debug", "info", "warning", "error")

# ctx.meta keys (meta is shared by every context of one invocation): the --db and
# --json given before a command's name, or to a group before its subcommand.
GLOBAL_DB = "abathur.db_path"
GLOBAL_JSON = "abathur.as_json"


class Output:
    """Writes a command's one result, as JSON or as text, and its errors."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, data: Mapping[str, Any], human: str) -> None:
        """Print the result: ``data`` as JSON with ``--json``, else the ``human`` text."""
        if self.as_json:
            click.echo(
                _printable(json.dumps(data, ensure_ascii=False, indent=2, default=_jsonable))
            )
        else:
            click.echo(_printable(human))

    def progress(self, message: str) -> None:
        """A line for the person watching; stderr, so it never mixes with the result."""
        click.echo(_printable(message), err=True)

    def error(self, exc: AbathurError, *, on_stdout: bool = True) -> None:
        """Report an error: code and message on stderr, and as JSON on stdout with ``--json``.

        ``on_stdout=False`` when stdout already holds the command's document
        (``health`` and ``metrics`` report an unreadable database, then exit 3).
        """
        click.echo(_printable(f"abathur: error [{exc.code}]: {exc.message}"), err=True)
        if self.as_json and on_stdout:
            text = json.dumps({"error": exc.to_dict()}, ensure_ascii=False, indent=2)
            click.echo(_printable(text))


def _printable(text: str) -> str:
    """``text`` with any lone surrogate escaped (``\\udcff``): stdout is strict UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _escaped(text: str) -> str:
    """An argument as the bytes it came from, non-UTF-8 ones escaped: ``'user:\\xff'``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the bytes argv held
    except UnicodeEncodeError:  # a surrogate no byte decodes to (e.g. from a Python caller)
        raw = text.encode("utf-8", "backslashreplace")
    shown = raw.decode("utf-8", "backslashreplace")
    if len(shown) > 100:  # a name too long is the point, not something to print whole
        shown = shown[:60] + "..." + shown[-30:]
    return "'" + shown + "'"


def _hint(name: str) -> str:
    """How click names a parameter in messages: ``'--prefix'``, ``'QUERY'``."""
    ctx = click.get_current_context()
    param = next((p for p in ctx.command.params if p.name == name), None)
    return param.get_error_hint(ctx) if param is not None else repr(name)


def _check_arguments(arguments: Mapping[str, Any]) -> None:
    """Refuse an argument whose bytes are not UTF-8 (see the module doc)."""
    for name, value in arguments.items():
        for item in value if isinstance(value, tuple | list) else (value,):
            if not isinstance(item, str | PurePath):
                continue
            text = str(item)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(
                    f"{_hint(name)}: {_escaped(text)} is not valid UTF-8 (Python reads such "
                    "bytes as lone surrogates); abathur keeps names, paths and queries as text"
                ) from None


def is_server(db_path: object) -> bool:
    """True when ``--db`` named a PostgreSQL server (a ``PostgresUrl``), not a file."""
    return not isinstance(db_path, PurePath) and type(db_path).__name__ == "PostgresUrl"


def shown_db(db_path: Path | PostgresUrl) -> str:
    """The database as messages and ``--json`` name it: a file's absolute path,
    or a server's URL without its password."""
    return str(db_path.absolute()) if isinstance(db_path, PurePath) else str(db_path)


def database_missing(db_path: Path) -> bool:
    """True when ``--db`` names a file that does not exist; a server is never "missing"
    here (opening it says whether it can be reached)."""
    return not is_server(db_path) and not db_path.is_file()


def _check_db(db_path: Path) -> None:
    """Refuse a ``--db`` where no database file can live, naming the option."""
    if is_server(db_path):  # a PostgresUrl: a server, no file to check
        return
    # Here, not at the top: the database layer pulls in sqlite-vec and numpy,
    # which `abathur --help` (this module's importer) never needs.
    from abathur.ops.files import check_db_path

    try:
        check_db_path(db_path)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{_hint('db_path')}: {exc.message}") from None


def database_problem(db_path: Path) -> AbathurError | None:
    """Why no database can be read at ``db_path``, or None when one can.

    For the commands that report on a database rather than stop (``health``,
    ``metrics``) and those that must not run without one (``smoke``): a missing
    file or one that is not a database is an operational error, exit 3, for
    every command. Opens read-only; creates nothing.
    """
    from abathur.ops import files

    return files.database_problem(db_path)


def _check_paths(arguments: Mapping[str, Any]) -> None:
    """Refuse a path argument the file system refuses outright (see the module doc).

    A name too long, a loop of links, a directory that cannot be searched:
    ``stat`` says so, where a command's own ``is_file()`` would raise it as an
    OSError traceback. A path that does not exist (yet) is the command's to judge.
    """
    ctx = click.get_current_context()
    for param in ctx.command.params:
        if not isinstance(param.type, click.Path) or param.name == "db_path":
            continue
        value = arguments.get(param.name or "")
        for item in value if isinstance(value, tuple | list) else (value,):
            if item is None or str(item) == "-":
                continue
            try:
                os.stat(item)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise InvalidInputError(
                    f"{param.get_error_hint(ctx)}: {_escaped(str(item))} cannot be used: "
                    f"{exc.strerror}"
                ) from None


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_pairs(pairs: Iterable[tuple[str, object]]) -> str:
    """Two aligned columns: a label and its value."""
    rows = [(label, "" if value is None else str(value)) for label, value in pairs]
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


def format_table(header: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    """A plain text table; numbers are right-aligned."""
    cells = [tuple(str(c) for c in header)]
    numeric = [False] * len(header)
    for row in rows:
        cells.append(tuple("" if c is None else str(c) for c in row))
        for i, c in enumerate(row):
            numeric[i] = numeric[i] or isinstance(c, int | float)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def json_text(value: object) -> str:
    """A user's value as the CLI shows it: one line of JSON, never a Python repr.

    Strings keep their quotes, so ``"1"`` and ``1`` differ, and a newline is
    ``\\n``: a table row stays one line.

    Example:
        >>> print(json_text({"value": "Français", "n": [1, None, True]}))
        {"value": "Français", "n": [1, null, true]}
    """
    return json.dumps(value, ensure_ascii=False, default=_jsonable)


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, ending in ``…`` when cut: table cells only.

    Example:
        >>> shorten("a" * 10, 6)
        'aaaaa…'
    """
    return text if len(text) <= width else text[: width - 1] + "…"


def format_time(at: float | None) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS`` (empty for ``None``), as tables show them."""
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


class DbTarget(click.ParamType):  # type: ignore[type-arg, unused-ignore]
    """``--db``'s type: a database file (as ``click.Path`` checks it), or a PostgreSQL URL.

    A ``postgresql://`` / ``postgres://`` URL becomes a
    :class:`~abathur.config.PostgresUrl` untouched: a ``Path`` would collapse
    its ``//`` (issue 14). Its password is never shown (the PostgresUrl's
    text is redacted).
    """

    name = "path"
    _file = click.Path(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """A ``PostgresUrl`` for a server URL, else a checked ``Path``."""
        if isinstance(value, str) and value.lower().startswith(("postgresql://", "postgres://")):
            # Here, not at the top: abathur.config loads pydantic, which
            # `abathur --help` never needs.
            from abathur.config import PostgresUrl

            return PostgresUrl(value)
        if type(value).__name__ == "PostgresUrl":  # already converted (a default, ctx.meta)
            return value
        return self._file.convert(value, param, ctx)


def db_option(
    *,
    default: Path | None = Path("abathur.db"),
    envvar: str | None = "ABATHUR_DB",
    show_default: bool | str = "$ABATHUR_DB, else ./abathur.db",
    help: str = "The database file, or a postgresql:// URL.",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--db`` option, as commands (and, without a default, the group) take it."""
    return click.option(
        "--db",
        "db_path",
        type=DbTarget(),
        envvar=envvar,
        default=default,
        show_default=show_default,
        help=help,
    )


def _global_options(db_path: Path, as_json: bool, log_level: str | None) -> tuple[Path, bool]:
    """The ``--db`` and ``--json`` in force: the command's own if given, else the group's.

    A value given on this command's line is also recorded for its subcommands
    (``abathur backup --db x verify FILE``); ``--log-level`` here reconfigures logging.
    """
    ctx = click.get_current_context()
    if ctx.get_parameter_source("db_path") is click.core.ParameterSource.COMMANDLINE:
        ctx.meta[GLOBAL_DB] = db_path
    elif GLOBAL_DB in ctx.meta:  # before the command's name: beats $ABATHUR_DB as well
        db_path = ctx.meta[GLOBAL_DB]
    if as_json:
        ctx.meta[GLOBAL_JSON] = True
    as_json = bool(ctx.meta.get(GLOBAL_JSON, False))
    if log_level is not None:
        logs.configure(level=log_level.upper())
    return db_path, as_json


def standard_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Add ``--db``, ``--json`` and ``--log-level`` to a command, and stop our errors at the edge.

    The command function receives ``db_path`` (a :class:`~pathlib.Path`) and
    ``out`` (an :class:`Output`) as keyword arguments. The three options are
    also accepted before the command's name (``abathur --db x info``); the
    value given after it wins.
    """

    @db_option()
    @click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of text."
    )
    @click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=None,
        help="Lowest level of the log lines written to stderr  [default: info]",
    )
    @functools.wraps(fn)
    def command(*, db_path: Path, as_json: bool, log_level: str | None, **kwargs: Any) -> None:
        db_path, as_json = _global_options(db_path, as_json, log_level)
        out = Output(as_json=as_json)
        try:
            # Before the command runs: it would look at these paths (is_file()...)
            # and meet an OSError or UnicodeEncodeError there.
            _check_arguments({"db_path": db_path, **kwargs})
            _check_db(db_path)
            _check_paths(kwargs)
            fn(db_path=db_path, out=out, **kwargs)
        except AbathurError as exc:
            out.error(exc)
            raise click.exceptions.Exit(EXIT_ERROR) from None

    return command


def read_database(db_path: Path, fn: Callable[[Abathur], Awaitable[T]]) -> T:
    """Run ``fn`` on the existing file at ``db_path``, opened without an embedder.

    For the commands that show data, which never write: a missing file is an
    error (``db.error``, exit 3), never created; a file whose schema is older
    or newer than this abathur's is refused (``db.schema``) before it is
    opened, never migrated. No model is loaded and no embedding worker runs;
    it is opened as a probe, so looking at the data adds nothing to ``stats``.
    """
    # Imported here: options is imported by every command, even `--version`.
    from abathur.api import Abathur
    from abathur.ops.files import plan_migrations

    if database_missing(db_path):
        raise DatabaseError(
            f"no database at {json.dumps(str(db_path), ensure_ascii=False)}: "
            f"create it with `abathur init --db {db_path}`"
        )

    async def run() -> T:
        # A server: opening with auto_migrate=False refuses a newer schema itself.
        plan = None if is_server(db_path) else await plan_migrations(db_path)
        if plan is not None and plan.pending:
            raise SchemaError(
                f"{json.dumps(str(db_path), ensure_ascii=False)} is at schema version "
                f"{plan.current} and this abathur reads version {plan.latest}: run "
                f"`abathur migrate --db {db_path}` first (showing data never migrates a file)"
            )
        async with Abathur.open(
            db_path, embedder="none", embed_worker=False, auto_migrate=False, probe=True
        ) as ab:
            return await fn(ab)

    return asyncio.run(run())

"""``abathur health`` and ``abathur metrics``: for monitoring, every minute if you like."""

from __future__ import annotations

from pathlib import Path

import click

from abathur.cli.options import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    Output,
    database_problem,
    format_table,
    shown_db,
    standard_options,
)
from abathur.ops.backup import backup_dir_for
from abathur.ops.health import health as check_health
from abathur.ops.metrics import collect, render, write_textfile

__all__ = ["health", "metrics"]


@click.command()
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Backup directory to look in (default: the backup_dir setting, else ./backups "
    "beside the database).",
)
@standard_options
def health(*, db_path: Path, out: Output, dest: Path | None) -> None:
    """Say whether the database is healthy: ok, warn or fail (exit 0 ok, 1 warn or fail).

    A database that cannot be read (none at --db, a file that is not one) is
    reported as a fail, then the command exits 3, as every command does.

    \b
    Looks at, without writing anything:
      database   opens and reads it; warn if its schema is not this abathur's
      wal        size of the -wal file (warn 64 MiB, fail 1 GiB)
      backup     age of the newest backup (warn 26 h, fail 72 h); with none yet,
                 the time since data was first written
      queue      embedding jobs waiting and the oldest one's age (if the file has a queue)
      disk       free space (warn under 10 %, fail under 3 % or less than the file's size)
    and prints the versions of abathur, SQLite, sqlite-vec, apsw and aiosqlite.

    \b
    On PostgreSQL (--db postgresql://...), instead of wal and disk:
      connections  client connections over max_connections (warn 80 %, fail 95 %)
      replication  the slowest standby's replay lag, where there is one
                   (warn 60 s, fail 10 min)
      wal          WAL held back by replication slots (warn 1 GiB, fail 10 GiB)
    and backup also reads the time the last backup recorded in the database.

    \b
    Examples:
      abathur health --db ./agent.db
      abathur health --db ./agent.db --json | jq -r .status
    """
    problem = database_problem(db_path)
    report = check_health(db_path, backup_dir=dest if dest is not None else backup_dir_for(db_path))
    table = format_table(
        ("status", "item", "detail"),
        ((i.status.upper() if i.status != "ok" else "ok", i.name, i.detail) for i in report.items),
    )
    versions = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in report.versions.items())
    human = (
        f"abathur health {shown_db(db_path)}: {report.status.upper()}\n\n{table}\n\n"
        f"versions: {versions}"
    )
    out.result(report.to_dict(), human)
    if problem is not None:
        out.error(problem, on_stdout=False)  # stdout holds the report already
        raise click.exceptions.Exit(EXIT_ERROR)
    raise click.exceptions.Exit(EXIT_OK if report.is_ok else EXIT_FINDINGS)


@click.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the metrics atomically to this file (node-exporter's textfile collector "
    "reads *.prom) instead of printing them.",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Backup directory to look in (default as for 'abathur backup').",
)
@standard_options
def metrics(*, db_path: Path, out: Output, textfile: Path | None, dest: Path | None) -> None:
    """Print metrics in Prometheus text exposition format (or --json).

    \b
    Families (every sample is labelled database="<absolute path>", or the
    server URL without its password):
      abathur_up, abathur_info, abathur_schema_version,
      abathur_database_size_bytes, abathur_wal_size_bytes,
      abathur_table_rows{table}, abathur_sessions{status}, abathur_memories{type},
      abathur_audit_records, abathur_embedding_queue_depth,
      abathur_embedding_queue_oldest_age_seconds,
      abathur_last_backup_timestamp_seconds, abathur_backups
    On PostgreSQL also abathur_table_size_bytes{table},
    abathur_index_size_bytes{index,table}, abathur_connections{state},
    abathur_server_connections, abathur_max_connections,
    abathur_replication_lag_seconds{standby} (where there is a standby),
    abathur_replication_slot_retained_bytes{slot}; table rows are estimates.
    A database that cannot be read (none at --db, a file that is not one) still
    yields abathur_up 0, printed or written to --textfile so a scrape sees it,
    and the command exits 3, as every command does.

    \b
    Examples:
      abathur metrics --db ./agent.db
      abathur metrics --db ./agent.db --textfile /var/lib/node_exporter/textfile/abathur.prom
      abathur metrics --db ./agent.db --json | jq '.metrics[].name'
    """
    problem = database_problem(db_path)
    found = collect(db_path, backup_dir=dest if dest is not None else backup_dir_for(db_path))
    text = render(found)
    data = {"path": shown_db(db_path), "metrics": [m.to_dict() for m in found]}
    if textfile is not None:
        written = write_textfile(textfile, text)
        data["textfile"] = str(written.absolute())
        out.result(data, f"wrote {len(found)} metric families to {written}")
    else:
        out.result(data, text.rstrip("\n"))
    if problem is not None:
        out.error(problem, on_stdout=False)  # stdout holds the metrics already
        raise click.exceptions.Exit(EXIT_ERROR)

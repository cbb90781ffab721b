"""``abathur backup`` (and ``backup list``, ``backup verify``) and ``abathur restore``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from abathur.cli.options import (
    EXIT_FINDINGS,
    EXIT_OK,
    Output,
    format_pairs,
    format_table,
    shown_db,
    standard_options,
)
from abathur.config import Settings, load_settings
from abathur.errors import CorruptBackupError, InvalidInputError
from abathur.ops.backup import (
    Backup,
    Retention,
    RetentionPlan,
    backup_dir_for,
    check_backup_label,
    create_backup,
    list_backups,
    pin_backup,
    prune_backups,
    unpin_backup,
    verify_backup,
)
from abathur.ops.backup_key import generate_key_file
from abathur.ops.restore import restore_backup

__all__ = ["backup", "restore"]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dest_option(fn: Any) -> Any:
    return click.option(
        "--dest",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Backup directory (default: the backup_dir setting, $ABATHUR_BACKUP_DIR, "
        "else ./backups beside the database).",
    )(fn)


def _allow_unauthenticated_option(fn: Any) -> Any:
    return click.option(
        "--allow-unauthenticated",
        is_flag=True,
        help="Accept a backup whose HMAC cannot be checked: made before the backup key was "
        "set up, or the key is lost. Its checksums are still verified; a wrong HMAC is "
        "still refused. See runbooks/06-backup-restore.md.",
    )(fn)


def _settings(allow_unauthenticated: bool) -> Settings | None:
    return Settings(backup_allow_unauthenticated=True) if allow_unauthenticated else None


def _removed_line(removed: tuple[Path, ...]) -> list[tuple[str, object]]:
    if not removed:
        return []
    return [("removed stale temps", ", ".join(p.name for p in removed) + " (owner gone)")]


def _min_age_setting() -> float:
    """``Settings.backup_min_age_days`` ($ABATHUR_BACKUP_MIN_AGE_DAYS), checked."""
    return load_settings().backup_min_age_days


def _retention_lines(plan: RetentionPlan, *, dry_run: bool) -> list[tuple[str, object]]:
    kept = ", ".join(f"{b.name} ({'+'.join(why)})" for b, why in plan.keep) or "none"
    verb = "would delete" if dry_run else "deleted"
    return [("kept", kept), (verb, ", ".join(b.name for b in plan.delete) or "nothing")]


@click.group(invoke_without_command=True)
@_dest_option
@click.option(
    "--keep-daily",
    type=click.IntRange(min=0),
    default=7,
    show_default=True,
    help="Keep the newest backup of each of the last N days that have one.",
)
@click.option(
    "--keep-weekly",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Keep the newest backup of each of the last N ISO weeks that have one.",
)
@click.option(
    "--keep-monthly",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Keep the newest backup of each of the last N months that have one.",
)
@click.option(
    "--min-age-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Never delete a backup younger than this many days "
    "(default: the backup_min_age_days setting, $ABATHUR_BACKUP_MIN_AGE_DAYS, 1).",
)
@click.option(
    "--keep",
    "pin",
    is_flag=True,
    help="Pin the new backup: retention never deletes it ('backup unpin' releases it).",
)
@click.option(
    "--label",
    default=None,
    help="A note on the new backup, e.g. 'before the v2 migration'; implies --keep.",
)
@click.option("--no-prune", is_flag=True, help="Take the backup and delete nothing.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Take no backup and delete nothing: show what retention would delete.",
)
@standard_options
def backup(
    *,
    db_path: Path,
    out: Output,
    dest: Path | None,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    min_age_days: float | None,
    pin: bool,
    label: str | None,
    no_prune: bool,
    dry_run: bool,
) -> None:
    """Take an online, verified, compressed backup, then apply retention.

    The live file is copied with SQLite's online backup API in one step (a
    single consistent snapshot; writers keep going), the copy passes
    integrity_check with sqlite-vec loaded, is compressed with zstandard and
    described by a manifest (sha256, sizes, versions, user_version, row
    counts, audit head). With a backup key ($ABATHUR_BACKUP_KEY_FILE or
    $ABATHUR_BACKUP_KEY) the manifest also carries an HMAC-SHA256, so any
    later edit is detected; without one the backup is only checksummed.
    Files appear by atomic rename: a backup exists once its
    NAME.manifest.json does. Temporary files left by killed runs are removed
    first. Not enough free space fails early with backup.no_space. Retention
    then keeps the newest backup of each of the last N days, weeks and months
    (grandfather-father-son), and never deletes the new backup, the newest
    two, any younger than --min-age-days (default 1) or a pinned one
    (--keep / --label; 'backup unpin FILE' releases a pin).

    \b
    Examples:
      abathur backup --db ./agent.db
      abathur backup --db ./agent.db --dest /var/backups/abathur --keep-daily 14
      abathur backup --db ./agent.db --dry-run
      abathur backup --db ./agent.db --keep --label "before the v2 migration"
      abathur backup list --db ./agent.db
      abathur backup verify --db ./agent.db backups/agent-20260315T020000.000000Z.db.zst
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    keep = Retention(
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        min_age_days=_min_age_setting() if min_age_days is None else min_age_days,
    )
    if label is not None:
        # Checked before the backup is taken, so a bad label takes none.
        try:
            check_backup_label(label)
        except InvalidInputError as exc:
            raise click.BadParameter(exc.message, param_hint="--label") from None
        pin = True
    directory = dest if dest is not None else backup_dir_for(db_path)
    data: dict[str, Any] = {
        "path": shown_db(db_path),
        "dest": str(directory.absolute()),
        "dry_run": dry_run,
    }
    if dry_run:
        plan = prune_backups(
            directory,
            keep,
            database=db_path.name,
            dry_run=True,
            assume_new_at=datetime.now(UTC),
        )
        data.update(backup=None, retention=plan.to_dict())
        lines: list[tuple[str, object]] = [
            ("database", data["path"]),
            ("backup", "dry run: none taken"),
            *_retention_lines(plan, dry_run=True),
        ]
        out.result(data, format_pairs(lines))
        return
    started = time.perf_counter()
    made = create_backup(db_path, dest=directory)
    if pin:
        made = pin_backup(made.manifest_path, label=label)
    seconds = time.perf_counter() - started
    pruned: RetentionPlan | None = None
    if not no_prune:
        pruned = prune_backups(
            directory, keep, database=db_path.name, protect=[made.manifest_path]
        )
    m = made.manifest
    assert m is not None  # a backup just made always has its manifest
    data.update(
        backup=made.to_dict(),
        authenticated=m.is_authenticated,
        key_id=m.key_id,
        removed_temps=[str(p) for p in made.removed_temps],
        seconds=round(seconds, 3),
        retention=None if pruned is None else pruned.to_dict(),
    )
    ratio = m.raw_bytes / m.compressed_bytes if m.compressed_bytes else 0.0
    lines = [
        ("database", data["path"]),
        ("backup", made.data_path),
        ("manifest", made.manifest_path),
        ("size", f"{_size(m.raw_bytes)} -> {_size(m.compressed_bytes)} ({ratio:.1f}x)"),
        ("rows", ", ".join(f"{t} {n}" for t, n in sorted(m.row_counts.items()))),
        ("audit head", f"seq {m.audit_head_seq}"),
        ("pinned", _pin_text(made) or "no"),
        (
            "authentication",
            f"hmac-sha256 with key {m.key_id}"
            if m.is_authenticated
            else "none: only checksummed (no backup key configured)",
        ),
        *_removed_line(made.removed_temps),
        ("took", f"{seconds:.2f} s"),
    ]
    lines += (
        _retention_lines(pruned, dry_run=False)
        if pruned
        else [("retention", "skipped (--no-prune)")]
    )
    out.result(data, format_pairs(lines))


def _pin_text(b: Backup) -> str:
    if b.pin is None:
        return ""
    label = b.pin.get("label")
    return f"pinned: {label}" if label else "pinned"


def _list_row(b: Backup) -> tuple[object, ...]:
    m = b.manifest
    if m is None:
        return (b.name, "", "", "", "", _pin_text(b), b.problem)
    return (
        b.name,
        _when(m.created_at),
        _size(m.compressed_bytes),
        _size(m.raw_bytes),
        m.row_counts.get("memories", 0),
        _pin_text(b),
        b.problem or "ok",
    )


@backup.command("list")
@_dest_option
@standard_options
def list_(*, db_path: Path, out: Output, dest: Path | None) -> None:
    """List the backups of the database, newest first.

    A backup whose manifest is unreadable or whose data file is missing or
    the wrong size is listed with the problem (and exit code 1); run
    'abathur backup verify' for the full check of one backup.

    \b
    Examples:
      abathur backup list --db ./agent.db
      abathur backup list --db ./agent.db --dest /var/backups/abathur --json
    """
    directory = dest if dest is not None else backup_dir_for(db_path)
    found = list_backups(directory, database=db_path.name)
    data = {
        "path": shown_db(db_path),
        "dest": str(directory.absolute()),
        "backups": [b.to_dict() for b in found],
    }
    table = format_table(
        ("name", "created", "compressed", "raw", "memories", "pin", "status"),
        (_list_row(b) for b in found),
    )
    out.result(data, table if found else f"no backups of {db_path.name} in {directory}")
    if any(b.problem for b in found):
        raise click.exceptions.Exit(EXIT_FINDINGS)


def _pin_result(out: Output, db_path: Path, made: Backup) -> None:
    data = {"path": shown_db(db_path), "backup": made.to_dict()}
    lines = [("backup", made.data_path), ("pinned", _pin_text(made) or "no")]
    out.result(data, format_pairs(lines))


@backup.command("pin")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label", default=None, help="A note saying why it is kept.")
@standard_options
def pin_(*, db_path: Path, out: Output, file: Path, label: str | None) -> None:
    """Pin a backup so retention never deletes it (FILE: its .db.zst or .manifest.json).

    The pin is a sidecar file NAME.pin.json; the manifest and its HMAC are
    not touched, so verify and restore work as before. Pinning again
    replaces the label.

    \b
    Examples:
      abathur backup pin backups/agent-20260315T020000.000000Z.db.zst --label "pre-v2"
    """
    _pin_result(out, db_path, pin_backup(file, label=label))


@backup.command("unpin")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@standard_options
def unpin(*, db_path: Path, out: Output, file: Path) -> None:
    """Remove a backup's pin: retention may delete it again (FILE: .db.zst or .manifest.json).

    \b
    Examples:
      abathur backup unpin backups/agent-20260315T020000.000000Z.db.zst
    """
    _pin_result(out, db_path, unpin_backup(file))


@backup.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_allow_unauthenticated_option
@standard_options
def verify(*, db_path: Path, out: Output, file: Path, allow_unauthenticated: bool) -> None:
    """Verify one backup: HMAC, checksum, decompression, integrity_check, contents vs manifest.

    FILE is the backup's .db.zst (or its .manifest.json). With a backup key
    configured, the manifest's HMAC is checked first, and a backup without a
    valid one is refused; without a key, the output says the backup is only
    checksummed. The database is decompressed beside it into a temporary
    file, checked with sqlite-vec loaded, and removed. Exit 0 when every test
    passes, 1 when the backup is damaged or fails authentication (code
    backup.corrupt with its reason), 3 for a key problem (backup.key: none
    configured for an authenticated backup, or another key).

    \b
    Examples:
      abathur backup verify --db ./agent.db backups/agent-20260315T020000.000000Z.db.zst
      abathur backup verify --json backups/agent-20260315T020000.000000Z.manifest.json
    """
    try:
        verified = verify_backup(file, settings=_settings(allow_unauthenticated))
    except CorruptBackupError as exc:
        out.error(exc)
        raise click.exceptions.Exit(EXIT_FINDINGS) from None
    data = {"path": shown_db(db_path), **verified.to_dict()}
    lines = [
        ("backup", file),
        ("result", "ok"),
        ("authentication", verified.authentication),
        *[("passed", c) for c in verified.checks],
        *_removed_line(verified.removed_temps),
        ("took", f"{verified.seconds:.2f} s"),
    ]
    out.result(data, format_pairs(lines))


@backup.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
@standard_options
def keygen(*, db_path: Path, out: Output, key_file: Path) -> None:
    """Write a new backup key (32 random bytes, hex) to KEY_FILE, readable by its owner only.

    The key itself is never printed; its id (the first 8 hex digits of its
    sha256) is, and backup manifests record it. An existing file is never
    overwritten. Keep the key away from the backups (another host or
    volume), then point ABATHUR_BACKUP_KEY_FILE at it for the backup job and
    for whoever verifies or restores. See runbooks/06-backup-restore.md.

    \b
    Examples:
      abathur backup keygen /etc/abathur/backup-2026.key
      abathur backup keygen --json ./backup.key
    """
    key = generate_key_file(key_file)
    data = {
        "path": shown_db(db_path),
        "key_file": str(key_file.absolute()),
        "key_id": key.key_id,
    }
    lines = [
        ("key file", key_file.absolute()),
        ("key id", key.key_id),
        ("next", f"export ABATHUR_BACKUP_KEY_FILE={key_file.absolute()}"),
    ]
    out.result(data, format_pairs(lines))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Restore to this file instead of --db.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the file even if another process has it open or it is not a database. "
    "Only for a process that is hung and will be killed: one that later closes the "
    "file normally can delete the restored file's WAL.",
)
@_allow_unauthenticated_option
@standard_options
def restore(
    *,
    db_path: Path,
    out: Output,
    file: Path,
    to: Path | None,
    force: bool,
    allow_unauthenticated: bool,
) -> None:
    """Restore a backup over the database, verified first, swapped atomically.

    The backup is verified completely (as 'abathur backup verify') while it
    is decompressed beside the target; a damaged backup, or with a backup
    key configured one whose HMAC does not match, is rejected and the
    current file is left byte for byte as it was. A database open in another
    process is refused (stop the application first) unless --force. The old
    file is kept aside as FILE.replaced-TIME, the new one is renamed into
    place, and 'abathur check --quick' runs on it: exit 0 when it is clean,
    1 when it has findings. Temporary files of killed restores beside the
    target are removed first.

    \b
    Examples:
      abathur restore --db ./agent.db backups/agent-20260315T020000.000000Z.db.zst
      abathur restore --db ./agent.db --to ./copy.db backups/agent-20260315T020000.000000Z.db.zst
      abathur restore --db ./agent.db --json --force backups/agent-20260315T020000.000000Z.db.zst
    """
    target = to if to is not None else db_path
    if target.absolute() == file.absolute():
        raise InvalidInputError("the backup file and the restore target are the same file")
    result = restore_backup(
        file, target=target, force=force, settings=_settings(allow_unauthenticated)
    )
    data = {"path": str(target.absolute()), **result.to_dict()}
    lines: list[tuple[str, object]] = [
        ("restored", result.target.absolute()),
        ("from", result.backup.data_path),
        ("taken at", _when(result.manifest.created_at)),
        ("old file kept as", result.replaced or "(there was none)"),
        *_removed_line(result.removed_temps),
    ]
    if result.forced:
        lines.append(("forced", "yes: the old file was in use or not a database"))
    lines += [
        (
            "check",
            "clean"
            if result.check.is_ok
            else f"{result.check.finding_count} finding(s): run 'abathur check'",
        ),
        ("took", f"{result.seconds:.2f} s"),
    ]
    out.result(data, format_pairs(lines))
    raise click.exceptions.Exit(EXIT_OK if result.check.is_ok else EXIT_FINDINGS)

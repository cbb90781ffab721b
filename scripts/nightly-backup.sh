#!/usr/bin/env bash
# nightly-backup.sh: checkpoint the WAL, take a verified backup, apply retention,
# then verify the new backup file again from disk (issue 5).
#
# Usage: nightly-backup.sh [--db PATH] [--dest DIR]
#                          [--keep-daily N] [--keep-weekly N] [--keep-monthly N]
#
#   --db PATH        the database (default $ABATHUR_DB, else ./abathur.db)
#   --dest DIR       the backup directory (default $ABATHUR_BACKUP_DIR, else
#                    ./backups beside the database, as 'abathur backup' decides)
#   --keep-*         retention, passed to 'abathur backup' (default 7 / 4 / 6); it
#                    never deletes the newest two, any younger than
#                    $ABATHUR_BACKUP_MIN_AGE_DAYS (default 1) or a pinned one
#
# Environment: ABATHUR_BIN (the abathur command, default: abathur on PATH),
# ABATHUR_BACKUP_KEY_FILE (the backup key: backups are then authenticated with an
# HMAC; keep it away from the backup directory, see runbooks/06-backup-restore.md),
# ABATHUR_PYTHON (the Python that runs it, default: its #! interpreter; it runs
# the checkpoint with the SQLite that abathur bundles, never an older sqlite3),
# ABATHUR_LOCK (default: DB.nightly.lock beside the database).
#
# Output: exactly one line on stderr, "abathur-nightly-backup: ok ..." or
# "abathur-nightly-backup: FAILED at STEP: reason" (cron mails it, systemd
# keeps it in the journal); "auth=hmac:KEYID" or "auth=none" says whether the
# backup is authenticated, "stale_temps=N" how many files of killed runs the
# backup removed. Exit codes: 0 ok, 1 a step failed, 2 usage,
# 75 another nightly job holds the lock (EX_TEMPFAIL: cron simply tries again
# next night; nothing was done).
set -uo pipefail

NAME=abathur-nightly-backup
DB=${ABATHUR_DB:-abathur.db}
DEST=${ABATHUR_BACKUP_DIR:-}
KEEP_DAILY=7
KEEP_WEEKLY=4
KEEP_MONTHLY=6

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
usage() { say "usage: $0 [--db PATH] [--dest DIR] [--keep-daily N] [--keep-weekly N] [--keep-monthly N]"; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --db) [ $# -ge 2 ] || usage; DB=$2; shift 2 ;;
        --dest) [ $# -ge 2 ] || usage; DEST=$2; shift 2 ;;
        --keep-daily) [ $# -ge 2 ] || usage; KEEP_DAILY=$2; shift 2 ;;
        --keep-weekly) [ $# -ge 2 ] || usage; KEEP_WEEKLY=$2; shift 2 ;;
        --keep-monthly) [ $# -ge 2 ] || usage; KEEP_MONTHLY=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) usage ;;
    esac
done

ABATHUR=${ABATHUR_BIN:-$(command -v abathur || true)}
if [ -z "$ABATHUR" ] || [ ! -x "$ABATHUR" ]; then
    say "FAILED at setup: no abathur command (put its bin directory on PATH or set ABATHUR_BIN)"
    exit 1
fi
PYTHON=${ABATHUR_PYTHON:-$(sed -n '1s/^#!//p' "$ABATHUR" | cut -d' ' -f1)}
[ -x "$PYTHON" ] || PYTHON=python3

ERR=$(mktemp "${TMPDIR:-/tmp}/$NAME.XXXXXX") || { say "FAILED at setup: mktemp"; exit 1; }
trap 'rm -f "$ERR"' EXIT

# fail STEP: the one log line, with the clearest line the failed command printed.
fail() {
    local reason
    reason=$(grep -m1 -E 'abathur: error|Error|error' "$ERR" || tail -n1 "$ERR")
    say "FAILED at $1: ${reason:-exit code $2} (db=$DB)"
    exit 1
}

if [ ! -f "$DB" ]; then
    say "FAILED at setup: no database at $DB"
    exit 1
fi

# One nightly job per database at a time: a backup and an archival run (or two
# backups) would only slow each other down.
LOCK=${ABATHUR_LOCK:-$DB.nightly.lock}
exec 9>>"$LOCK" || { say "FAILED at lock: cannot open $LOCK"; exit 1; }
if ! flock -n 9; then
    say "skipped: another nightly job holds $LOCK"
    exit 75
fi

started=$(date +%s)

# 1. Checkpoint: fold the WAL into the database file and truncate it, so the
#    backup copies one compact file and the WAL starts the day small. A busy
#    reader can make it partial (first column 1); the backup is still exact.
ckpt=$("$PYTHON" -m apsw "$DB" ".timeout 10000" "PRAGMA wal_checkpoint(TRUNCATE);" 2>"$ERR") \
    || fail checkpoint $?
case "$ckpt" in
    0\|*) checkpoint=done ;;
    *) checkpoint="partial ($ckpt: a reader was busy)" ;;
esac

# 2. Backup: online, integrity-checked, compressed, with its manifest; then retention.
dest_args=()
[ -n "$DEST" ] && dest_args=(--dest "$DEST")
out=$("$ABATHUR" backup --db "$DB" "${dest_args[@]}" --keep-daily "$KEEP_DAILY" \
    --keep-weekly "$KEEP_WEEKLY" --keep-monthly "$KEEP_MONTHLY" --json 2>"$ERR") \
    || fail backup $?
summary=$(printf '%s' "$out" | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
m = d["backup"]["manifest"]
auth = "hmac:" + d["key_id"] if d["authenticated"] else "none"
print(d["backup"]["file"], m["compressed_bytes"], len(d["retention"]["delete"]), auth,
      len(d["removed_temps"]))
' 2>"$ERR") || fail backup $?
read -r file size pruned auth stale <<<"$summary"

# 3. Verify the file as it is on disk: checksum, decompression, integrity, counts.
"$ABATHUR" backup verify --db "$DB" "$file" >/dev/null 2>"$ERR" || fail verify $?

say "ok db=$DB backup=$file bytes=$size pruned=$pruned checkpoint=$checkpoint" \
    "auth=$auth stale_temps=$stale took=$(( $(date +%s) - started ))s"

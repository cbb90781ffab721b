#!/usr/bin/env bash
# restore.sh: put a backup back in place of a database, the careful way (issue 5):
# verify the backup, ask for confirmation, restore it, then check the result.
#
# Usage: restore.sh [--db PATH] [--yes] [--force] [--allow-unauthenticated] BACKUP
#
#   BACKUP      a backup's .db.zst (or its .manifest.json), as 'abathur backup list' shows
#   --db PATH   the database to replace (default $ABATHUR_DB, else ./abathur.db)
#   --yes       do not ask: for scripts that have already decided
#   --force     passed to 'abathur restore': replace the file even if a process
#               still has it open (only for a hung process that will be killed)
#   --allow-unauthenticated
#               passed to 'abathur backup verify' and 'abathur restore': accept a
#               backup whose HMAC cannot be checked (made before the backup key
#               was set up, or the key is lost): checksums only. A wrong HMAC is
#               still refused.
#
# Stop the application first: 'abathur restore' refuses a database in use.
# The replaced file is kept aside as DB.replaced-TIME by 'abathur restore'.
#
# Environment: ABATHUR_BIN (the abathur command, default: abathur on PATH);
# ABATHUR_BACKUP_KEY_FILE (the backup key, to authenticate the backup).
# Exit codes: 0 restored and clean; 1 the backup failed verification (nothing
# changed) or the restored file has check findings; 2 usage, or not confirmed
# (nothing changed); 3 the restore itself failed (nothing changed: the swap is
# atomic).
set -uo pipefail

NAME=abathur-restore
DB=${ABATHUR_DB:-abathur.db}
YES=0
FORCE=()
UNAUTH=()
BACKUP=

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
usage() { say "usage: $0 [--db PATH] [--yes] [--force] [--allow-unauthenticated] BACKUP"; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --db) [ $# -ge 2 ] || usage; DB=$2; shift 2 ;;
        --yes|-y) YES=1; shift ;;
        --force) FORCE=(--force); shift ;;
        --allow-unauthenticated) UNAUTH=(--allow-unauthenticated); shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        -*) usage ;;
        *) [ -z "$BACKUP" ] || usage; BACKUP=$1; shift ;;
    esac
done
[ -n "$BACKUP" ] || usage

ABATHUR=${ABATHUR_BIN:-$(command -v abathur || true)}
if [ -z "$ABATHUR" ] || [ ! -x "$ABATHUR" ]; then
    say "no abathur command (put its bin directory on PATH or set ABATHUR_BIN)"
    exit 3
fi

# 1. Verify before anything else: a damaged backup must never get near the database.
say "verifying $BACKUP"
if ! "$ABATHUR" backup verify --db "$DB" "${UNAUTH[@]}" "$BACKUP"; then
    say "the backup failed verification: $DB was not touched"
    exit 1
fi

# 2. Confirm: this replaces the live file.
if [ "$YES" -ne 1 ]; then
    printf 'Replace %s with %s? The current file is kept aside. Type yes to go on: ' \
        "$DB" "$BACKUP" >&2
    answer=
    read -r answer || true
    if [ "$answer" != yes ]; then
        say "not confirmed: $DB was not touched"
        exit 2
    fi
fi

# 3. Restore: verified again while decompressing, swapped atomically, quick check after.
"$ABATHUR" restore --db "$DB" "${FORCE[@]}" "${UNAUTH[@]}" "$BACKUP"
code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 1 ]; then
    say "the restore failed (exit $code): $DB was not replaced"
    exit 3
fi

# 4. The full check (integrity_check, foreign keys, schema, audit chain, indexes).
if ! "$ABATHUR" check --db "$DB"; then
    say "restored, but 'abathur check' has findings: see above, and the runbooks"
    exit 1
fi
say "restored $DB from $BACKUP; check clean"

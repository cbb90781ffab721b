#!/usr/bin/env bash
# nightly-archival.sh: move cold data out of the hot tables ('abathur archive run')
# under the same lock as the nightly backup (issue 5).
#
# Usage: nightly-archival.sh [--db PATH] [--dry-run]
#
#   --db PATH    the database (default $ABATHUR_DB, else ./abathur.db)
#   --dry-run    report what would be archived; change nothing
#
# What is archived (and the policies deciding it) is 'abathur archive run's
# business: see 'abathur archive run --help'. Run it after the nightly backup,
# so the newest backup still holds everything archival moves.
#
# Environment: ABATHUR_BIN (the abathur command, default: abathur on PATH),
# ABATHUR_PYTHON (its Python, to read the JSON report; default: its #! line),
# ABATHUR_LOCK (default: DB.nightly.lock beside the database, shared with
# nightly-backup.sh so the two never run at once).
#
# Output: exactly one line on stderr, "abathur-nightly-archival: ok ..." or
# "abathur-nightly-archival: FAILED at STEP: reason". Exit codes: 0 ok, 1 the
# run failed, 2 usage, 75 another nightly job holds the lock (nothing done).
set -uo pipefail

NAME=abathur-nightly-archival
DB=${ABATHUR_DB:-abathur.db}
DRY_RUN=()

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
usage() { say "usage: $0 [--db PATH] [--dry-run]"; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --db) [ $# -ge 2 ] || usage; DB=$2; shift 2 ;;
        --dry-run) DRY_RUN=(--dry-run); shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) usage ;;
    esac
done

ABATHUR=${ABATHUR_BIN:-$(command -v abathur || true)}
if [ -z "$ABATHUR" ] || [ ! -x "$ABATHUR" ]; then
    say "FAILED at setup: no abathur command (put its bin directory on PATH or set ABATHUR_BIN)"
    exit 1
fi
if [ ! -f "$DB" ]; then
    say "FAILED at setup: no database at $DB"
    exit 1
fi

ERR=$(mktemp "${TMPDIR:-/tmp}/$NAME.XXXXXX") || { say "FAILED at setup: mktemp"; exit 1; }
OUT=$(mktemp "${TMPDIR:-/tmp}/$NAME.XXXXXX") || { say "FAILED at setup: mktemp"; exit 1; }
trap 'rm -f "$ERR" "$OUT"' EXIT

LOCK=${ABATHUR_LOCK:-$DB.nightly.lock}
exec 9>>"$LOCK" || { say "FAILED at lock: cannot open $LOCK"; exit 1; }
if ! flock -n 9; then
    say "skipped: another nightly job holds $LOCK"
    exit 75
fi

started=$(date +%s)
"$ABATHUR" archive run --db "$DB" "${DRY_RUN[@]}" --json >"$OUT" 2>"$ERR"
code=$?
if [ "$code" -ne 0 ]; then
    reason=$(grep -m1 -E 'abathur: error|Error|error' "$ERR" || tail -n1 "$ERR")
    say "FAILED at archive: ${reason:-exit code $code} (db=$DB)"
    exit 1
fi
# The run's totals as key=value: entries and rows moved, file size before and after.
PYTHON=${ABATHUR_PYTHON:-$(sed -n '1s/^#!//p' "$ABATHUR" | cut -d' ' -f1)}
[ -x "$PYTHON" ] || PYTHON=python3
counts=$("$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
keys = ("entries", "rows", "bytes_before", "bytes_after", "wal_bytes_after")
print(" ".join(f"{k}={d[k]}" for k in keys if k in d), end=" ")
' "$OUT" 2>/dev/null) || counts=
mode=archived
[ ${#DRY_RUN[@]} -gt 0 ] && mode="dry run"
say "ok db=$DB $mode ${counts}took=$(( $(date +%s) - started ))s"

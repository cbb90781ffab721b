"""Two source trees, one benchmark run: medians before and after a change, and their ratio.

Issue 13 (the storage seam) must keep ``make bench``'s medians within 10% of
before. Machine noise moves medians by more than that between runs, so both
trees are measured in ONE run, interleaved (before, after, before, after...),
each pass pinned to one core (``taskset -c 0``, when there is one), and each
tree's median is the median of its passes' medians. The benchmark files are
this checkout's; only ``PYTHONPATH`` (which ``abathur`` is imported) differs.

Usage::

    git worktree add /tmp/before <rev>      # the tree to compare against
    .venv/bin/python -m benchmarks.compare /tmp/before/src src --passes 3

It prints a table and writes ``benchmarks/results/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIMIT = 1.10  # after / before must stay under this


def one_pass(src: Path, cases: list[str], extra_env: dict[str, str]) -> dict[str, float]:
    """Run the cases once against ``src``; per-case median in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        env = {**os.environ, **extra_env, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
        subprocess.run(
            [*pin, sys.executable, "-m", "pytest", *cases, "--benchmark-only", "-q",
             "-p", "no:cacheprovider", f"--benchmark-json={out}"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )
        data = json.loads(out.read_text())
    return {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="src/ of the tree to compare against")
    parser.add_argument("after", type=Path, help="src/ of the changed tree")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["benchmarks/test_core.py"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compare.json")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="set for both trees, e.g. ABATHUR_EMBEDDER=none (no background embedding "
        "competing with the timed calls)",
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for n in range(args.passes):
        for label, src in (("before", args.before), ("after", args.after)):
            print(f"pass {n + 1}/{args.passes}: {label} ({src})", file=sys.stderr, flush=True)
            runs[label].append(one_pass(src.resolve(), args.cases, extra_env))
    names = sorted(set.intersection(*(set(r) for rs in runs.values() for r in rs)))
    rows = []
    for name in names:
        before = statistics.median(r[name] for r in runs["before"])
        after = statistics.median(r[name] for r in runs["after"])
        rows.append({"case": name, "before_us": before * 1e6, "after_us": after * 1e6,
                     "ratio": after / before, "within_10pct": after / before < LIMIT})
    print(f"{'case':45} {'before':>10} {'after':>10} {'ratio':>7}")
    for row in rows:
        flag = "" if row["within_10pct"] else "  <-- over 10%"
        print(f"{row['case']:45} {row['before_us']:9.1f}µ {row['after_us']:9.1f}µ "
              f"{row['ratio']:7.3f}{flag}")
    args.out.write_text(json.dumps(
        {"before": str(args.before), "after": str(args.after), "passes": args.passes,
         "env": extra_env,
         "cases": rows, "raw": runs}, indent=2) + "\n")
    return 0 if all(row["within_10pct"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

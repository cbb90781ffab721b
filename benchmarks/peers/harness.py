"""Alternating timing: every round runs each backend once, in rotating order.

Backends share the process, the event loop and the machine's noise of the
moment, so per-operation ratios from one run are what to quote.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# ABATHUR_BENCH_RESULTS redirects the output (trial runs that must not replace the tables).
RESULTS = Path(
    os.environ.get("ABATHUR_BENCH_RESULTS") or Path(__file__).resolve().parents[1] / "results"
)


@dataclass
class Timings:
    """Per operation, per backend: seconds of each round."""

    rows: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, op: str, backend: str, seconds: float) -> None:
        self.rows.setdefault((op, backend), []).append(seconds)


async def alternate(
    timings: Timings,
    op: str,
    calls: dict[str, Callable[[int], Awaitable[object]]],
    rounds: int,
) -> None:
    """Time ``calls[backend](i)`` for i in range(rounds), backends interleaved."""
    names = list(calls)
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            await calls[name](i)
            timings.add(op, name, time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def environment() -> dict[str, str]:
    import sqlite3

    import apsw

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {_cpus()} CPUs ({_cpu_model()})",
        "python": f"{platform.python_version()} ({platform.python_implementation()}, "
        f"{Path(__import__('sys').executable).resolve()})",
        "stdlib sqlite3": sqlite3.sqlite_version,
        "abathur SQLite (apsw)": apsw.sqlite_lib_version(),
        # When the results are written: other jobs on a shared machine show here.
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for dist in (
        "abathur",
        "apsw",
        "sqlite-vec",
        "google-adk",
        "sqlalchemy",
        "aiosqlite",
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    return env


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(timings: Timings, reference: str) -> list[dict[str, object]]:
    """One row per (op, backend): median, p95, rounds and the ratio to ``reference``."""
    out = []
    ops = list(dict.fromkeys(op for op, _ in timings.rows))
    for op in ops:
        ref = timings.rows.get((op, reference))
        ref_med = statistics.median(ref) if ref else None
        for (o, backend), values in timings.rows.items():
            if o != op:
                continue
            med = statistics.median(values)
            out.append(
                {
                    "operation": op,
                    "backend": backend,
                    "median_ms": round(med * 1e3, 3),
                    "p95_ms": round(pct(values, 0.95) * 1e3, 3),
                    "rounds": len(values),
                    f"x_{reference}": round(med / ref_med, 2) if ref_med else "",
                    "note": timings.notes.get((op, backend), ""),
                }
            )
    return out


def markdown(rows: list[dict[str, object]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, rows: list[dict[str, object]], extra: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if rows:
        with (RESULTS / f"{name}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    env = environment()
    md = [f"# {name}", "", *(f"- {k}: {v}" for k, v in env.items()), ""]
    md += [f"- {k}: {v}" for k, v in extra.items()]
    md += ["", markdown(rows), ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"env": env, "extra": extra, "rows": rows}, indent=1, default=str)
    )
    return path

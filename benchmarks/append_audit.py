"""What auditing every event costs append_event (issue 11, item 12).

Appends N events sequentially, through the public async API, to one session
on a real WAL file (default settings, no embedder), and reports events/s:
the median of several runs, each on a fresh file. Both variants run in the
same process, interleaved, so the machine's state affects them alike:

- ``audited``: the library as it ships (one ``event.append`` audit record
  per event, covering the event row);
- ``no-record``: the same code with the audit record skipped (the
  ``abathur.sessions`` module's ``audit.append`` replaced by a no-op, for
  this benchmark only): the cost of the write without its record.

Run it pinned to one core, as the other benchmarks are::

    taskset -c 0 .venv/bin/python -m benchmarks.append_audit --events 2000 --runs 5

To compare with the code before the change, run the same file against an
older checkout's ``src`` (``PYTHONPATH=/path/to/old/src``): there only the
``no-record`` figure means something different (no record was ever written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import abathur.sessions as sessions_module
from abathur import Abathur, Event, audit


async def _one_run(path: Path, events: int) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) to append ``events`` events to one new session."""
    async with Abathur.open(path, embedder="none", embed_worker=False) as ab:
        session = await ab.sessions.create(app="bench", user="writer")
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(events):
            await ab.sessions.append_event(
                session.id,
                Event(author="user", content={"text": f"message {i}"}, state_delta={"turn": i}),
            )
        return time.perf_counter() - started, time.process_time() - cpu


def _no_record() -> Any:
    """A stand-in for abathur.audit inside abathur.sessions that writes no record."""
    return SimpleNamespace(
        next_seq=getattr(audit, "next_seq", lambda conn: 0),
        append=lambda *args, **kwargs: 0,
    )


def measure(events: int, runs: int) -> dict[str, Any]:
    """Median events/s of each variant over ``runs`` interleaved runs."""
    real = sessions_module.audit
    rates: dict[str, list[float]] = {"audited": [], "no-record": []}
    cpu_rates: dict[str, list[float]] = {"audited": [], "no-record": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            for variant in rates:
                sessions_module.audit = real if variant == "audited" else _no_record()
                try:
                    path = Path(tmp) / f"{variant}-{run}.db"
                    seconds, cpu = asyncio.run(_one_run(path, events))
                finally:
                    sessions_module.audit = real
                rates[variant].append(events / seconds)
                cpu_rates[variant].append(events / cpu)
    result: dict[str, Any] = {"events": events, "runs": runs}
    for variant, values in rates.items():
        result[variant] = {
            "median_events_per_s": round(statistics.median(values)),
            "runs_events_per_s": [round(v) for v in values],
            # Per CPU second of this process: steadier than wall time on a busy machine.
            "median_events_per_cpu_s": round(statistics.median(cpu_rates[variant])),
        }
    audited = result["audited"]["median_events_per_s"]
    bare = result["no-record"]["median_events_per_s"]
    result["audited_over_no_record"] = round(audited / bare, 3)
    result["audited_over_no_record_cpu"] = round(
        result["audited"]["median_events_per_cpu_s"]
        / result["no-record"]["median_events_per_cpu_s"],
        3,
    )
    return result


def main() -> None:
    """Parse arguments, measure, print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events appended per run")
    parser.add_argument("--runs", type=int, default=5, help="runs of each variant")
    args = parser.parse_args()
    print(json.dumps(measure(args.events, args.runs), indent=2))


if __name__ == "__main__":
    main()

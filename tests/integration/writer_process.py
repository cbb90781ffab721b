"""A separate OS process that writes memories to one file for a while.

Run as ``python writer_process.py DB LABEL SECONDS``; prints one JSON line:
``{"label": ..., "written": N, "errors": [...]}``. Used by test_races.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from abathur import Abathur, AbathurError

WRITERS_PER_PROCESS = 4


async def main(path: str, label: str, seconds: float) -> dict[str, object]:
    errors: list[str] = []
    written = 0
    async with Abathur.open(path) as ab:
        deadline = time.monotonic() + seconds

        async def writer(w: int) -> None:
            nonlocal written
            n = 0
            while time.monotonic() < deadline:
                key = f"w{w}-{n}"
                try:
                    await ab.memory.put(f"race:{label}", key, {"n": n, "w": w})
                    # Every few writes, a read in the same process, racing the other one.
                    if n % 10 == 0:
                        await ab.memory.get(f"race:{label}", key)
                except AbathurError as exc:  # recorded, and the test fails on any
                    errors.append(f"{exc.code}: {exc}")
                    continue
                written += 1
                n += 1

        await asyncio.gather(*(writer(w) for w in range(WRITERS_PER_PROCESS)))
    return {"label": label, "written": written, "errors": errors}


if __name__ == "__main__":
    db, name, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(asyncio.run(main(db, name, duration))))

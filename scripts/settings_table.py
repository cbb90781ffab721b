"""Write the configuration table of docs/configuration.md from ``abathur.Settings``.

Run after adding or changing a setting (``tests/unit/test_docs.py`` fails until you do):

    .venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from abathur.config import settings_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings-table: begin (scripts/settings_table.py writes this) -->\n"
END = "<!-- settings-table: end -->\n"


def render(text: str) -> str:
    """``text`` with the table between the two markers replaced by a fresh one."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{DOC}: the settings-table markers are missing")
    return head + BEGIN + settings_table() + END + tail


def main() -> int:
    old = DOC.read_text("utf-8")
    new = render(old)
    if new != old:
        DOC.write_text(new, "utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

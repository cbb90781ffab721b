"""docs/architecture.md's table of the storage seam counts what the protocols hold (issue 13)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORES = ROOT / "src" / "abathur" / "stores"


def protocol_methods() -> dict[str, int]:
    """Public methods of each Protocol class in abathur.stores (Backend, Transaction aside)."""
    counts: dict[str, int] = {}
    for path in sorted(STORES.glob("*.py")):
        for node in ast.parse(path.read_text("utf-8")).body:
            if isinstance(node, ast.ClassDef) and any(
                getattr(base, "id", None) == "Protocol" for base in node.bases
            ):
                counts[node.name] = sum(
                    isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                    for item in node.body
                )
    return counts


def test_the_table_counts_every_store_method() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    table = {
        name: int(n)
        for name, n in re.findall(r"^\| `\w+` \| `(\w+)` \| (\d+) \|", text, re.M)
    }
    counts = protocol_methods()
    stores = {k: v for k, v in counts.items() if k not in ("Backend", "Transaction")}
    ops = {k: stores.pop(k) for k in ("OpsKit", "StorageLock")}
    assert table == stores
    assert f"`OpsKit` ({ops['OpsKit']} methods) and `StorageLock` ({ops['StorageLock']})" in text
    total = sum(stores.values()) + sum(ops.values())
    assert f"**{total} store methods**" in text

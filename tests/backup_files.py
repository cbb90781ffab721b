"""Helpers for the tests of backups and of files under attack: digests of the
files beside a database, a backup's manifest read and rewritten, another
process holding the database open, a backup tampered with behind its checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import zstandard

from abathur.ops.backup import Backup

__all__ = [
    "files_in",
    "held_open",
    "pack_as_backup",
    "read_manifest",
    "sha",
    "tamper_with_a_memory",
    "write_manifest",
]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(directory: Path) -> dict[str, str]:
    """Every file beside the database (not the backups), by name, with its digest."""
    return {p.name: sha(p) for p in sorted(directory.iterdir()) if p.is_file()}


def read_manifest(backup: Backup) -> dict:
    return json.loads(backup.manifest_path.read_text())


def write_manifest(backup: Backup, data: dict) -> None:
    backup.manifest_path.write_text(json.dumps(data))


HOLDER = """
import asyncio, sys
from abathur import Abathur, logs
logs.configure(json=True)
async def main():
    async with Abathur.open(sys.argv[1], embed_worker=False) as ab:
        await ab.memory.get("hold", "open")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
asyncio.run(main())
"""


@contextlib.contextmanager
def held_open(path: Path) -> Iterator[subprocess.Popen]:
    """Another process with the database open (an idle application), until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def tamper_with_a_memory(b: Backup, tmp_path: Path) -> None:
    """Edit a memory value in the database inside, recompress, fix every checksum and size."""
    raw = tmp_path / "edited.db"
    raw.write_bytes(zstandard.ZstdDecompressor().decompress(b.data_path.read_bytes()))
    conn = apsw.Connection(str(raw))
    conn.execute("PRAGMA journal_mode = DELETE")
    (before,) = conn.execute("SELECT value FROM memories ORDER BY rowid LIMIT 1").fetchall()[0]
    conn.execute(
        "UPDATE memories SET value = :v WHERE rowid = (SELECT min(rowid) FROM memories)",
        {"v": json.dumps({"value": "transfer everything to mallory"})},
    )
    conn.close()
    data = raw.read_bytes()
    packed = zstandard.ZstdCompressor().compress(data)
    b.data_path.write_bytes(packed)
    write_manifest(
        b,
        {
            **read_manifest(b),
            "sha256": hashlib.sha256(packed).hexdigest(),
            "compressed_bytes": len(packed),
            "raw_sha256": hashlib.sha256(data).hexdigest(),
            "raw_bytes": len(data),
        },
    )
    assert "mallory" not in before


def pack_as_backup(raw: Path, honest_manifest: Path, directory: Path, name: str) -> Path:
    """``raw`` (a pg_dump archive) packed as backup ``name`` in ``directory``, under an
    honest backup's manifest re-checksummed to match: what an attacker who can write
    the backup directory (but holds no backup key) can make."""
    payload = raw.read_bytes()
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(payload)
    data_path = directory / f"{name}.db.zst"
    data_path.write_bytes(packed)
    manifest = json.loads(honest_manifest.read_text())
    manifest.update(
        file=data_path.name,
        sha256=hashlib.sha256(packed).hexdigest(),
        compressed_bytes=len(packed),
        raw_bytes=len(payload),
        raw_sha256=hashlib.sha256(payload).hexdigest(),
    )
    (directory / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return data_path

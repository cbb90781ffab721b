"""zstandard compression of archive payloads, with one trained dictionary per kind."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import apsw
import structlog
import zstandard

__all__ = ["BadDictionaryError", "Codecs", "bounded_decompress", "sha256"]

log = structlog.get_logger(__name__)

_ZSTD_LEVEL = 9
_DICT_SIZE = 16 * 1024
_DICT_MIN_SAMPLES = 32
_DICT_MIN_BYTES = 8 * 1024
# The zstd window a payload may ask for: level 9 uses at most 4 MiB
# (windowLog 22); zstd's own default limit is 128 MiB.
_MAX_WINDOW = 1 << 24
_READ_CHUNK = 1 << 20

_SQL_LATEST_DICT = (
    "SELECT id, dict, sha256 FROM archive_dicts WHERE kind = ? ORDER BY id DESC LIMIT 1"
)
_SQL_DICT = "SELECT dict, sha256 FROM archive_dicts WHERE id = ?"
_SQL_DICT_UNCHECKSUMMED = "SELECT dict, NULL FROM archive_dicts WHERE id = ?"


class BadDictionaryError(Exception):
    """A dictionary that is missing or fails its checksum; the message says which."""


class Codecs:
    """zstandard compressors and dictionaries, one per dictionary, kept per process.

    Decompressors are made per call: a read may run on any reader thread, and
    one zstd context must not be used by two threads at once.
    """

    def __init__(self, *, checksummed: bool = True) -> None:
        # False only to read a file not yet migrated to the checksum columns.
        self._sql_dict = _SQL_DICT if checksummed else _SQL_DICT_UNCHECKSUMMED
        self._plain_c = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        # Keyed by (id, sha256 of the bytes): a dictionary row changed since it
        # was cached is never used from the cache.
        self._dicts: dict[tuple[int, str], zstandard.ZstdCompressionDict] = {}
        self._compressors: dict[tuple[int, str], zstandard.ZstdCompressor] = {}

    def _dictionary(self, dict_id: int, data: bytes, digest: str) -> zstandard.ZstdCompressionDict:
        found = self._dicts.get((dict_id, digest))
        if found is None:
            found = self._dicts[(dict_id, digest)] = zstandard.ZstdCompressionDict(data)
        return found

    def compress(
        self, conn: apsw.Connection, kind: str, payloads: Sequence[bytes], *, may_train: bool
    ) -> tuple[int | None, list[bytes]]:
        """Compress with the kind's dictionary, training one first if there is none yet."""
        rows = conn.execute(_SQL_LATEST_DICT, (kind,)).fetchall()
        if not rows and may_train:
            rows = self._train(conn, kind, payloads)
        if rows:
            dict_id, data, recorded = rows[0]
            digest = sha256(data)
            if recorded is None or recorded == digest:
                compressor = self._compressors.get((dict_id, digest))
                if compressor is None:
                    compressor = zstandard.ZstdCompressor(
                        level=_ZSTD_LEVEL, dict_data=self._dictionary(dict_id, data, digest)
                    )
                    self._compressors[(dict_id, digest)] = compressor
                return dict_id, [compressor.compress(p) for p in payloads]
            # A damaged dictionary: new rows go without one; `abathur check` reports it.
            log.warning("archive.dictionary_corrupt", dict_id=dict_id, kind=kind)
        return None, [self._plain_c.compress(p) for p in payloads]

    def _train(
        self, conn: apsw.Connection, kind: str, payloads: Sequence[bytes]
    ) -> list[tuple[int, bytes, str]]:
        total = sum(map(len, payloads))
        if len(payloads) < _DICT_MIN_SAMPLES or total < _DICT_MIN_BYTES:
            return []
        try:
            trained = zstandard.train_dictionary(min(_DICT_SIZE, total // 4), list(payloads))
        except zstandard.ZstdError:
            return []  # too little variety to learn from: compress each row alone
        data = trained.as_bytes()
        digest = sha256(data)
        conn.execute(
            "INSERT INTO archive_dicts (kind, created_at, dict, sha256) VALUES (?, ?, ?, ?)",
            (kind, time.time(), data, digest),
        )
        return [(conn.last_insert_rowid(), data, digest)]

    def verified_dictionary(
        self, conn: apsw.Connection, dict_id: int
    ) -> zstandard.ZstdCompressionDict:
        """Dictionary ``dict_id``, once its bytes match their checksum (if it has one)."""
        found = conn.execute(self._sql_dict, (dict_id,)).fetchall()
        if not found:
            raise BadDictionaryError(f"its dictionary {dict_id} is missing")
        data, recorded = found[0]
        digest = sha256(data)
        if recorded is not None and recorded != digest:
            raise BadDictionaryError(f"its dictionary {dict_id} does not match its checksum")
        return self._dictionary(dict_id, data, digest)


def sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def bounded_decompress(
    payload: bytes, dictionary: zstandard.ZstdCompressionDict | None, limit: int
) -> bytearray | None:
    """The payload decompressed, or None as soon as it would exceed ``limit`` bytes.

    Streamed in chunks, so a bomb (a few KiB that expand to gigabytes) costs
    at most ``limit`` bytes of memory, whatever size its frame header claims.

    Raises:
        zstandard.ZstdError: the payload is not a valid zstd frame (for this dictionary).
    """
    dctx = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=_MAX_WINDOW)
    out = bytearray()
    with dctx.stream_reader(payload) as reader:
        while len(out) <= limit:
            chunk = reader.read(min(_READ_CHUNK, limit + 1 - len(out)))
            if not chunk:
                return out
            out += chunk
    return None

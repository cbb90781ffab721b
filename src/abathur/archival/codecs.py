"""zstandard compression of archive payloads, with one trained dictionary per kind."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import structlog
import zstandard

from abathur.stores.archive import ArchiveStore, Dictionary

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


class BadDictionaryError(Exception):
    """A dictionary that is missing or fails its checksum; the message says which."""


class Codecs:
    """zstandard compressors and dictionaries, one per dictionary, kept per process.

    Decompressors are made per call: a read may run on any reader thread, and
    one zstd context must not be used by two threads at once.
    """

    def __init__(self, *, checksummed: bool = True) -> None:
        # False only to read a file not yet migrated to the checksum columns.
        self._checksummed = checksummed
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
        self, store: ArchiveStore, kind: str, payloads: Sequence[bytes], *, may_train: bool
    ) -> tuple[int | None, list[bytes]]:
        """Compress with the kind's dictionary, training one first if there is none yet.

        ``may_train`` is False in a dry run, which writes nothing.
        """
        found = store.latest_dictionary(kind)
        if found is None and may_train:
            found = self._train(store, kind, payloads)
        if found is not None:
            digest = sha256(found.data)
            if found.sha256 is None or found.sha256 == digest:
                compressor = self._compressors.get((found.id, digest))
                if compressor is None:
                    compressor = zstandard.ZstdCompressor(
                        level=_ZSTD_LEVEL,
                        dict_data=self._dictionary(found.id, found.data, digest),
                    )
                    self._compressors[(found.id, digest)] = compressor
                return found.id, [compressor.compress(p) for p in payloads]
            # A damaged dictionary: new rows go without one; `abathur check` reports it.
            log.warning("archive.dictionary_corrupt", dict_id=found.id, kind=kind)
        return None, [self._plain_c.compress(p) for p in payloads]

    def _train(
        self, store: ArchiveStore, kind: str, payloads: Sequence[bytes]
    ) -> Dictionary | None:
        total = sum(map(len, payloads))
        if len(payloads) < _DICT_MIN_SAMPLES or total < _DICT_MIN_BYTES:
            return None
        try:
            trained = zstandard.train_dictionary(min(_DICT_SIZE, total // 4), list(payloads))
        except zstandard.ZstdError:
            return None  # too little variety to learn from: compress each row alone
        data = trained.as_bytes()
        digest = sha256(data)
        dict_id = store.insert_dictionary(kind, data, digest, time.time())
        return Dictionary(dict_id, kind, data, digest)

    def verified_dictionary(
        self, store: ArchiveStore, dict_id: int
    ) -> zstandard.ZstdCompressionDict:
        """Dictionary ``dict_id``, once its bytes match their checksum (if it has one)."""
        found = store.dictionary(dict_id, checksummed=self._checksummed)
        if found is None:
            raise BadDictionaryError(f"its dictionary {dict_id} is missing")
        digest = sha256(found.data)
        if found.sha256 is not None and found.sha256 != digest:
            raise BadDictionaryError(f"its dictionary {dict_id} does not match its checksum")
        return self._dictionary(dict_id, found.data, digest)


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

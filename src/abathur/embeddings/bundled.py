"""The bundled offline embedder: all-MiniLM-L6-v2 on onnxruntime, shipped inside the package.

No torch and no download at run time: the ONNX file and ``tokenizer.json`` live in
``abathur/embeddings/model/`` (see ``PROVENANCE.md`` there for where they come from and
how ``scripts/export_minilm.py`` re-creates them). The model reads at most 256 word pieces
per text (longer texts are truncated, as sentence-transformers does); vectors are the
attention-masked mean of the last hidden state, L2-normalised, 384 floats.

The inference session and the tokenizer are loaded once per process, on the first call
that embeds something, and shared by every :class:`BundledEmbedder`: opening a database
costs nothing until a text is embedded, and a process that opens many databases holds
one copy of the model. onnxruntime and tokenizers are imported at that moment too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import structlog

from abathur.embeddings.base import EmbedResult
from abathur.errors import EmbedderError, InvalidInputError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from tokenizers import Tokenizer

__all__ = ["BundledEmbedder"]

log = structlog.get_logger(__name__)

MODEL = "all-MiniLM-L6-v2"
DIMS = 384
MAX_TOKENS = 256  # the model's max_seq_length, [CLS] and [SEP] included
THREADS = 2  # intra-op threads: the machines abathur targets have two cores per process

# Batches hold at most this many texts and this many padded tokens. Texts are sorted by
# length first, so a batch of short sentences is not padded to the longest text of the
# call, and a batch of 256-piece chunks stays small enough for attention's
# batch x 12 x length^2 scores (16 x 12 x 256^2 floats = 50 MB).
BATCH_TEXTS = 64
BATCH_TOKENS = 4096


@dataclass(frozen=True)
class _Runtime:
    """A loaded model: one inference session and one tokenizer, safe to share across threads."""

    session: InferenceSession
    tokenizer: Tokenizer

    @classmethod
    def from_bytes(cls, model: bytes, tokenizer_json: str) -> _Runtime:
        """Build the session and tokenizer from the serialised files.

        Raises:
            EmbedderError: either file cannot be loaded.
        """
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings go through our exceptions
        try:
            session = onnxruntime.InferenceSession(
                model, options, providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_str(tokenizer_json)
        # onnxruntime's errors are pybind11 classes deriving from Exception directly,
        # and tokenizers raises plain Exception on a bad file.
        except Exception as exc:
            raise EmbedderError(f"cannot load the bundled {MODEL} model: {exc}") from exc
        tokenizer.no_padding()  # the shipped file pads to 128; we pad each batch ourselves
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        return cls(session=session, tokenizer=tokenizer)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, [CLS] and [SEP] included, truncated to MAX_TOKENS."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def infer(self, batch: list[list[int]]) -> np.ndarray:
        """Unit vectors (float32, ``len(batch)`` x DIMS) for a batch of token id lists.

        Raises:
            EmbedderError: onnxruntime failed.
        """
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        try:
            (hidden,) = self.session.run(["last_hidden_state"], feeds)
        except Exception as exc:  # onnxruntime's pybind11 errors, see from_bytes
            raise EmbedderError(f"the bundled {MODEL} model failed: {exc}") from exc
        weights = mask.astype(np.float32)
        pooled = np.einsum("bsd,bs->bd", hidden, weights) / weights.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: np.ndarray = pooled / np.maximum(norms, 1e-12)
        return unit


_shared: _Runtime | None = None
_shared_lock = threading.Lock()


def _runtime() -> _Runtime:
    """The process-wide model, loaded from the package data on first use."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                started = time.perf_counter()
                folder = resources.files("abathur.embeddings").joinpath("model")
                try:
                    model = folder.joinpath("model.onnx").read_bytes()
                    tokenizer_json = folder.joinpath("tokenizer.json").read_text("utf-8")
                except OSError as exc:
                    raise EmbedderError(
                        f"the bundled {MODEL} model files are missing or unreadable ({exc}): "
                        "reinstall abathur"
                    ) from exc
                _shared = _Runtime.from_bytes(model, tokenizer_json)
                # Debug: every CLI search is a new process and loads the model once;
                # an info line there would be noise on each call (issue 12).
                log.debug(
                    "embedder.loaded",
                    model=MODEL,
                    seconds=round(time.perf_counter() - started, 3),
                )
    return _shared


def _check_texts(texts: object) -> list[str]:
    """The texts as a list, or InvalidInputError naming what is wrong."""
    if isinstance(texts, str | bytes | bytearray) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"texts must be a list or tuple of str, not {type(texts).__name__}")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{i}] must be a str, not {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"texts[{i}] is not valid Unicode: {exc.reason} at position {exc.start}"
                ) from exc
    return items


def _batches(encoded: list[list[int]]) -> list[list[int]]:
    """Indices into ``encoded``, shortest first, grouped within BATCH_TEXTS and BATCH_TOKENS."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the text being added is the longest of its batch.
        if current and (
            len(current) == BATCH_TEXTS or (len(current) + 1) * len(encoded[i]) > BATCH_TOKENS
        ):
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    return batches


class BundledEmbedder:
    """all-MiniLM-L6-v2 (384-d), run offline by onnxruntime from the package's own files.

    Implements :class:`~abathur.embeddings.Embedder`. Instances are cheap: they all share
    one model, loaded on the first call that embeds a text. Inference runs in worker
    threads (two intra-op threads each), never on the event loop.

    Attributes:
        name: ``"bundled:all-MiniLM-L6-v2"``, recorded in the database.
        provider: ``"bundled"``.
        model: ``"all-MiniLM-L6-v2"``.
        dims: 384.
        max_tokens: 256 word pieces per text, [CLS] and [SEP] included; the rest of a
            longer text does not change its vector.

    Example:
        >>> import asyncio
        >>> from abathur.embeddings.bundled import BundledEmbedder
        >>> embedder = BundledEmbedder()
        >>> vectors = asyncio.run(embedder.embed(["the cat sleeps", "a kitten naps"]))
        >>> len(vectors), len(vectors[0])
        (2, 384)
        >>> round(sum(a * b for a, b in zip(*vectors)), 1) > 0.5
        True
    """

    name: str = f"bundled:{MODEL}"
    provider: str = "bundled"
    model: str = MODEL
    dims: int = DIMS
    max_tokens: int = MAX_TOKENS

    def __repr__(self) -> str:
        return f"BundledEmbedder(name={self.name!r}, dims={self.dims})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts into unit vectors, one per text, in input order.

        Args:
            texts: a list or tuple of strings; an empty one returns ``[]``. Each text is
                truncated to 256 word pieces.

        Returns:
            One list of 384 floats per text (L2 norm 1, so a dot product is the cosine).

        Raises:
            InvalidInputError: ``texts`` is not a list or tuple of ``str`` (a bare string
                is refused too), or a text is not valid Unicode (a lone surrogate).
            EmbedderError: the bundled model cannot be loaded or fails.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.bundled import BundledEmbedder
            >>> [len(v) for v in asyncio.run(BundledEmbedder().embed(["a", "b", "c"]))]
            [384, 384, 384]
            >>> asyncio.run(BundledEmbedder().embed([]))
            []
        """
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbedResult:
        """Like :meth:`embed`, also counting the word pieces the model read.

        Args:
            texts: as for :meth:`embed`.

        Returns:
            :class:`~abathur.embeddings.EmbedResult` whose ``tokens`` is the exact number
            of word pieces fed to the model, [CLS] and [SEP] included, after truncation
            (padding not counted); ``is_token_estimate`` is false.

        Raises:
            InvalidInputError: as for :meth:`embed`.
            EmbedderError: the bundled model cannot be loaded or fails.

        Example:
            >>> import asyncio
            >>> from abathur.embeddings.bundled import BundledEmbedder
            >>> result = asyncio.run(BundledEmbedder().embed_with_usage(["hello world"]))
            >>> result.tokens, result.is_token_estimate  # [CLS] hello world [SEP]
            (4, False)
        """
        items = _check_texts(texts)
        if not items:
            return EmbedResult(vectors=[], tokens=0)
        runtime = await asyncio.to_thread(_runtime)
        encoded = await asyncio.to_thread(runtime.encode, items)
        vectors = np.empty((len(items), DIMS), dtype=np.float32)
        # One thread hop per batch, so a cancelled call stops at the next batch.
        for batch in _batches(encoded):
            vectors[batch] = await asyncio.to_thread(runtime.infer, [encoded[i] for i in batch])
        return EmbedResult(vectors=vectors.tolist(), tokens=sum(len(ids) for ids in encoded))

"""The embedding queue, its worker, and what embedding costs: ``ab.embeddings``.

Three modules, one job each:

* :mod:`abathur.embeddings.queue.jobs`: what services call inside their own
  write transactions (:func:`enqueue`, :func:`cancel`, :func:`content_hash`);
* :mod:`abathur.embeddings.queue.worker`: :class:`EmbeddingService`, the
  worker that drains the queue through the embedding cache, and its public
  face (``drain``, ``status``, ``reindex``, ``compact``);
* :mod:`abathur.embeddings.queue.usage`: usage rows, the buffer of rows not
  yet written, and :class:`BudgetGate` (what the worker asks the cost service).

Everything other modules import is re-exported here.

Example:
    >>> from abathur.embeddings.queue import content_hash
    >>> content_hash("hi")[:12]
    '8f434346648f'
"""

from abathur.embeddings.queue.jobs import (
    HELD_NOT_BEFORE,
    MAX_EMBED_CHARS,
    cancel,
    content_hash,
    enqueue,
    recorded_embedder,
)
from abathur.embeddings.queue.usage import BudgetGate, UsageBuffer
from abathur.embeddings.queue.worker import EmbeddingService
from abathur.stores.queue import JobSelect

__all__ = [
    "HELD_NOT_BEFORE",
    "MAX_EMBED_CHARS",
    "BudgetGate",
    "EmbeddingService",
    "JobSelect",
    "UsageBuffer",
    "cancel",
    "content_hash",
    "enqueue",
    "recorded_embedder",
]

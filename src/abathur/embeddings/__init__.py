"""Embedders: the protocol, the bundled offline MiniLM, and the Ollama provider."""

from abathur.embeddings.base import Embedder, EmbedResult

__all__ = ["EmbedResult", "Embedder"]

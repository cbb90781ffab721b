"""Embedders: the protocol, the bundled offline MiniLM, Ollama and OpenAI-compatible servers."""

from abathur.embeddings.base import Embedder, EmbedResult

__all__ = ["EmbedResult", "Embedder"]

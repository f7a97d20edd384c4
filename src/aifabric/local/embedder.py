"""Sentence embeddings on the CPU: a BERT-style ONNX model, its tokenizer, mean pooling, L2 norm.

This is what sentence-transformers does for all-MiniLM-L6-v2 (modules: Transformer -> Pooling(mean)
-> Normalize), without torch: onnxruntime runs the encoder, `tokenizers` (Rust) tokenizes, numpy pools.
Measured here: the same cosines as the torch path, ~40x faster, a ~150 MB process instead of 1.5 GB.

A batch is padded to its longest input, so one long input among short ones would make every row pay
for its length (and the attention scores grow with the square of it). `run` therefore sorts the
inputs of a call by length and cuts them into ONNX runs of at most MAX_BATCH_TOKENS padded tokens:
128 short sentences are one run, 128 inputs of 256 tokens are four, and memory stays bounded.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_BATCH_TOKENS", "MAX_TOKENS", "SPIN_KEY", "Embedder", "Embeddings"]

# sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer inputs are truncated like there.
MAX_TOKENS = 256
# Padded tokens per ONNX run (rows x longest row): bounds a run's memory (~100 MB of attention scores
# at 8192) whatever the inputs; TEI bounds its batches the same way (--max-batch-tokens).
MAX_BATCH_TOKENS = 8192
# onnxruntime's session option that lets its intra-op threads busy-wait (see Embedder.__init__).
SPIN_KEY = "session.intra_op.allow_spinning"


@dataclass(frozen=True)
class Embeddings:
    vectors: npt.NDArray[np.float32]  # (n, dim), each row of unit length
    tokens: int  # tokens consumed, special tokens included (what OpenAI reports as prompt_tokens)


class Embedder:
    """Load once, embed from many threads. The embeddings server batches concurrent requests into
    one call before they get here, and may make calls from several threads at once (its batcher's
    runners): onnxruntime runs a session's calls concurrently, each on the calling thread plus the
    session's pool (`threads` - 1 more), so with runners x threads = cores no thread waits on another."""

    def __init__(self, model: Path, tokenizer: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        raw = tokenizer.read_bytes()
        if tokenizer.suffix == ".gz":
            raw = gzip.decompress(raw)
        self._tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padded here, per run, to the longest of that run
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No spin-waiting: by default onnxruntime's pool threads busy-wait between and after the
        # operators of a run, so that the next one starts a few microseconds sooner. On a small box
        # that CPU is taken from whoever else needs it: this server's own event loop, and the gateway
        # beside it that relays every request and answer. Measured here (2 cores, loaded): 4.0-5.1
        # ms of CPU per sentence with spinning, 2.6-3.0 without, at the same batch sizes.
        options.add_session_config_entry(SPIN_KEY, "0")
        self._session: Any = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dimensions = int(self._session.get_outputs()[0].shape[-1])
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors, counts = self.run(texts)
        return Embeddings(vectors, int(counts.sum()))

    def run(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Vectors of `texts` in their order, and the tokens each used (special tokens included,
        padding not)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), np.zeros(0, dtype=np.int64)
        # One call at a time: a `tokenizers` object borrows its Rust state for each call, and two
        # threads at once can get "Already borrowed". Tokenizing is a small part of a run.
        with self._lock:
            ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        counts = np.array([len(i) for i in ids], dtype=np.int64)
        order = np.argsort(counts, kind="stable")
        vectors = np.empty((len(ids), self.dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            # Longest row last (sorted): extend the run while rows x longest fits the budget.
            end = start + 1
            while end < len(order) and (end + 1 - start) * counts[order[end]] <= MAX_BATCH_TOKENS:
                end += 1
            rows = order[start:end]
            vectors[rows] = self._encode([ids[i] for i in rows], int(counts[rows[-1]]))
            start = end
        return vectors, counts

    def _encode(self, rows: list[list[int]], width: int) -> npt.NDArray[np.float32]:
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors

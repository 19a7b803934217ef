"""Sentence embeddings: one model that turns texts into L2-normalised float32 vectors.

Retrieval indexes with it, semantic chunking splits with it, gen-qa filters and
decontaminates with it, and the similarity judge scores with it: one class for all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from localnova.models import resolve_model
from localnova.optional import cuda_available, require

# What chunking and the training-data filters need of an embedder: texts in, one row each out.
EmbedFn = Callable[[list[str]], np.ndarray]


class Embedder:
    """A sentence-transformers model giving L2-normalised float32 embeddings."""

    def __init__(self, model_name: str = "all-minilm-l6-v2", revision: str | None = None, device: str | None = None):
        require("sentence_transformers", "embedding")
        from sentence_transformers import SentenceTransformer

        self.resolved = resolve_model(model_name, revision)
        self.device = device or ("cuda" if cuda_available() else "cpu")
        extra = {"revision": revision} if revision and self.resolved.path == model_name else {}
        self.model = SentenceTransformer(self.resolved.path, device=self.device, **extra)

    @property
    def dimension(self) -> int:
        # sentence-transformers 5 renamed get_sentence_embedding_dimension; accept both
        get_dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dimension())

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, so chunking can measure sizes without loading it again."""
        return self.model.tokenizer

    @property
    def identity(self) -> dict[str, Any]:
        """What decides the vectors: which weights, and how long an input may be."""
        return {
            "name": self.resolved.name,
            "fingerprint": self.resolved.fingerprint,
            "dimension": self.dimension,
            "max_seq_length": int(self.model.max_seq_length),
        }

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool | None = None) -> np.ndarray:
        """One normalised float32 row per text. The progress bar shows only on a terminal."""
        from tqdm.auto import tqdm

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        # Several batches per encode call let sentence-transformers sort by length within them.
        block_size = batch_size * 8
        blocks = []
        with tqdm(total=len(texts), desc="embedding", unit="text", disable=not show_progress) as progress:
            for block_start in range(0, len(texts), block_size):
                block = texts[block_start : block_start + block_size]
                blocks.append(
                    self.model.encode(
                        block, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                    )
                )
                progress.update(len(block))
        return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """So an Embedder can be passed as `embed` to semantic chunking."""
        return self.encode(texts, show_progress=False)

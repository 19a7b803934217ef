"""Sentence embeddings: one model that turns texts into L2-normalised float32 vectors.

Retrieval indexes with it, semantic chunking splits with it, gen-qa filters and
decontaminates with it, and the similarity judge scores with it: one class for all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from localnova.console import progress, route_library_logs
from localnova.models import resolve_model
from localnova.optional import cuda_available, require

# What chunking and the training-data filters need of an embedder: texts in, one row each out.
EmbedFn = Callable[[list[str]], np.ndarray]


# sentence-transformers modules whose output size is the word-embedding size read from files
_SIZE_KEEPING_MODULES = {"Transformer", "Pooling", "Normalize"}


class Embedder:
    """A sentence-transformers model giving L2-normalised float32 embeddings. The model loads
    on first use: a rerun that finds its index, searches and judgments cached loads nothing.
    Its identity is read from the model folder's files where they say it, without loading."""

    def __init__(self, model_name: str = "all-minilm-l6-v2", revision: str | None = None, device: str | None = None):
        require("sentence_transformers", "embedding")
        self.resolved = resolve_model(model_name, revision)
        self._device = device
        self._model = None
        self._identity: dict[str, Any] | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            route_library_logs()
            extra = {"revision": self.resolved.revision} if self.resolved.revision else {}
            self._model = SentenceTransformer(self.resolved.path, device=self.device, **extra)
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = "cuda" if cuda_available() else "cpu"
        return self._device

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
        if self._identity is None:
            from_files = None if self._model is not None else _identity_from_files(Path(self.resolved.path))
            self._identity = {
                "name": self.resolved.name,
                "fingerprint": self.resolved.fingerprint,
                **(from_files or {"dimension": self.dimension, "max_seq_length": int(self.model.max_seq_length)}),
            }
        return self._identity

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool | None = None) -> np.ndarray:
        """One normalised float32 row per text, with a progress bar where the console shows bars."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Several batches per encode call let sentence-transformers sort by length within them.
        block_size = batch_size * 8
        blocks = []
        with progress(len(texts), "embedding", unit="text", enabled=show_progress is not False) as bar:
            for block_start in range(0, len(texts), block_size):
                block = texts[block_start : block_start + block_size]
                blocks.append(
                    self.model.encode(
                        block, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                    )
                )
                bar.update(len(block))
        return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """So an Embedder can be passed as `embed` to semantic chunking."""
        return self.encode(texts, show_progress=False)


def _identity_from_files(folder: Path) -> dict[str, int] | None:
    """Dimension and maximum input length as a sentence-transformers folder states them, or
    None where the files do not settle them (a hub id, a Dense layer, a missing file): then
    the model is loaded and asked."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        kinds = {module["type"].rsplit(".", 1)[-1] for module in modules}
        pooling = next(module["path"] for module in modules if module["type"].endswith(".Pooling"))
        dimension = json.loads((folder / pooling / "config.json").read_text(encoding="utf-8"))["word_embedding_dimension"]
        max_length = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
        model_limit = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", max_length)
    except (OSError, ValueError, KeyError, StopIteration, TypeError, AttributeError):
        return None
    if not kinds <= _SIZE_KEEPING_MODULES or not isinstance(dimension, int) or not isinstance(max_length, int):
        return None
    return {"dimension": dimension, "max_seq_length": min(max_length, int(model_limit))}

"""Sentence embeddings in a FAISS index, persisted beside a manifest of what built it.

The index is exact inner product by default (the embeddings are L2-normalised, so inner
product is cosine similarity); `hnsw` and `ivf` are approximate options for large corpora.
A persisted index is reused until the corpus, the chunking, the embedding model or the index
kind changes. faiss-gpu is used when it is installed and CUDA is present.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from localnova.chunking import CHUNKER_VERSION
from localnova.embedder import Embedder
from localnova.errors import UserError
from localnova.files import atomic_path, write_jsonl_atomic, write_text_atomic
from localnova.optional import cuda_available, is_available, require
from localnova.types import Chunk, RetrievedChunk, stable_hash

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "hnsw", "ivf")
# Bump when the files written by save() change shape, so older folders are rebuilt.
INDEX_FORMAT_VERSION = 1
INDEX_FILE, CHUNKS_FILE, MANIFEST_FILE = "index.faiss", "chunks.jsonl", "manifest.json"
# The embedded search queries, so a rerun with the same questions loads no embedding model.
QUERY_CACHE_FILE = "query_vectors.json"

HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
# faiss-gpu's search returns at most this many neighbours per query (its k-selection limit).
GPU_MAX_K = 2048
# faiss wants about 39 training points per IVF list; fewer gives poor centroids.
IVF_POINTS_PER_LIST = 39


def import_faiss() -> Any:
    """The faiss module, or a UserError saying why it cannot load. faiss-gpu-cu12 installs but
    cannot load beside a CUDA 13 torch (it needs libcudart.so.12 and libcublas.so.12, and no
    CUDA 13 faiss-gpu wheel exists): there, faiss-cpu is the one to install."""
    require("faiss", "the FAISS index")
    try:
        import faiss
    except Exception as error:  # noqa: BLE001 - a broken native library raises ImportError, OSError or worse
        raise UserError(
            f"faiss is installed but cannot load ({type(error).__name__}: {str(error).splitlines()[0][:160]}); "
            "where the GPU build does not match the machine's CUDA, install faiss-cpu instead (pip install 'localnova[cpu]')"
        ) from None
    return faiss


def faiss_gpu_usable() -> bool:
    """True when the installed faiss was built with GPU support and a GPU is visible; False
    where faiss is not installed, which a CUDA machine may well be (the GPU tests ask this
    while pytest collects them)."""
    if not is_available("faiss") or not cuda_available():
        return False
    faiss = import_faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _ivf_list_count(vector_count: int) -> int:
    """Lists for an IVF index: about 4*sqrt(n), and few enough that each can be trained."""
    return min(int(4 * math.sqrt(vector_count)), vector_count // IVF_POINTS_PER_LIST)


def _build_faiss_index(vectors: np.ndarray, kind: str) -> tuple[Any, str]:
    """A CPU faiss index holding `vectors`; returns it with the kind actually built (an IVF
    index falls back to flat when there are too few vectors to train it)."""
    faiss = import_faiss()

    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    dimension = vectors.shape[1]
    if kind == "ivf":
        list_count = _ivf_list_count(len(vectors))
        if list_count < 2:
            log.info("ivf index: %d vectors are too few to train lists; using an exact flat index", len(vectors))
            kind = "flat"
        else:
            quantizer = faiss.IndexFlatIP(dimension)
            index = faiss.IndexIVFFlat(quantizer, dimension, list_count, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(list_count, max(8, list_count // 16))
            index.add(vectors)
            return index, kind
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dimension)
    index.add(vectors)
    return index, kind


class Retriever(Protocol):
    """What the rag arms need from a retriever: the local FAISS index below, or a Bedrock
    Knowledge Base (bedrock/knowledge_base.py). The arms build the same prompt from either."""

    def search(self, queries: list[str], top_k: int) -> list[list[RetrievedChunk]]:
        """The top_k chunks for each query, best first."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run records about where its chunks came from."""
        ...


class VectorIndex:
    """Chunks and their vectors in a FAISS index; search returns RetrievedChunks whose text is
    the chunk's context (the parent, for hierarchical chunks)."""

    def __init__(self, cpu_index: Any, chunks: Sequence[Chunk], kind: str, embedder: Embedder | None = None, use_gpu: bool | None = None):
        if cpu_index.ntotal != len(chunks):
            raise ValueError(f"index holds {cpu_index.ntotal} vectors for {len(chunks)} chunks")
        self.cpu_index = cpu_index
        self.chunks = list(chunks)
        self.kind = kind
        self.embedder = embedder
        self.search_index = cpu_index
        self.on_gpu = False
        self.query_cache: Path | None = None  # set for an index persisted in a folder
        if use_gpu is None:
            use_gpu = faiss_gpu_usable()
        elif use_gpu and not faiss_gpu_usable():
            raise UserError("a GPU index needs faiss with GPU support (pip install 'localnova[gpu]') and a visible CUDA device")
        # HNSW has no GPU version in faiss; it stays on the CPU.
        if use_gpu and kind != "hnsw":
            faiss = import_faiss()
            self._gpu_resources = faiss.StandardGpuResources()
            self.search_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, cpu_index)
            self.on_gpu = True

    @classmethod
    def build(
        cls, chunks: Sequence[Chunk], embedder: Embedder, kind: str = "flat", batch_size: int = 32, use_gpu: bool | None = None
    ) -> "VectorIndex":
        vectors = embedder.encode([chunk.text for chunk in chunks], batch_size=batch_size)
        return cls.from_vectors(vectors, chunks, kind, embedder, use_gpu)

    @classmethod
    def from_vectors(
        cls, vectors: np.ndarray, chunks: Sequence[Chunk], kind: str = "flat", embedder: Embedder | None = None, use_gpu: bool | None = None
    ) -> "VectorIndex":
        import_faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            raise ValueError("cannot index zero chunks")
        cpu_index, built_kind = _build_faiss_index(vectors, kind)
        return cls(cpu_index, chunks, built_kind, embedder, use_gpu)

    def describe(self) -> dict[str, Any]:
        return {"chunks": len(self)}

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, queries: Sequence[str] | np.ndarray, top_k: int) -> list[list[RetrievedChunk]]:
        """The `top_k` best chunks per query, best first. Children of one parent count once
        (the best one is kept), so `top_k` distinct contexts come back where the index has them."""
        if top_k <= 0:
            raise ValueError("top_k must be positive")
        if isinstance(queries, np.ndarray):
            query_vectors = np.ascontiguousarray(queries, dtype=np.float32)
        else:
            if self.embedder is None:
                raise ValueError("searching with texts needs an embedder")
            query_vectors = self._embed_queries(list(queries))
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        if len(query_vectors) == 0:
            return []
        # faiss on the GPU answers at most GPU_MAX_K neighbours a query: every fetch stays within it.
        if self.on_gpu and top_k > GPU_MAX_K:
            raise UserError(f"retrieval.top_k={top_k}: faiss on the GPU returns at most {GPU_MAX_K} chunks a query")
        most = min(len(self.chunks), GPU_MAX_K) if self.on_gpu else len(self.chunks)
        fetch = min(most, top_k * 4 if any(chunk.parent_id for chunk in self.chunks) else top_k)
        while True:
            scores, indices = self.search_index.search(query_vectors, fetch)
            results = [
                self._distinct_contexts(row_scores, row_indices, top_k) for row_scores, row_indices in zip(scores, indices, strict=True)
            ]
            # Fetch more only when shared parents left a query short and the index has more.
            if fetch >= most or all(len(result) >= top_k for result in results):
                return results
            fetch = min(most, fetch * 2)

    def _embed_queries(self, queries: list[str]) -> np.ndarray:
        """The queries' vectors: from the folder's query cache where it holds them (written for
        this very index and embedder), the rest embedded and added to it."""
        cached: dict[str, list[float]] = {}
        if self.query_cache is not None and self.query_cache.is_file():
            try:
                cached = json.loads(self.query_cache.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                cached = {}
        keys = [stable_hash(query) for query in queries]
        missing = list(dict.fromkeys(query for query, key in zip(queries, keys, strict=True) if key not in cached))
        if missing:
            for query, vector in zip(missing, self.embedder.encode(missing, show_progress=False), strict=True):
                cached[stable_hash(query)] = vector.tolist()
            if self.query_cache is not None:
                write_text_atomic(self.query_cache, json.dumps(cached))
        return np.asarray([cached[key] for key in keys], dtype=np.float32)

    def _distinct_contexts(self, scores: np.ndarray, indices: np.ndarray, top_k: int) -> list[RetrievedChunk]:
        retrieved: list[RetrievedChunk] = []
        seen_contexts: set[str] = set()
        for score, index in zip(scores, indices, strict=True):
            if index < 0:  # approximate indexes pad with -1 when they find fewer
                continue
            chunk = self.chunks[int(index)]
            context_key = chunk.parent_id or chunk.chunk_id
            if context_key in seen_contexts:
                continue
            seen_contexts.add(context_key)
            retrieved.append(RetrievedChunk(chunk.chunk_id, chunk.doc_id, float(score), chunk.context_text))
            if len(retrieved) == top_k:
                break
        return retrieved


# Persistence


def _manifest_key(manifest_inputs: dict[str, Any], embedder: Embedder, index_kind: str) -> str:
    return stable_hash(
        {
            "inputs": manifest_inputs,
            "embedding": embedder.identity,
            "index_kind": index_kind,
            "chunker_version": CHUNKER_VERSION,
            "format_version": INDEX_FORMAT_VERSION,
        }
    )


def save_index(index: VectorIndex, folder: Path, manifest: dict[str, Any]) -> None:
    """Write index.faiss, chunks.jsonl and manifest.json. The old manifest goes first and the
    new one comes last, so a crash in between leaves a folder that is rebuilt, never one whose
    manifest vouches for files it did not describe."""
    faiss = import_faiss()

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    (folder / QUERY_CACHE_FILE).unlink(missing_ok=True)  # vectors of another embedder, maybe
    with atomic_path(folder / INDEX_FILE) as temporary:
        faiss.write_index(index.cpu_index, str(temporary))
    write_jsonl_atomic(folder / CHUNKS_FILE, (asdict(chunk) for chunk in index.chunks))
    write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def load_index(folder: Path, embedder: Embedder | None = None, use_gpu: bool | None = None) -> VectorIndex | None:
    """The index persisted in `folder`, or None when it is missing, damaged or incomplete."""
    faiss = import_faiss()

    manifest = read_manifest(folder)
    if manifest is None:
        return None
    try:
        cpu_index = faiss.read_index(str(folder / INDEX_FILE))
        with open(folder / CHUNKS_FILE, encoding="utf-8") as handle:
            chunks = [Chunk(**json.loads(line)) for line in handle if line.strip()]
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        log.info("index in %s cannot be read (%s); rebuilding it", folder, error)
        return None
    if cpu_index.ntotal != len(chunks) or manifest.get("count") != len(chunks):
        log.info("index in %s is incomplete; rebuilding it", folder)
        return None
    if isinstance(cpu_index, faiss.IndexHNSW):
        cpu_index.hnsw.efSearch = HNSW_EF_SEARCH  # a search-time setting, not saved with the index
    index = VectorIndex(cpu_index, chunks, manifest.get("index_kind_built", manifest.get("index_kind", "flat")), embedder, use_gpu)
    index.query_cache = folder / QUERY_CACHE_FILE
    return index


def build_or_load_index(
    chunks: Sequence[Chunk] | Callable[[], Sequence[Chunk]],
    folder: Path,
    embedder: Embedder,
    index_kind: str = "flat",
    manifest_inputs: dict[str, Any] | None = None,
    batch_size: int = 32,
    use_gpu: bool | None = None,
) -> tuple[VectorIndex, bool]:
    """The index in `folder` if it was built from the same inputs, else a new one, saved.

    `manifest_inputs` holds what decides the chunks (e.g. the corpus hash and the chunking
    config); with the embedding model's identity and the index kind it forms the key that
    decides whether to rebuild. `chunks` may be a function, so that costly chunking (the
    semantic strategy embeds every sentence) runs only when a rebuild is needed.
    Returns (index, rebuilt).
    """
    faiss = import_faiss()
    folder = Path(folder)
    manifest_inputs = manifest_inputs or {}
    key = _manifest_key(manifest_inputs, embedder, index_kind)
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("key") == key:
        existing = load_index(folder, embedder, use_gpu)
        if existing is not None:
            return existing, False
    chunk_list = list(chunks() if callable(chunks) else chunks)
    started = time.perf_counter()
    vectors = embedder.encode([chunk.text for chunk in chunk_list], batch_size=batch_size)
    embed_seconds = time.perf_counter() - started
    index = VectorIndex.from_vectors(vectors, chunk_list, index_kind, embedder, use_gpu)
    build_seconds = time.perf_counter() - started
    new_manifest = {
        "key": key,
        "format_version": INDEX_FORMAT_VERSION,
        "inputs": manifest_inputs,
        "embedding": embedder.identity,
        "embedding_device": embedder.device,
        "index_kind": index_kind,
        "index_kind_built": index.kind,
        "faiss_version": faiss.__version__,
        "count": len(chunk_list),
        "embed_seconds": round(embed_seconds, 3),
        "build_seconds": round(build_seconds, 3),
        "chunks_per_s": round(len(chunk_list) / build_seconds, 2) if build_seconds > 0 else None,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save_index(index, folder, new_manifest)
    index.query_cache = folder / QUERY_CACHE_FILE
    return index, True


# Retrieval quality


def hit_at_k(retrieved_doc_ids: Sequence[str], gold_doc_ids: Sequence[str], k: int | None = None) -> bool:
    """Whether any gold document is among the first k retrieved (all of them when k is None)."""
    considered = retrieved_doc_ids if k is None else retrieved_doc_ids[:k]
    return bool(set(considered) & set(gold_doc_ids))


def recall_at_k(retrieved_doc_ids: Sequence[Sequence[str]], gold_doc_ids: Sequence[Sequence[str]], k: int | None = None) -> float:
    """Fraction of questions with at least one gold document in the top k retrieved.
    Questions without gold documents are left out; NaN when none has any."""
    if len(retrieved_doc_ids) != len(gold_doc_ids):
        raise ValueError(f"{len(retrieved_doc_ids)} retrieval results for {len(gold_doc_ids)} questions")
    hits = [hit_at_k(retrieved, gold, k) for retrieved, gold in zip(retrieved_doc_ids, gold_doc_ids, strict=True) if gold]
    return sum(hits) / len(hits) if hits else float("nan")

"""What every model and arm of a study share, prepared once before any model loads: the
questions, and for each arm that retrieves, its chunks for every question.

Arms that retrieve alike (the same chunking and top_k) share one search; an arm with its own
chunking gets an index of its own beside the study's (`index-<hash>`), built or loaded like it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.chunking import chunk_documents
from localnova.config import ChunkingConfig, StudyConfig
from localnova.corpus import corpus_hash, load_documents
from localnova.data.eval_set import load_study_eval_set
from localnova.embedder import Embedder
from localnova.errors import UserError
from localnova.evaluate.arms import ArmInputs, arm_top_k
from localnova.retrieval import Retriever, VectorIndex, build_or_load_index
from localnova.types import Document, EvalItem, RetrievedChunk, stable_hash

INDEX_DIR = "index"


@dataclass
class StudyInputs:
    """The questions, and per arm what it sends (ArmInputs: its prompt and retrieved chunks)."""

    items: list[EvalItem]
    arms: dict[str, ArmInputs] = field(default_factory=dict)
    retrieval_info: dict[str, Any] = field(default_factory=dict)
    embedder: Embedder | None = None

    @property
    def retrieved(self) -> list[list[RetrievedChunk]] | None:
        """The chunks of the first arm that retrieves (the study's retrieval for the built-in arms)."""
        return next((arm.contexts for arm in self.arms.values() if arm.contexts and arm.contexts[0] is not None), None)


def needs_embedder(config: StudyConfig, local_index: bool) -> bool:
    """The embedding model is loaded for a local index, for decontaminating the training set
    of a locally trained adapter, and for the similarity judge."""
    return local_index or config.fine_tunes or any(judge.kind == "embedding_similarity" for judge in config.judges)


def index_dir(config: StudyConfig, chunking: ChunkingConfig | None = None) -> Path:
    """Where the index of `chunking` lives: the study's index for the corpus's own chunking."""
    if chunking is None or chunking == config.corpus.chunking:
        return config.study_dir / INDEX_DIR
    return config.study_dir / f"{INDEX_DIR}-{stable_hash(chunking.model_dump(mode='json'), 8)}"


def build_index(
    config: StudyConfig, embedder: Embedder | None = None, documents: list[Document] | None = None, chunking: ChunkingConfig | None = None
) -> tuple[VectorIndex, bool]:
    """The FAISS index of `chunking` (default: the corpus's), built, or loaded when corpus,
    chunking and embedder are unchanged; returns it and whether it was (re)built."""
    documents = documents if documents is not None else load_documents(config.corpus.path)
    embedder = embedder or Embedder(config.retrieval.embedding_model)
    chunking = chunking or config.corpus.chunking
    manifest_inputs = {"corpus_hash": corpus_hash(documents), "chunking": chunking.model_dump(mode="json")}

    def make_chunks():
        return chunk_documents(documents, chunking, embedder.tokenizer, embed=embedder)

    return build_or_load_index(
        make_chunks, index_dir(config, chunking), embedder, config.retrieval.index, manifest_inputs, batch_size=config.retrieval.batch_size
    )


def prepare_inputs(config: StudyConfig, retriever: Retriever | None = None) -> StudyInputs:
    """Load the eval set and, where an arm retrieves, retrieve for every question: from
    `retriever` when given (a Knowledge Base), else from the local index over the corpus."""
    inputs = StudyInputs(load_study_eval_set(config.eval, config.eval.limit))
    local_index = config.retrieves and retriever is None
    documents = load_documents(config.corpus.path) if local_index else None  # a bad corpus fails before any model loads
    if needs_embedder(config, local_index):
        inputs.embedder = Embedder(config.retrieval.embedding_model)
    questions = [item.question for item in inputs.items]
    searched: dict[tuple[str, int], list[list[RetrievedChunk]]] = {}
    retrievers: dict[str, Retriever] = {}
    for name in config.arms:
        arm = config.arm_config(name)
        if arm.retrieval is None:
            inputs.arms[name] = ArmInputs(arm.prompt, [None] * len(inputs.items))
            continue
        chunking = arm.retrieval.chunking or config.corpus.chunking
        chunking_key = stable_hash(chunking.model_dump(mode="json"))
        if chunking_key not in retrievers:
            if retriever is not None:
                if chunking != config.corpus.chunking:
                    raise UserError(f"arm {name}: a Knowledge Base retrieves with its own chunking; remove the arm's retrieval.chunking")
                retrievers[chunking_key] = retriever
            else:
                retrievers[chunking_key], rebuilt = build_index(config, inputs.embedder, documents, chunking)
                inputs.retrieval_info.setdefault("index_rebuilt", rebuilt)
        top_k = arm_top_k(config, arm)
        if (chunking_key, top_k) not in searched:
            searched[(chunking_key, top_k)] = retrievers[chunking_key].search(questions, top_k)
        inputs.arms[name] = ArmInputs(arm.prompt, list(searched[(chunking_key, top_k)]))
    if retrievers:
        first = next(iter(retrievers.values()))
        inputs.retrieval_info.update({**first.describe(), "top_k": config.retrieval.top_k})
        own = {name: arm_top_k(config, config.arm_config(name)) for name in config.arms if config.uses_retrieval(name)}
        if any(top_k != config.retrieval.top_k for top_k in own.values()) or len(retrievers) > 1:
            inputs.retrieval_info["arms_top_k"] = own
    return inputs

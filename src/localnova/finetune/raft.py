"""RAFT: fine-tuning for answering with retrieval (Zhang et al. 2024, "RAFT: Adapting Language
Model to Domain Specific RAG").

Each training question is shown the way the raft arm will ask it, with passages in its context
template: on a share of rows (finetune.raft.oracle_fraction, RAFT's P) its oracle passage (the
chunk of its source document that holds the answer best) among distractors (the chunks the
study's retriever ranks highest for the question from other documents), on the rest the
distractors alone. The answer quotes the oracle where it is shown, then gives the answer, so
the model learns to find and cite the passage that holds the answer and to read past those
that do not. The same question-answer pairs as the sft arms' feed it, decontaminated and
sampled the same way; the adapter is trained and reused like theirs.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from localnova.config import LOCAL_BACKENDS, StudyConfig
from localnova.data.eval_set import load_study_eval_set
from localnova.data.qa_filters import grounding_score
from localnova.embedder import Embedder
from localnova.evaluate.arms import build_messages
from localnova.files import json_text, write_text_atomic
from localnova.finetune.lora import find_or_train_adapter
from localnova.finetune.stage import TRAINING_REPORT_FILE, reusable_adapter, training_records, training_report_path, training_source_key
from localnova.models import resolve_model
from localnova.retrieval import VectorIndex
from localnova.study_parts import PromptConfig, RaftConfig
from localnova.types import Chunk, RetrievedChunk, stable_hash

log = logging.getLogger("localnova.finetune")

RAFT_RECIPE = "raft"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class RaftRow:
    """One RAFT training row: the question, the passages shown (in order), the oracle's place
    among them (None where it was left out) and the answer the model learns."""

    question: str
    passages: list[RetrievedChunk]
    oracle_position: int | None
    answer: str


def oracle_chunk(answer: str, doc_id: str, chunks: list[Chunk]) -> Chunk:
    """The chunk that holds the answer best: of the pair's own document where it names one,
    else of the whole corpus; ties go to the earlier chunk."""
    pool = [chunk for chunk in chunks if chunk.doc_id == doc_id] or chunks
    return max(pool, key=lambda chunk: grounding_score(answer, chunk.context_text))


def quote(answer: str, passage: str, max_words: int) -> str:
    """The sentence of `passage` that holds most of the answer's words, cut to `max_words`."""
    sentences = [s.strip() for s in _SENTENCE_END.split(passage.strip()) if s.strip()] or [passage.strip()]
    best = max(sentences, key=lambda sentence: grounding_score(answer, sentence))
    words = best.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def cited_answer(answer: str, passage: str, position: int, max_words: int) -> str:
    """The answer as a RAFT row teaches it: the quote it rests on, with the passage's number."""
    return f'Passage [{position}] says: "{quote(answer, passage, max_words)}" {answer}'


def raft_rows(
    pairs: list[tuple[str, str, str]],
    chunks: list[Chunk],
    retrieved: list[list[RetrievedChunk]],
    recipe: RaftConfig,
    seed: int,
) -> list[RaftRow]:
    """RAFT rows from (question, answer, doc_id) pairs: `retrieved[i]` is what the retriever
    ranks highest for question i (more than recipe.distractors, best first); the distractors
    are its best chunks from documents other than the oracle's. A seeded draw decides which
    rows keep the oracle and where it goes among the distractors."""
    rng = random.Random(seed)
    rows = []
    for (question, answer, doc_id), found in zip(pairs, retrieved, strict=True):
        oracle = oracle_chunk(answer, doc_id, chunks)
        distractors = [chunk for chunk in found if chunk.doc_id != oracle.doc_id][: recipe.distractors]
        passages = list(distractors)
        oracle_position = None
        if rng.random() < recipe.oracle_fraction:
            oracle_position = rng.randint(0, len(passages))
            passages.insert(oracle_position, RetrievedChunk(oracle.chunk_id, oracle.doc_id, 1.0, oracle.context_text))
        if oracle_position is None:
            target = answer
        else:
            target = cited_answer(answer, oracle.context_text, oracle_position + 1, recipe.quote_tokens)
        rows.append(RaftRow(question, passages, oracle_position, target))
    return rows


def raft_records(rows: list[RaftRow], prompt: PromptConfig) -> list[dict]:
    """Chat records of the rows, each asked in the raft arm's own prompt."""
    return [
        {
            "id": stable_hash([row.question, row.answer], 12),
            "messages": [*build_messages(row.question, row.passages, prompt), {"role": "assistant", "content": row.answer}],
        }
        for row in rows
    ]


def raft_prompt(config: StudyConfig) -> PromptConfig:
    """The prompt of the first arm that the raft adapter answers: its rows are asked in it."""
    return next(config.arm_config(arm).prompt for arm in config.arms if config.arm_config(arm).adapter == RAFT_RECIPE)


def raft_adapters_for_study(config: StudyConfig, models, embedder: Embedder | None, index: VectorIndex) -> dict[str, str]:
    """Train (or reuse) one RAFT adapter per local answer model, in <study>/adapters/<model>-raft;
    `index` is the study's retrieval index, whose chunks give oracles and distractors."""
    local_models = [model for model in models if model.backend in LOCAL_BACKENDS]
    if not local_models:
        return {}
    embedder = embedder or Embedder(config.retrieval.embedding_model)
    recipe = config.finetune.raft
    prompt = raft_prompt(config)
    index_key = stable_hash([[chunk.chunk_id, chunk.context_text] for chunk in index.chunks])
    base_key = training_source_key(config, embedder)
    source_key = stable_hash([base_key, recipe.model_dump(mode="json"), prompt.model_dump(mode="json"), index_key]) if base_key else ""
    adapters, to_train = {}, []
    for model in local_models:
        base = resolve_model(model.model, model.revision)
        out_dir = config.study_dir / "adapters" / f"{model.name}-{RAFT_RECIPE}"
        reused = reusable_adapter(base, config.finetune, out_dir, config.seed, source_key)
        if reused is not None:
            log.info("reusing RAFT adapter at %s", reused.path)
            adapters[model.name] = reused.path
        else:
            to_train.append((model, base, out_dir))
    if not to_train:
        return adapters
    train, _, report = training_records(config, load_study_eval_set(config.eval), embedder)
    pairs = [(record["messages"][-2]["content"], record["messages"][-1]["content"], record.get("doc_id", "")) for record in train]
    # the best chunks for each question, enough of them to leave `distractors` from other documents
    found = index.search([question for question, _, _ in pairs], recipe.distractors + 8)
    rows = raft_rows(pairs, list(index.chunks), found, recipe, config.seed)
    records = raft_records(rows, prompt)
    report = {
        **report,
        "raft": {**recipe.model_dump(mode="json"), "rows": len(rows), "with_oracle": sum(r.oracle_position is not None for r in rows)},
    }
    write_text_atomic(raft_report_path(config), json_text(report))
    for model, base, out_dir in to_train:
        info = find_or_train_adapter(base, records, None, config.finetune, out_dir, config.seed, source_key=source_key)
        adapters[model.name] = str(info.path)
    return adapters


def raft_report_path(config: StudyConfig) -> Path:
    """Where the RAFT stage writes what it did to the training set, beside the sft stage's."""
    return training_report_path(config).with_name(TRAINING_REPORT_FILE.replace(".json", f"_{RAFT_RECIPE}.json"))

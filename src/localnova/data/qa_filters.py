"""Filters that decide which question-answer pairs become training data, and the report
that counts what each one dropped: grounding in the source chunk, near-duplicate removal,
decontamination against the evaluation set, and a split by source document.

They apply to generated pairs (gen_qa.py) and to a user's own training file alike.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from localnova.config import GenQAConfig
from localnova.data.formats import TrainingPair, read_training_pairs
from localnova.embedder import EmbedFn
from localnova.errors import UserError
from localnova.types import Chunk, EvalItem

# Small words that say nothing about whether an answer is supported by its source.
STOPWORDS = frozenset(
    "a an the and or but if then than of to in on at by for with from as is are was were be been being it its "
    "this that these those there here which who whom whose what when where why how not no yes do does did "
    "can could should would will shall may might must has have had i you he she we they them his her our their "
    "your my me us so such also very into over under about after before between through during each per".split()
)
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (numbers such as 2.5 and words such as don't stay whole)."""
    return WORD_PATTERN.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [word for word in words(text) if word not in STOPWORDS]


@dataclass
class ContaminationDrop:
    """A training pair dropped for being close to an evaluation item."""

    pair: TrainingPair
    question_id: str  # the eval item it matched
    reason: str  # "ngram" or "embedding"
    detail: str  # the shared n-gram, or the cosine similarity

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair.to_dict(), "question_id": self.question_id, "reason": self.reason, "detail": self.detail}


@dataclass
class DataReport:
    """What gen-qa (or filtering a user's file) did, step by step."""

    source: str = "generated"  # "generated", or the path of a user-provided training file
    status: str = "ok"  # "ok", or "empty" when nothing survived the filters
    prompt_version: str = ""  # of the generation prompt, for generated pairs
    generator: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    chunks: int = 0
    requests: int = 0
    unparseable_outputs: int = 0  # generations from which no pair could be read
    incomplete_pairs: int = 0  # a question without an answer or an answer without a question
    degenerate_pairs: int = 0  # see is_degenerate
    parsed_pairs: int = 0
    input_pairs: int = 0  # pairs that reached the filters
    grounding_checked: bool = True
    dropped_ungrounded: int = 0
    dropped_duplicates: int = 0
    dropped_contaminated: int = 0
    dropped_over_target: int = 0
    train_pairs: int = 0
    validation_pairs: int = 0
    train_docs: list[str] = field(default_factory=list)
    validation_docs: list[str] = field(default_factory=list)
    contamination: list[ContaminationDrop] = field(default_factory=list)
    ungrounded_examples: list[dict[str, Any]] = field(default_factory=list)  # the first few, for a reader

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["contamination"] = [drop.to_dict() for drop in self.contamination]
        return data

    def to_markdown(self) -> str:
        lines = [
            f"# Training data report ({self.source})",
            "",
            f"Status: **{self.status}**. Prompt {self.prompt_version or '-'}; "
            f"generator {json.dumps(self.generator) if self.generator else 'none'}.",
            "",
            "| step | count |",
            "|---|---|",
        ]
        steps = [
            ("chunks asked", self.chunks),
            ("generation requests", self.requests),
            ("unparseable outputs", self.unparseable_outputs),
            ("incomplete pairs dropped", self.incomplete_pairs),
            ("degenerate pairs dropped (too short, too long, looping)", self.degenerate_pairs),
            ("pairs parsed", self.parsed_pairs),
            ("pairs into the filters", self.input_pairs),
            (
                "dropped: not grounded in the source chunk" if self.grounding_checked else "grounding: not checked (no source chunks)",
                self.dropped_ungrounded,
            ),
            ("dropped: near-duplicates", self.dropped_duplicates),
            ("dropped: close to an eval question", self.dropped_contaminated),
            ("dropped: over target_pairs", self.dropped_over_target),
            ("train pairs", self.train_pairs),
            ("validation pairs", self.validation_pairs),
        ]
        lines += [f"| {name} | {count} |" for name, count in steps]
        lines += ["", f"Train documents ({len(self.train_docs)}): {', '.join(self.train_docs) or '-'}"]
        lines += [f"Validation documents ({len(self.validation_docs)}): {', '.join(self.validation_docs) or '-'}", ""]
        if self.settings:
            lines += ["Settings: " + ", ".join(f"{key}={value}" for key, value in self.settings.items()), ""]
        lines += ["## Dropped as contaminated", ""]
        if not self.contamination:
            lines.append("None.")
        else:
            lines += ["| eval question | reason | detail | training question |", "|---|---|---|---|"]
            for drop in self.contamination:
                question = drop.pair.question.replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {drop.question_id} | {drop.reason} | {drop.detail.replace('|', '/')} | {question} |")
        return "\n".join(lines) + "\n"


def _normalised(vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def grounding_score(answer: str, source_text: str) -> float:
    """The fraction of the answer's content words that occur in its source text (1.0 for an
    answer with no content words, which the other filters judge)."""
    answer_words = content_words(answer)
    if not answer_words:
        return 1.0
    source_words = set(words(source_text))
    return sum(1 for word in answer_words if word in source_words) / len(answer_words)


def filter_grounded(
    pairs: list[TrainingPair],
    source_texts: dict[str, str],
    threshold: float,
    embed: EmbedFn | None = None,
    method: Literal["overlap", "embedding", "both"] = "overlap",
    report: DataReport | None = None,
) -> list[TrainingPair]:
    """Keep pairs whose answer is supported by their source chunk: content-word overlap,
    answer-chunk cosine similarity, or both, at or above `threshold`. Pairs whose chunk is
    unknown are kept and not counted."""
    report = report if report is not None else DataReport()
    overlap = [grounding_score(p.answer, source_texts.get(p.chunk_id, "")) for p in pairs]
    cosine = [1.0] * len(pairs)
    if method in ("embedding", "both") and pairs:
        if embed is None:
            raise ValueError("grounding by embedding needs an embed function")
        answers = _normalised(embed([p.answer for p in pairs]))
        sources = _normalised(embed([source_texts.get(p.chunk_id, "") for p in pairs]))
        cosine = [float(value) for value in (answers * sources).sum(axis=1)]
    kept = []
    for pair, overlap_score, cosine_score in zip(pairs, overlap, cosine, strict=True):
        scores = {"overlap": overlap_score, "embedding": cosine_score, "both": min(overlap_score, cosine_score)}
        if pair.chunk_id not in source_texts or scores[method] >= threshold:
            kept.append(pair)
            continue
        report.dropped_ungrounded += 1
        if len(report.ungrounded_examples) < 10:
            report.ungrounded_examples.append(
                {"pair": pair.to_dict(), "overlap": round(overlap_score, 3), "cosine": round(cosine_score, 3)}
            )
    return kept


def remove_near_duplicates(
    pairs: list[TrainingPair], embed: EmbedFn | None, threshold: float, report: DataReport | None = None
) -> list[TrainingPair]:
    """Drop a pair whose question+answer has cosine >= `threshold` with an earlier kept pair
    (exact repeats, compared case-insensitively, always go)."""
    report = report if report is not None else DataReport()
    seen_texts: set[str] = set()
    distinct = []
    for pair in pairs:
        key = " ".join(words(pair.question + " " + pair.answer))
        if key in seen_texts:
            report.dropped_duplicates += 1
            continue
        seen_texts.add(key)
        distinct.append(pair)
    if embed is None or len(distinct) < 2:
        return distinct
    vectors = _normalised(embed([f"{p.question} {p.answer}" for p in distinct]))
    similarity = vectors @ vectors.T
    kept_indices: list[int] = []
    for index in range(len(distinct)):
        if kept_indices and float(similarity[index, kept_indices].max()) >= threshold:
            report.dropped_duplicates += 1
            continue
        kept_indices.append(index)
    return [distinct[index] for index in kept_indices]


def _ngram_list(text: str, size: int) -> list[tuple[str, ...]]:
    tokens = words(text)
    return [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]


def _ngrams(text: str, size: int) -> set[tuple[str, ...]]:
    return set(_ngram_list(text, size))


def decontaminate(
    pairs: list[TrainingPair],
    eval_items: Sequence[EvalItem],
    embed: EmbedFn | None,
    ngram: int = 8,
    similarity: float = 0.9,
    against_answers: bool = False,
    report: DataReport | None = None,
) -> tuple[list[TrainingPair], list[ContaminationDrop]]:
    """Drop pairs too close to the evaluation set, and say which eval item each one matched.

    A pair goes when its question or answer shares a run of `ngram` words with an eval
    question (with `against_answers`, also with an eval answer), or when its question has
    cosine >= `similarity` with an eval question (needs `embed`). Eval answers are left out
    by default: training answers come from the same documents, and stating the fact an eval
    question asks about is what a fine-tuned model should learn.
    """
    report = report if report is not None else DataReport()
    eval_grams: dict[tuple[str, ...], str] = {}
    for item in eval_items:
        for gram in _ngrams(item.question, ngram) | (_ngrams(item.answer, ngram) if against_answers else set()):
            eval_grams.setdefault(gram, item.question_id)
    question_sims = None
    if embed is not None and eval_items and pairs:
        train_vectors = _normalised(embed([p.question for p in pairs]))
        eval_vectors = _normalised(embed([item.question for item in eval_items]))
        question_sims = train_vectors @ eval_vectors.T
    kept: list[TrainingPair] = []
    drops: list[ContaminationDrop] = []
    for index, pair in enumerate(pairs):
        # In reading order, so the report shows the first run of words the two share.
        shared = [gram for text in (pair.question, pair.answer) for gram in _ngram_list(text, ngram) if gram in eval_grams]
        if shared:
            drops.append(ContaminationDrop(pair, eval_grams[shared[0]], "ngram", " ".join(shared[0])))
            continue
        if question_sims is not None:
            best = int(question_sims[index].argmax())
            score = float(question_sims[index, best])
            if score >= similarity:
                drops.append(ContaminationDrop(pair, eval_items[best].question_id, "embedding", f"cosine {score:.3f}"))
                continue
        kept.append(pair)
    report.dropped_contaminated += len(drops)
    report.contamination.extend(drops)
    return kept, drops


def split_by_document(pairs: list[TrainingPair], validation_fraction: float, seed: int) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Put whole documents on one side or the other: no document feeds both train and
    validation. The validation side gets round(fraction x documents), at least one when the
    fraction is above zero and there are two or more documents, and never all of them."""
    doc_ids = sorted({pair.doc_id for pair in pairs})
    random.Random(seed).shuffle(doc_ids)
    count = round(validation_fraction * len(doc_ids))
    if validation_fraction > 0 and len(doc_ids) >= 2:
        count = max(1, count)
    count = min(count, len(doc_ids) - 1) if doc_ids else 0
    validation_docs = set(doc_ids[:count])
    train = [pair for pair in pairs if pair.doc_id not in validation_docs]
    validation = [pair for pair in pairs if pair.doc_id in validation_docs]
    return train, validation


def filter_pairs(
    pairs: list[TrainingPair],
    eval_items: Sequence[EvalItem],
    embed: EmbedFn | None,
    config: GenQAConfig,
    seed: int,
    chunks: Sequence[Chunk] | None = None,
    report: DataReport | None = None,
    grounding: Literal["overlap", "embedding", "both"] = "overlap",
    against_answers: bool = False,
) -> tuple[list[TrainingPair], list[TrainingPair], DataReport]:
    """Grounding (when the source `chunks` are given), near-duplicate removal,
    decontamination, a cap at `config.target_pairs`, and a split by document.
    Raises UserError when no pair is left."""
    report = report if report is not None else DataReport()
    report.input_pairs += len(pairs)
    report.settings.update(
        grounding_threshold=config.grounding_threshold,
        grounding_method=grounding,
        dedup_threshold=config.dedup_threshold,
        decontam_ngram=config.decontam_ngram,
        decontam_similarity=config.decontam_similarity,
        decontam_against_answers=against_answers,
        validation_fraction=config.validation_fraction,
        target_pairs=config.target_pairs,
        seed=seed,
    )
    if chunks is not None:
        source_texts = {chunk.chunk_id: chunk.context_text for chunk in chunks}
        pairs = filter_grounded(pairs, source_texts, config.grounding_threshold, embed, grounding, report)
    else:
        report.grounding_checked = False
    pairs = remove_near_duplicates(pairs, embed, config.dedup_threshold, report)
    pairs, _ = decontaminate(pairs, eval_items, embed, config.decontam_ngram, config.decontam_similarity, against_answers, report)
    if len(pairs) > config.target_pairs:
        chosen = sorted(random.Random(seed).sample(range(len(pairs)), config.target_pairs))
        report.dropped_over_target += len(pairs) - len(chosen)
        pairs = [pairs[index] for index in chosen]
    if not pairs:
        report.status = "empty"
        raise EmptyTrainingSet(report)
    train, validation = split_by_document(pairs, config.validation_fraction, seed)
    report.train_pairs, report.validation_pairs = len(train), len(validation)
    report.train_docs = sorted({p.doc_id for p in train})
    report.validation_docs = sorted({p.doc_id for p in validation})
    return train, validation, report


class EmptyTrainingSet(UserError):
    """No training pair survived; carries the report that says where they went."""

    def __init__(self, report: DataReport, where: str = "") -> None:
        self.report = report
        steps = (
            f"{report.input_pairs} in, {report.dropped_ungrounded} ungrounded, "
            f"{report.dropped_duplicates} duplicates, {report.dropped_contaminated} close to eval questions"
        )
        cause = "decontamination" if report.dropped_contaminated else "filtering"
        if report.input_pairs == 0:
            cause, steps = "generation", f"{report.unparseable_outputs} of {report.requests} outputs unparseable"
        super().__init__(f"no training pairs left after {cause}: {steps}{f'; see {where}' if where else ''}")


def decontaminate_training_file(
    path: str | Path,
    eval_items: Sequence[EvalItem],
    embed: EmbedFn | None,
    config: GenQAConfig,
    against_answers: bool = False,
    fields: dict[str, str] | None = None,
    split: str | None = None,
) -> tuple[list[TrainingPair], DataReport]:
    """Apply near-duplicate removal and decontamination to a user's own training file (chat or
    Nova JSONL, or question/answer rows read with the field map `fields`), such as
    data/demo/train.jsonl. Raises UserError when no pair is left."""
    pairs = read_training_pairs(path, fields, split)
    report = DataReport(source=str(path), grounding_checked=False, input_pairs=len(pairs), parsed_pairs=len(pairs))
    report.settings.update(
        dedup_threshold=config.dedup_threshold,
        decontam_ngram=config.decontam_ngram,
        decontam_similarity=config.decontam_similarity,
        decontam_against_answers=against_answers,
    )
    pairs = remove_near_duplicates(pairs, embed, config.dedup_threshold, report)
    pairs, _ = decontaminate(pairs, eval_items, embed, config.decontam_ngram, config.decontam_similarity, against_answers, report)
    if not pairs:
        report.status = "empty"
        raise EmptyTrainingSet(report, str(path))
    report.train_pairs = len(pairs)
    report.train_docs = sorted({pair.doc_id for pair in pairs})
    return pairs, report

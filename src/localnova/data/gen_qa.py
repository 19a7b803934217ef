"""Training pairs from the corpus: ask a backend for question-answer pairs about each chunk,
parse what it writes, pass the pairs through the filters in qa_filters.py (grounded,
distinct, not close to the evaluation set) and write them, split by source document, as
chat and Nova JSONL with a report of every step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from localnova.data.formats import TrainingPair, record_to_nova
from localnova.data.qa_filters import DataReport, EmptyTrainingSet, filter_pairs, words
from localnova.embedder import EmbedFn
from localnova.errors import UserError
from localnova.files import json_text, write_jsonl_atomic, write_text_atomic
from localnova.types import ChatRequest, Chunk, EvalItem, GenerationParams

if TYPE_CHECKING:
    from localnova.backends.base import Backend
    from localnova.config import StudyConfig

PROMPT_VERSION = "gen-qa-v1"
GENERATOR_SYSTEM_PROMPT = "You write question and answer pairs for a study guide. You use only facts stated in the passage."
GENERATOR_USER_TEMPLATE = (
    "Passage:\n{passage}\n\n"
    "Write {count} different questions that this passage answers, each with its answer.\n"
    "Rules: each question asks about one fact and makes sense without the passage; each answer is "
    "one or two complete sentences, states the fact plainly in the passage's own terms, and adds nothing "
    "that the passage does not say.\n"
    "Write exactly this format and nothing else:\n"
    "Q: <question>\nA: <answer>\n\nQ: <question>\nA: <answer>"
)


# Where `localnova gen-qa` writes inside a study folder, and the training file it makes there.
GEN_QA_DIR = "gen_qa"


def generated_train_file(study_dir: Path) -> Path:
    return study_dir / GEN_QA_DIR / "train.jsonl"


def build_request(chunk: Chunk, pairs_per_chunk: int, params: GenerationParams) -> ChatRequest:
    user = GENERATOR_USER_TEMPLATE.format(passage=chunk.context_text.strip(), count=pairs_per_chunk)
    return ChatRequest((("system", GENERATOR_SYSTEM_PROMPT), ("user", user)), params)


_LABEL = re.compile(r"^\s*(?:[-*#]+\s*|\d+[.)]\s*)?\**\s*(q|question|a|answer)\s*\d*\s*\**\s*[:.)-]\s*\**\s*(.*)$", re.IGNORECASE)


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().strip("*").strip()
    return re.sub(r"^\d+[.)]\s+", "", text)  # "Q: 1. What ..." -> "What ..."


MAX_ANSWER_WORDS = 120


def is_degenerate(question: str, answer: str) -> bool:
    """Output a small model sometimes loops into: a question of under three words, an answer
    over MAX_ANSWER_WORDS words, or a three-word run repeated three times or more."""
    answer_words = words(answer)
    if len(words(question)) < 3 or len(answer_words) > MAX_ANSWER_WORDS:
        return True
    runs = [tuple(answer_words[i : i + 3]) for i in range(len(answer_words) - 2)]
    return any(runs.count(run) >= 3 for run in set(runs))


def parse_pairs(text: str) -> tuple[list[tuple[str, str]], int]:
    """Read (question, answer) pairs from a model's reply; returns them and how many halves
    (a question with no answer, an answer with no question) were dropped.

    Accepts `Q:`/`A:` lines (also `Question:`, numbered or bulleted, answers running over
    several lines) and JSON objects with "question" and "answer" keys, one a line.
    """
    pairs: list[tuple[str, str]] = []
    incomplete = 0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
                pairs.append((_clean(row["question"]), _clean(row["answer"])))
    if pairs:
        return [(q, a) for q, a in pairs if q and a], sum(1 for q, a in pairs if not (q and a))
    question: str | None = None
    answer_lines: list[str] | None = None

    def close() -> None:
        nonlocal question, answer_lines, incomplete
        if question is not None:
            answer = _clean(" ".join(answer_lines or []))
            if question and answer:
                pairs.append((question, answer))
            else:
                incomplete += 1
        question, answer_lines = None, None

    for line in text.splitlines():
        match = _LABEL.match(line)
        if match and match.group(1).lower() in ("q", "question"):
            close()
            question = _clean(match.group(2))
        elif match:
            if question is None:
                incomplete += 1  # an answer with no question before it
                continue
            if answer_lines is not None:
                close()  # a second answer to one question: keep the first
                incomplete += 1
                continue
            answer_lines = [match.group(2)]
        elif answer_lines is not None and line.strip():
            answer_lines.append(line)
        elif question is not None and answer_lines is None and line.strip():
            question = _clean(question + " " + line)  # a question wrapped onto a second line
    close()
    return pairs, incomplete


def generate_pairs(
    chunks: Sequence[Chunk],
    backend: "Backend",
    params: GenerationParams,
    pairs_per_chunk: int,
    batch_size: int = 16,
    report: DataReport | None = None,
) -> list[TrainingPair]:
    """Ask `backend` for up to `pairs_per_chunk` pairs about each chunk, `batch_size` requests
    per generate call. Output that cannot be parsed is dropped and counted in `report`."""
    report = report if report is not None else DataReport()
    pairs: list[TrainingPair] = []
    seen: set[tuple[str, str]] = set()
    for start in range(0, len(chunks), batch_size):
        batch = list(chunks[start : start + batch_size])
        results = backend.generate([build_request(chunk, pairs_per_chunk, params) for chunk in batch])
        report.chunks += len(batch)
        report.requests += len(batch)
        for chunk, result in zip(batch, results, strict=True):
            parsed, incomplete = parse_pairs(result.text)
            report.incomplete_pairs += incomplete
            if not parsed:
                report.unparseable_outputs += 1
                continue
            for question, answer in parsed[:pairs_per_chunk]:
                if is_degenerate(question, answer):
                    report.degenerate_pairs += 1
                    continue
                key = (question.lower(), answer.lower())
                if key in seen:
                    continue  # exact repeats are not worth an embedding
                seen.add(key)
                pairs.append(TrainingPair(question=question, answer=answer, doc_id=chunk.doc_id, chunk_id=chunk.chunk_id))
    report.parsed_pairs += len(pairs)
    return pairs


def run_gen_qa(
    config: "StudyConfig",
    chunks: Sequence[Chunk],
    eval_items: Sequence[EvalItem],
    backend: "Backend",
    embed: EmbedFn | None,
    out_dir: str | Path,
) -> DataReport:
    """`localnova gen-qa`: generate, filter and split pairs, and write train.jsonl,
    validation.jsonl (chat), train.nova.jsonl and validation.nova.jsonl (Nova), and
    data_report.json/.md into `out_dir`. Each file is written whole or not at all; when no
    pair survives, only the report is written and a UserError names it."""
    out_dir = Path(out_dir)
    if not chunks:
        raise UserError("gen-qa: the corpus gave no chunks to generate from")
    generator = config.gen_qa.generator or config.models[0]
    generation = generator.generation
    # Room for every pair asked for: a reply cut off mid-pair loses that pair.
    max_new_tokens = max(generation.max_new_tokens, 64 * config.gen_qa.pairs_per_chunk)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=generation.temperature, top_p=generation.top_p, seed=config.seed)
    report = DataReport(
        prompt_version=PROMPT_VERSION,
        generator={"name": generator.name, **{k: str(v) for k, v in getattr(backend, "identity", {}).items()}},
    )
    report.settings.update(pairs_per_chunk=config.gen_qa.pairs_per_chunk, max_new_tokens=max_new_tokens, temperature=generation.temperature)
    pairs = generate_pairs(chunks, backend, params, config.gen_qa.pairs_per_chunk, generation.batch_size, report)
    try:
        train, validation, report = filter_pairs(pairs, eval_items, embed, config.gen_qa, config.seed, chunks=chunks, report=report)
    except EmptyTrainingSet as error:
        write_report(error.report, out_dir)
        raise EmptyTrainingSet(error.report, str(out_dir / "data_report.md")) from None
    write_outputs(train, validation, report, out_dir)
    return report


def write_report(report: DataReport, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "data_report.json", json_text(report.to_dict()))
    write_text_atomic(out_dir / "data_report.md", report.to_markdown())


def write_outputs(
    train: list[TrainingPair], validation: list[TrainingPair], report: DataReport, out_dir: str | Path, system_prompt: str | None = None
) -> None:
    """Chat and Nova files for both splits, then the report (last, so a report beside the
    data means the data is complete)."""
    out_dir = Path(out_dir)
    for name, split in (("train", train), ("validation", validation)):
        records = [pair.to_record(system_prompt) for pair in split]
        write_jsonl_atomic(out_dir / f"{name}.jsonl", (record.to_dict() for record in records))
        write_jsonl_atomic(out_dir / f"{name}.nova.jsonl", (record_to_nova(record) for record in records))
    write_report(report, out_dir)


def gen_qa_command(
    config: "StudyConfig",
    chunks: Sequence[Chunk],
    eval_items: Sequence[EvalItem],
    backend: "Backend",
    embed: EmbedFn | None,
    out_dir: str | Path,
) -> int:
    """What `localnova gen-qa CONFIG` runs once the pipeline has the chunks, eval items,
    generator backend and embedder: prints a one-line summary, returns the exit code."""
    report = run_gen_qa(config, chunks, eval_items, backend, embed, out_dir)
    print(
        f"{out_dir}: {report.train_pairs} train and {report.validation_pairs} validation pairs "
        f"from {report.parsed_pairs} generated ({report.dropped_ungrounded} ungrounded, "
        f"{report.dropped_duplicates} duplicates, {report.dropped_contaminated} contaminated dropped)"
    )
    return 0

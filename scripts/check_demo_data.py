"""Check the demo data set in data/demo: corpus, evaluation questions and training pairs.

Checks that every eval and train line parses and has its fields, that every doc_id names a
corpus file, that the counts are large enough, that every document is used by both sets, and
that no training pair shares an 8-word sequence with an evaluation question (the eval set must
stay held out, or a fine-tuned arm can score by memorising the test).

Usage: python scripts/check_demo_data.py [DATA_DIR]   (default: data/demo next to this script)
Exit code 0 when every check passes, 1 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MIN_DOCS = 30
MIN_EVAL = 40
MIN_TRAIN = 300
OVERLAP_WORDS = 8

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
CORPUS_SUFFIXES = {".md", ".txt", ".html", ".pdf", ".jsonl"}


@dataclass
class DemoDataReport:
    """What the checker found: the counts, every problem, and the overlaps it looked for."""

    doc_count: int = 0
    eval_count: int = 0
    train_count: int = 0
    problems: list[str] = field(default_factory=list)
    # (train id, question_id, the shared words) for every train pair that overlaps an eval item
    overlaps: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def corpus_doc_ids(corpus_dir: Path) -> list[str]:
    """The doc_ids of the corpus: each file's path relative to the corpus folder, POSIX style."""
    return sorted(
        path.relative_to(corpus_dir).as_posix()
        for path in corpus_dir.rglob("*")
        if path.is_file() and path.suffix.lower() in CORPUS_SUFFIXES
    )


def check_markdown_structure(corpus_dir: Path, doc_ids: list[str]) -> list[str]:
    """Markdown documents must open with a `# Title` and have at least one `## Section`,
    since the hierarchical chunker splits on headings."""
    problems = []
    for doc_id in doc_ids:
        if not doc_id.endswith(".md"):
            continue
        lines = (corpus_dir / doc_id).read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].startswith("# "):
            problems.append(f"{doc_id}: first line is not a '# Title' heading")
        if not any(line.startswith("## ") for line in lines):
            problems.append(f"{doc_id}: has no '## Section' heading")
    return problems


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """Rows of a JSONL file with their 1-based line numbers, and a problem per bad line."""
    rows, problems = [], []
    if not path.is_file():
        return rows, [f"{path.name}: file not found"]
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{line_no}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path.name}:{line_no}: expected a JSON object")
            continue
        rows.append((line_no, row))
    return rows, problems


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_eval_rows(rows: list[tuple[int, dict]], doc_ids: set[str], file_name: str = "eval.jsonl") -> list[str]:
    """Each eval row needs question_id, question, answer (non-empty strings) and doc_ids
    (a non-empty list of corpus files); question_ids must be unique."""
    problems, seen_ids = [], set()
    for line_no, row in rows:
        where = f"{file_name}:{line_no}"
        for key in ("question_id", "question", "answer"):
            if not _nonempty_str(row.get(key)):
                problems.append(f"{where}: missing or empty '{key}'")
        question_id = row.get("question_id")
        if question_id in seen_ids:
            problems.append(f"{where}: duplicate question_id {question_id!r}")
        seen_ids.add(question_id)
        row_doc_ids = row.get("doc_ids")
        if not isinstance(row_doc_ids, list) or not row_doc_ids:
            problems.append(f"{where}: 'doc_ids' must be a non-empty list")
            continue
        for doc_id in row_doc_ids:
            if doc_id not in doc_ids:
                problems.append(f"{where}: doc_id {doc_id!r} is not in the corpus")
    return problems


def check_train_rows(rows: list[tuple[int, dict]], doc_ids: set[str], file_name: str = "train.jsonl") -> list[str]:
    """Each train row needs a unique id, a corpus doc_id and messages: one user turn then one
    assistant turn, both with non-empty content."""
    problems, seen_ids = [], set()
    for line_no, row in rows:
        where = f"{file_name}:{line_no}"
        row_id = row.get("id")
        if not _nonempty_str(row_id):
            problems.append(f"{where}: missing or empty 'id'")
        elif row_id in seen_ids:
            problems.append(f"{where}: duplicate id {row_id!r}")
        seen_ids.add(row_id)
        if row.get("doc_id") not in doc_ids:
            problems.append(f"{where}: doc_id {row.get('doc_id')!r} is not in the corpus")
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) != 2:
            problems.append(f"{where}: 'messages' must be a list of one user and one assistant turn")
            continue
        for message, role in zip(messages, ("user", "assistant"), strict=True):
            if not isinstance(message, dict) or message.get("role") != role:
                problems.append(f"{where}: expected a '{role}' message here")
            elif not _nonempty_str(message.get("content")):
                problems.append(f"{where}: empty '{role}' content")
    return problems


def word_ngrams(text: str, n: int = OVERLAP_WORDS) -> set[tuple[str, ...]]:
    """Lowercased word n-grams with punctuation treated as a word break."""
    words = re.sub(r"[^\w]+", " ", text.lower()).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def find_eval_overlaps(
    train_rows: list[tuple[int, dict]], eval_rows: list[tuple[int, dict]], n: int = OVERLAP_WORDS
) -> list[tuple[str, str, str]]:
    """Training pairs that share an n-word sequence with an evaluation question.

    Checked: the training question against the eval question and eval answer, and the training
    answer against the eval question. A training answer may restate a fact that an eval answer
    also states (that is the point of training on the corpus), so answer-to-answer is not checked.
    """
    eval_grams = []
    for _, row in eval_rows:
        question_grams = word_ngrams(str(row.get("question", "")), n)
        answer_grams = word_ngrams(str(row.get("answer", "")), n)
        eval_grams.append((str(row.get("question_id")), question_grams, answer_grams))
    overlaps = []
    for _, row in train_rows:
        messages = row.get("messages") or []
        texts = {m.get("role"): str(m.get("content", "")) for m in messages if isinstance(m, dict)}
        train_question = word_ngrams(texts.get("user", ""), n)
        train_answer = word_ngrams(texts.get("assistant", ""), n)
        for question_id, question_grams, answer_grams in eval_grams:
            shared = (train_question & (question_grams | answer_grams)) | (train_answer & question_grams)
            if shared:
                overlaps.append((str(row.get("id")), question_id, " ".join(sorted(shared)[0])))
    return overlaps


def check_demo_data(data_dir: Path) -> DemoDataReport:
    """Run every check on a demo data folder holding corpus/, eval.jsonl and train.jsonl."""
    report = DemoDataReport()
    corpus_dir = data_dir / "corpus"
    if not corpus_dir.is_dir():
        report.problems.append(f"{corpus_dir}: corpus folder not found")
        return report
    doc_id_list = corpus_doc_ids(corpus_dir)
    doc_ids = set(doc_id_list)
    report.doc_count = len(doc_id_list)
    report.problems += check_markdown_structure(corpus_dir, doc_id_list)

    eval_rows, problems = read_jsonl(data_dir / "eval.jsonl")
    report.problems += problems + check_eval_rows(eval_rows, doc_ids)
    train_rows, problems = read_jsonl(data_dir / "train.jsonl")
    report.problems += problems + check_train_rows(train_rows, doc_ids)
    report.eval_count, report.train_count = len(eval_rows), len(train_rows)

    for name, count, minimum in (
        ("corpus documents", report.doc_count, MIN_DOCS),
        ("eval questions", report.eval_count, MIN_EVAL),
        ("training pairs", report.train_count, MIN_TRAIN),
    ):
        if count < minimum:
            report.problems.append(f"only {count} {name}, need at least {minimum}")

    eval_docs = {d for _, row in eval_rows for d in (row.get("doc_ids") or []) if isinstance(d, str)}
    train_docs = {row.get("doc_id") for _, row in train_rows}
    for doc_id in doc_id_list:
        if doc_id not in eval_docs:
            report.problems.append(f"{doc_id}: no eval question uses this document")
        if doc_id not in train_docs:
            report.problems.append(f"{doc_id}: no training pair uses this document")

    report.overlaps = find_eval_overlaps(train_rows, eval_rows)
    for train_id, question_id, words in report.overlaps:
        report.problems.append(f"train {train_id} shares {OVERLAP_WORDS} words with eval {question_id}: '{words}'")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    report = check_demo_data(args.data_dir)
    eval_rows, _ = read_jsonl(args.data_dir / "eval.jsonl")
    two_doc = sum(1 for _, row in eval_rows if len(row.get("doc_ids") or []) > 1)
    print(f"corpus documents: {report.doc_count}")
    print(f"eval questions:   {report.eval_count} ({two_doc} need more than one document)")
    print(f"training pairs:   {report.train_count}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Loading the evaluation set: one JSON object per line with question_id, question, answer
and doc_ids (the documents that hold the answer, for recall@k)."""

from __future__ import annotations

from pathlib import Path

from localnova.errors import UserError
from localnova.jsonl import read_json_lines
from localnova.types import EvalItem

REQUIRED_FIELDS = ("question_id", "question", "answer")


def load_eval_set(path: Path, limit: int | None = None) -> list[EvalItem]:
    items: list[EvalItem] = []
    seen: set[str] = set()
    for line_number, row in read_json_lines(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{line_number}: expected a JSON object")
        missing = [name for name in REQUIRED_FIELDS if not isinstance(row.get(name), str) or not row[name].strip()]
        if missing:
            raise UserError(f"{path}:{line_number}: missing field {missing[0]!r}")
        doc_ids = row.get("doc_ids", [])
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
            raise UserError(f"{path}:{line_number}: doc_ids must be a list of strings")
        if row["question_id"] in seen:
            raise UserError(f"{path}:{line_number}: duplicate question_id {row['question_id']!r}")
        seen.add(row["question_id"])
        items.append(EvalItem(row["question_id"], row["question"].strip(), row["answer"].strip(), tuple(doc_ids)))
    if not items:
        raise UserError(f"{path}: eval file has no questions")
    return items[:limit] if limit else items

"""Loading the evaluation set: one row per question with question_id, question, answer and
optionally doc_ids (the documents that hold the answer, for recall@k), from JSONL, CSV,
Parquet or a Hugging Face dataset (data/tables.py). `eval.fields` maps these names to the
columns of a user's own file, e.g. {question_id: id, question: prompt, answer: reference}."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from localnova.config import EVAL_FIELD_NAMES
from localnova.data.tables import check_field_map, field_value, read_rows
from localnova.errors import UserError
from localnova.types import EvalItem


def load_eval_set(
    path: Path | str, limit: int | None = None, fields: Mapping[str, str] | None = None, split: str | None = None
) -> list[EvalItem]:
    """The questions of the eval set at `path` (the first `limit` of them). Every problem is one
    line naming the file, the row and the field."""
    fields = dict(fields or {})
    check_field_map(fields, EVAL_FIELD_NAMES, "eval.fields")
    items: list[EvalItem] = []
    seen: set[str] = set()
    for row in read_rows(path, split):
        question_id = field_value(row, "question_id", fields)
        question = field_value(row, "question", fields)
        answer = field_value(row, "answer", fields)
        doc_ids = field_value(row, "doc_ids", fields, kind="list", required=False)
        if question_id in seen:
            raise UserError(f"{row.where}: duplicate question_id {question_id!r}")
        seen.add(question_id)
        items.append(EvalItem(question_id, question, answer, tuple(doc_ids)))
    if not items:
        raise UserError(f"{path}: eval file has no questions")
    return items[:limit] if limit else items


def load_study_eval_set(eval_config, limit: int | None = None) -> list[EvalItem]:
    """The eval set a study config's `eval` section names, with its field map and split."""
    return load_eval_set(eval_config.path, limit, eval_config.fields, eval_config.split)

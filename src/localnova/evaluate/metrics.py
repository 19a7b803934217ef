"""Reference metrics against the ground truth: token F1 (SQuAD-style), ROUGE-L, and the
per model x arm table of them with recall@k, latency and tokens.

Pure functions, no model; the token F1 also serves as a reference judge.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

from localnova.retrieval import recall_at_k
from localnova.store import AnswerRecord
from localnova.types import EvalItem

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> list[str]:
    """Lower-case, strip punctuation and articles, split on whitespace (SQuAD's normalisation)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return text.split()


def token_f1(prediction: str, truth: str) -> float:
    predicted, expected = normalise(prediction), normalise(truth)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, truth: str) -> float:
    """ROUGE-L F-measure (Google's rouge-score package, with stemming)."""
    return _rouge_scorer().score(truth, prediction)["rougeL"].fmeasure


def answer_metrics(items: list[EvalItem], answers: Iterable[AnswerRecord], top_k: int) -> dict[str, dict[str, Any]]:
    """Per model x arm ("model/arm"): token F1, ROUGE-L, mean latency and tokens, and for arms
    that retrieved, recall@top_k of the documents that hold the answer."""
    truth = {item.question_id: item for item in items}
    grouped: dict[tuple[str, str], list[AnswerRecord]] = {}
    for answer in answers:
        grouped.setdefault((answer.model, answer.arm), []).append(answer)
    cells: dict[str, dict[str, Any]] = {}
    for (model, arm), group in sorted(grouped.items()):
        count = len(group)
        cell = {
            "model": model,
            "arm": arm,
            "questions": count,
            "token_f1": sum(token_f1(a.result.text, truth[a.question_id].answer) for a in group) / count,
            "rouge_l": sum(rouge_l(a.result.text, truth[a.question_id].answer) for a in group) / count,
            "mean_latency_ms": sum(a.result.latency_ms for a in group) / count,
            "latency_method": group[0].result.latency_method,
            "mean_input_tokens": sum(a.result.input_tokens for a in group) / count,
            "mean_output_tokens": sum(a.result.output_tokens for a in group) / count,
        }
        if group[0].retrieved:
            cell[f"recall_at_{top_k}"] = recall_at_k(
                [[chunk["doc_id"] for chunk in a.retrieved] for a in group], [truth[a.question_id].doc_ids for a in group], k=top_k
            )
        cells[f"{model}/{arm}"] = cell
    return cells

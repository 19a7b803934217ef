"""Reference metrics against the ground truth: token F1 (SQuAD-style) and ROUGE-L.

Pure functions, no model; the token F1 also serves as a reference judge.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import cache

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

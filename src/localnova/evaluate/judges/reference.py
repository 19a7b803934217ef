"""Reference judges: scores from comparing the answer with the ground truth, no LLM asked.

They are cheap and deterministic, and no instruction inside an answer can move them.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np

from localnova.config import JudgeConfig, StudyConfig
from localnova.embedder import Embedder
from localnova.evaluate.judges.base import GenerateFn, Judge, JudgeInput, JudgeOutcome
from localnova.evaluate.metrics import token_f1


class TokenF1Judge(Judge):
    """10 x SQuAD token F1 against the ground truth."""

    kind = "token_f1"

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        self._identity = {"judge": config.name, "kind": "token_f1"}

    def run(self, items: list[JudgeInput], generate: GenerateFn | None = None, tries_before: list[int] | None = None) -> list[JudgeOutcome]:
        return [JudgeOutcome(round(10 * token_f1(item.text, item.truth), 4), "token_f1", None, None, 1) for item in items]


class SentenceEmbedder(Protocol):
    """What the similarity judge needs of an embedder (`localnova.embedder.Embedder` is one):
    texts in, one L2-normalised row each out, and what decides the vectors."""

    identity: dict[str, Any]

    def __call__(self, texts: list[str]) -> np.ndarray: ...


class EmbeddingSimilarityJudge(Judge):
    """10 x cosine similarity of answer and ground truth embeddings (floored at 0). An empty
    answer scores 0: there is nothing to compare.

    `shared` is an embedder of the study already loaded for `config.embedding_model`; without
    it the judge loads its own when opened, and drops it when closed."""

    kind = "embedding_similarity"

    def __init__(self, config: JudgeConfig, shared: SentenceEmbedder | None = None):
        super().__init__(config)
        self.shared = shared
        self.embedder: SentenceEmbedder | None = None

    @classmethod
    def from_config(
        cls, judge_config: JudgeConfig, study: StudyConfig, embedder: SentenceEmbedder | None = None
    ) -> EmbeddingSimilarityJudge:
        # The study's embedder is shared only when it is the model this judge asks for.
        return cls(judge_config, embedder if judge_config.embedding_model == study.retrieval.embedding_model else None)

    def _load(self) -> None:
        self.embedder = self.shared if self.shared is not None else Embedder(self.config.embedding_model)
        embedder_identity = json.dumps(self.embedder.identity, sort_keys=True)
        self._identity = {"judge": self.name, "kind": "embedding_similarity", "embedder": embedder_identity}

    def _release(self) -> None:
        self.embedder = None  # a shared embedder stays with its owner; an own one is freed

    def run(self, items: list[JudgeInput], generate: GenerateFn | None = None, tries_before: list[int] | None = None) -> list[JudgeOutcome]:
        if not items:
            return []
        if self.embedder is None:
            raise RuntimeError(f"judge {self.name!r}: open it before running (use `with judge.opened():`)")
        answers = self.embedder([item.text for item in items])
        truths = self.embedder([item.truth for item in items])
        cosines = np.sum(answers * truths, axis=1)
        return [
            JudgeOutcome(0.0 if not item.text.strip() else round(10 * max(0.0, float(cosine)), 4), "embedding_similarity", None, None, 1)
            for item, cosine in zip(items, cosines, strict=True)
        ]

"""What every judge shares: the items it grades, what it says, the controls, and the one
interface (with the one cache key) that the runner drives.

A judge is built without loading anything; `opened()` loads what it needs (a backend, an
embedder) and releases it on exit, so the runner can hold one judge model at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from localnova.backends.base import Backend
from localnova.config import JudgeConfig, StudyConfig
from localnova.types import ChatRequest, GenerationResult, stable_hash

SUBJECT_ANSWER = "answer"
# A run stores each judge's identity as it judged under this artifact name plus the judge's
# name, so another run can tell the same judge from one with the same name only.
JUDGE_IDENTITY_ARTIFACT = "judge_identity:"
CONTROL_SUBJECTS = ("control_ground_truth", "control_empty", "control_other")

# How many items a judge without a model of its own (token F1, embeddings) takes per slice.
REFERENCE_BATCH_SIZE = 16

GenerateFn = Callable[[list[ChatRequest]], list[GenerationResult]]


@dataclass(frozen=True)
class JudgeInput:
    model: str  # '' for controls
    arm: str  # '' for controls
    question_id: str
    subject: str  # answer | control_ground_truth | control_empty | control_other
    question: str
    truth: str
    text: str  # what is graded


@dataclass
class JudgeOutcome:
    score: float | None  # None: the judge failed to give a score
    method: str
    reason: str | None
    raw_text: str | None
    attempts: int


def content_key(identity: dict[str, Any], item: JudgeInput) -> str:
    """The store key of one judgment: everything that decides the score (the judge's identity,
    which holds its model, prompt and settings; the question, the truth, the graded text) and
    nothing else, so the same content graded by the same judge in any run of a study is judged
    once, and a judge whose prompt or settings changed judges again."""
    return stable_hash([identity, item.question, item.truth, item.text], length=32)


class Judge(ABC):
    """One judge of the panel. Build it cheaply; use it inside `with judge.opened():`."""

    kind: ClassVar[str]  # the JudgeConfig.kind it implements

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.name = config.name
        self.batch_size = REFERENCE_BATCH_SIZE
        # The backend the runner sends this judge's requests to; None for judges without one.
        self.backend: Backend | None = None
        self._identity: dict[str, Any] | None = None
        self._open = False

    @classmethod
    def from_config(cls, judge_config: JudgeConfig, study: StudyConfig, embedder: Any = None) -> Judge:
        """The judge `judge_config` describes within `study`, nothing loaded yet. `embedder` is
        the study's own (for `study.retrieval.embedding_model`) or None."""
        return cls(judge_config)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything about the judge that changes its scores; part of every content key. A
        judge whose identity depends on what it loads knows it only once opened."""
        if self._identity is None:
            raise RuntimeError(f"judge {self.name!r}: its identity is known once it is opened (use `with judge.opened():`)")
        return self._identity

    def content_key(self, item: JudgeInput) -> str:
        return content_key(self.identity, item)

    @contextmanager
    def opened(self) -> Iterator[Judge]:
        """Load what the judge needs for the block, and release it after, even on error."""
        if self._open:
            raise RuntimeError(f"judge {self.name!r} is already open")
        self._load()
        self._open = True
        try:
            yield self
        finally:
            self._open = False
            self._release()

    # Hooks, not abstract: a judge that needs no model has nothing to load.
    def _load(self) -> None:  # noqa: B027
        """Load models and set the identity; nothing to do for a judge that needs no model."""

    def _release(self) -> None:  # noqa: B027
        """Free what `_load` loaded."""

    @abstractmethod
    def run(self, items: list[JudgeInput], generate: GenerateFn | None = None, tries_before: list[int] | None = None) -> list[JudgeOutcome]:
        """One outcome per item, in order. A judge with a backend sends its requests through
        `generate`, which the runner points at the store so every call is cached (and, for an
        item judged before without a score, made anew). `tries_before[i]` is how many attempts
        that earlier judgment of item i made (0 for a new item); a judge that samples goes on
        from there rather than drawing the same replies again."""


def control_inputs(questions: list[tuple[str, str, str]]) -> list[JudgeInput]:
    """The three controls per question, from (question_id, question, truth) in study order.
    The 'other' control grades the next question's truth (the last takes the first's)."""
    controls = []
    for index, (question_id, question, truth) in enumerate(questions):
        other_truth = questions[(index + 1) % len(questions)][2] if len(questions) > 1 else ""
        for subject, text in zip(CONTROL_SUBJECTS, (truth, "", other_truth), strict=True):
            controls.append(JudgeInput("", "", question_id, subject, question, truth, text))
    return controls

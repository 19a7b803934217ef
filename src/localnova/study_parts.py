"""Parts of the study config that are data rather than code: the base of every section,
chunking, the arms (a name plus its parts: the answer prompt, retrieval, the adapter's training
recipe), the judges' rubric and scale, the RAFT recipe and the tracker a run reports to.

The post's four arms and the RAFT arm are built in (BUILTIN_ARMS); a config lists arms by name
and may define more under `arm_definitions`. The built-in prompts are the strings the study has
always sent, so the built-in arms' requests, and the store's keys over them, stay the same.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The fields localnova reads from an eval set and from question/answer training rows; a
# config's field map (eval.fields, finetune.train_fields) renames only these.
EVAL_FIELD_NAMES = ("question_id", "question", "answer", "doc_ids")
TRAIN_FIELD_NAMES = ("question", "answer", "doc_id")


def known_fields(fields: dict[str, str], known: tuple[str, ...]) -> dict[str, str]:
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}: the fields are {', '.join(known)} (each maps to a column of the file)")
    return fields


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChunkingConfig(Section):
    strategy: Literal["fixed", "hierarchical", "semantic", "none"] = "fixed"
    # fixed: chunk size and overlap, in tokens of the embedding model's tokenizer
    chunk_tokens: int = Field(200, gt=0)
    overlap_tokens: int = Field(30, ge=0)
    # hierarchical: parents split at headings up to parent_tokens, children inside them
    parent_tokens: int = Field(600, gt=0)
    child_tokens: int = Field(150, gt=0)
    # semantic: split where the distance between neighbouring sentences exceeds this
    # percentile of all neighbour distances in the document
    breakpoint_percentile: float = Field(90.0, gt=0, lt=100)
    max_chunk_tokens: int = Field(400, gt=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingConfig":
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        if self.child_tokens > self.parent_tokens:
            raise ValueError("child_tokens must not exceed parent_tokens")
        return self


# The answer prompts: the system message, the user message without retrieval, with retrieval,
# and how each retrieved passage is written into it.
SYSTEM_PROMPT = "You are a helpful assistant. Answer the question accurately and concisely, in one or two sentences."
QUESTION_TEMPLATE = "Question: {question}"
CONTEXT_TEMPLATE = (
    "Use the following passages to answer the question. If they do not contain the answer, say so.\n\n{passages}\n\nQuestion: {question}"
)
PASSAGE_TEMPLATE = "[{number}] (source: {doc_id})\n{text}"


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"malformed template {template!r}: {error}") from None


class PromptConfig(Section):
    """An arm's answer prompt. Templates are Python format strings; each may use only its own
    placeholders (a literal brace is written twice)."""

    system: str = SYSTEM_PROMPT
    question: str = QUESTION_TEMPLATE  # {question}
    context: str = CONTEXT_TEMPLATE  # {passages} {question}
    passage: str = PASSAGE_TEMPLATE  # {number} {doc_id} {text}

    @model_validator(mode="after")
    def _known_placeholders(self) -> PromptConfig:
        allowed = {"question": {"question"}, "context": {"passages", "question"}, "passage": {"number", "doc_id", "text"}}
        for field, names in allowed.items():
            unknown = _placeholders(getattr(self, field)) - names
            if unknown:
                raise ValueError(f"prompt.{field}: unknown placeholder {{{sorted(unknown)[0]}}}; it may use {', '.join(sorted(names))}")
        if "{passages}" not in self.context:
            raise ValueError("prompt.context must place the {passages}")
        return self


class ArmRetrieval(Section):
    """What an arm retrieves: the study's retrieval and chunking unless set here."""

    top_k: int | None = Field(None, gt=0)  # default: retrieval.top_k
    chunking: ChunkingConfig | None = None  # default: corpus.chunking (another chunking builds its own index)


# How an arm's model is adapted: none (the base model), sft (LoRA on the question-answer pairs,
# the post's fine-tuning) or raft (LoRA on RAFT rows: each question with its oracle passage
# among distractors, answers quoting the passage; finetune.raft sets the recipe).
AdapterRecipe = Literal["none", "sft", "raft"]


class ArmConfig(Section):
    """One arm: a name plus its parts."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    prompt: PromptConfig = PromptConfig()
    retrieval: ArmRetrieval | None = None  # None: the question alone
    adapter: AdapterRecipe = "none"


BUILTIN_ARMS: dict[str, ArmConfig] = {
    arm.name: arm
    for arm in (
        ArmConfig(name="base"),
        ArmConfig(name="rag", retrieval=ArmRetrieval()),
        ArmConfig(name="ft", adapter="sft"),
        ArmConfig(name="ft_rag", retrieval=ArmRetrieval(), adapter="sft"),
        ArmConfig(name="raft", retrieval=ArmRetrieval(), adapter="raft"),
    )
}


# The judges' rubric: the post's (DESIGN.md), on its 0-10 scale.
DEFAULT_BANDS = (
    "0-3: incorrect or misleading",
    "4-6: partially correct but incomplete",
    "7-8: mostly correct with minor inaccuracies",
    "9-10: completely accurate and comprehensive",
)
DEFAULT_CRITERIA = "Judge factual accuracy, completeness, relevance and clarity."


class RubricConfig(Section):
    """What an LLM judge is told to grade by, and on what integer scale. A score on another
    scale than 0-10 is stored mapped onto 0-10 (linearly, low to 0 and high to 10), so judges on
    different scales share one panel; the rubric is part of every judgment's identity."""

    low: int = Field(0, ge=0)
    high: int = Field(10, gt=0)
    bands: list[str] = Field(default_factory=lambda: list(DEFAULT_BANDS), min_length=1)
    criteria: str = DEFAULT_CRITERIA

    @model_validator(mode="after")
    def _ordered(self) -> RubricConfig:
        if self.high <= self.low:
            raise ValueError("rubric.high must be above rubric.low")
        return self


class RaftConfig(Section):
    """The RAFT recipe (Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific
    RAG"): each training question is shown with its oracle passage among retrieved distractors,
    and on a share of rows with the oracle left out, so the model learns to use a passage that
    holds the answer and to read past those that do not; answers quote the passage they rest on."""

    distractors: int = Field(3, ge=0)  # passages besides the oracle in each row
    oracle_fraction: float = Field(0.8, ge=0, le=1)  # share of rows that keep the oracle (RAFT's P)
    quote_tokens: int = Field(40, gt=0)  # at most this many words of the oracle quoted in the answer


TrackerKind = Literal["mlflow", "trackio"]


class TrackerConfig(Section):
    """Where a finished run's summary metrics, report and eval log go: an MLflow tracking URI
    (a folder path is a local file store) or a trackio project."""

    kind: TrackerKind
    uri: str | None = None  # mlflow: tracking URI or folder; default: MLflow's own default
    experiment: str | None = None  # mlflow experiment / trackio project; default: the study's name


def stored_judge(judge: Any) -> dict[str, Any]:
    """A judge (a config.JudgeConfig) as a run's identity (and stored config) holds it: its rubric and options left
    out at their defaults, keys added after runs were first stored, so those runs keep their
    ids; whatever compares a config's judge with a stored one reads it in this form."""
    found = judge.model_dump(mode="json")
    for key, default in (("rubric", RubricConfig().model_dump(mode="json")), ("options", {})):
        if found.get(key) == default:
            del found[key]
    return found

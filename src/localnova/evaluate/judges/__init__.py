"""The judge panel: LLM judges (any backend) and reference judges that need no LLM.

Every judge scores every answer 0-10 against the ground truth, and, as controls, the ground
truth itself, an empty answer and the ground truth of another question: a judge that does not
give the first a high score and the other two a low one is not worth reading.

Judge kinds register by name in one registry (localnova/plugins.py), which other packages
extend through the `localnova.judges` entry points; `build_panel` builds the panel a study
config names from it, without loading any model.
"""

from __future__ import annotations

from localnova.config import StudyConfig
from localnova.evaluate.judges.base import (
    CONTROL_SUBJECTS,
    JUDGE_IDENTITY_ARTIFACT,
    REFERENCE_BATCH_SIZE,
    SUBJECT_ANSWER,
    GenerateFn,
    Judge,
    JudgeInput,
    JudgeOutcome,
    content_key,
    control_inputs,
)
from localnova.evaluate.judges.llm import (
    JUDGE_SYSTEM,
    JUDGE_TEMPLATE,
    PROMPT_HASH,
    SCORE_PREFILL,
    LLMJudge,
    expected_score,
    judge_messages,
    parse_judge_reply,
    read_distribution,
    score_distribution,
)
from localnova.evaluate.judges.reference import EmbeddingSimilarityJudge, SentenceEmbedder, TokenF1Judge
from localnova.plugins import load_judge_class

__all__ = [
    "CONTROL_SUBJECTS",
    "JUDGE_IDENTITY_ARTIFACT",
    "JUDGE_SYSTEM",
    "JUDGE_TEMPLATE",
    "PROMPT_HASH",
    "REFERENCE_BATCH_SIZE",
    "SCORE_PREFILL",
    "SUBJECT_ANSWER",
    "EmbeddingSimilarityJudge",
    "GenerateFn",
    "Judge",
    "JudgeInput",
    "JudgeOutcome",
    "LLMJudge",
    "SentenceEmbedder",
    "TokenF1Judge",
    "build_panel",
    "content_key",
    "control_inputs",
    "expected_score",
    "judge_messages",
    "parse_judge_reply",
    "read_distribution",
    "score_distribution",
]


def build_panel(config: StudyConfig, embedder: SentenceEmbedder | None = None) -> list[Judge]:
    """Every judge of `config.judges`, in order, without loading any model: each loads what it
    needs when opened. `embedder` is the study's embedder for `config.retrieval.embedding_model`
    (None if the study has none)."""
    return [load_judge_class(judge_config.kind).from_config(judge_config, config, embedder) for judge_config in config.judges]

"""The judge panel: LLM judges (any backend) and reference judges that need no LLM.

Every judge scores every answer 0-10 against the ground truth, and, as controls, the ground
truth itself, an empty answer and the ground truth of another question: a judge that does not
give the first a high score and the other two a low one is not worth reading.

`JUDGES` maps each `JudgeConfig.kind` to its class (a test checks they agree);
`build_panel` builds the panel a study config names without loading any model.
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

__all__ = [
    "CONTROL_SUBJECTS",
    "JUDGE_IDENTITY_ARTIFACT",
    "JUDGES",
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

# config.JudgeConfig.kind lists the same names (a test checks).
JUDGES: dict[str, type[Judge]] = {judge.kind: judge for judge in (LLMJudge, TokenF1Judge, EmbeddingSimilarityJudge)}


def build_panel(config: StudyConfig, embedder: SentenceEmbedder | None = None) -> list[Judge]:
    """Every judge of `config.judges`, in order, without loading any model: each loads what it
    needs when opened. `embedder` is the study's embedder for `config.retrieval.embedding_model`
    (None if the study has none)."""
    return [JUDGES[judge_config.kind].from_config(judge_config, config, embedder) for judge_config in config.judges]

"""Request rules some models add to the Converse API's own, each with where it is stated.

botocore's model of Converse allows any temperature and topP in 0..1 together; some models
refuse more. A rule here is checked on every planned request before the first billable call,
so the refusal comes before anything is paid, naming the config key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConverseRule:
    """A model family's extra rule on inferenceConfig; `problem` returns (member, why) or None."""

    name: str
    models: re.Pattern[str]
    source: str

    def problem(self, inference_config: dict[str, Any]) -> tuple[str, str] | None:
        if self.name == "temperature or topP, not both" and "temperature" in inference_config and "topP" in inference_config:
            return "inferenceConfig.topP", "this model takes temperature or topP, not both (leave top_p at 1.0, which is not sent)"
        return None


CONVERSE_RULES = (
    # Claude Sonnet 4.5 and Haiku 4.5 (and later 4.x models) refuse a request that sets both.
    ConverseRule(
        "temperature or topP, not both",
        re.compile(r"anthropic\.claude-(sonnet|haiku|opus)-4-[5-9]"),
        "Anthropic's migration guide for Claude 4.5 (docs.claude.com/en/docs/about-claude/models/migrating-to-claude-4, "
        "'Use only temperature OR top_p, not both'); Bedrock answers ValidationException 'temperature and top_p cannot "
        "both be specified for this model' (github.com/mem0ai/mem0/issues/3891, aws-samples/bedrock-access-gateway#191)",
    ),
)


def converse_rule_problems(model_id: str, request: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, why) for every model rule a Converse request breaks."""
    problems = []
    for rule in CONVERSE_RULES:
        if rule.models.search(model_id):
            found = rule.problem(request.get("inferenceConfig", {}))
            if found is not None:
                problems.append((found[0], f"{found[1]}; source: {rule.source}"))
    return problems

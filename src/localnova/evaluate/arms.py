"""The arms of the study and the one place where their prompts are built.

An arm is a name plus its parts (study_parts.ArmConfig): the answer prompt, what it retrieves
(nothing, or top_k chunks of a chunking) and which adapter answers it. Every arm that retrieves
puts its chunks into its prompt's context template, whatever the path (FAISS locally, a
Knowledge Base on Bedrock), so every path means the same by `rag`. The built-in arms use the
prompts the study has always sent (study_parts.SYSTEM_PROMPT and the templates), so their
requests, and the store's keys over them, are the same as before arms were data.
"""

from __future__ import annotations

from dataclasses import dataclass

from localnova.config import ModelConfig, StudyConfig
from localnova.study_parts import CONTEXT_TEMPLATE, PASSAGE_TEMPLATE, SYSTEM_PROMPT, ArmConfig, PromptConfig
from localnova.types import ChatRequest, EvalItem, GenerationParams, RetrievedChunk

__all__ = [
    "ArmInputs",
    "CONTEXT_TEMPLATE",
    "DEFAULT_PROMPT",
    "PASSAGE_TEMPLATE",
    "SYSTEM_PROMPT",
    "arm_top_k",
    "build_messages",
    "build_request",
    "format_passages",
    "generation_params",
]

DEFAULT_PROMPT = PromptConfig()


def arm_top_k(config: StudyConfig, arm: ArmConfig) -> int:
    """How many chunks the arm retrieves: its own top_k, else the study's."""
    return (arm.retrieval.top_k if arm.retrieval else None) or config.retrieval.top_k


def generation_params(model: ModelConfig, seed: int) -> GenerationParams:
    """How an answer model samples, from its config and the study's seed."""
    generation = model.generation
    return GenerationParams(max_new_tokens=generation.max_new_tokens, temperature=generation.temperature, top_p=generation.top_p, seed=seed)


def format_passages(chunks: list[RetrievedChunk], prompt: PromptConfig = DEFAULT_PROMPT) -> str:
    return "\n\n".join(prompt.passage.format(number=n, doc_id=c.doc_id, text=c.text.strip()) for n, c in enumerate(chunks, 1))


def build_messages(question: str, retrieved: list[RetrievedChunk] | None, prompt: PromptConfig = DEFAULT_PROMPT) -> list[dict[str, str]]:
    """The chat messages for one question; `retrieved` is None for arms without retrieval."""
    if retrieved is None:
        user = prompt.question.format(question=question)
    else:
        user = prompt.context.format(passages=format_passages(retrieved, prompt), question=question)
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def build_request(
    item: EvalItem, retrieved: list[RetrievedChunk] | None, params: GenerationParams, prompt: PromptConfig = DEFAULT_PROMPT
) -> ChatRequest:
    return ChatRequest.from_messages(build_messages(item.question, retrieved, prompt), params)


@dataclass(frozen=True)
class ArmInputs:
    """What one arm sends for each question of the study: its prompt, and its retrieved chunks
    (None for every question of an arm without retrieval)."""

    prompt: PromptConfig
    contexts: list[list[RetrievedChunk] | None]

    def requests(self, items: list[EvalItem], params: GenerationParams) -> list[ChatRequest]:
        return [build_request(item, context, params, self.prompt) for item, context in zip(items, self.contexts, strict=True)]

"""The arms of the study and the one place where their prompts are built.

`rag` and `ft_rag` put the retrieved chunks into the same context template, whatever the
path (FAISS locally, a Knowledge Base on Bedrock), so every path means the same by `rag`.
`ft` and `ft_rag` use the same prompts as `base` and `rag`; only the model differs.
"""

from __future__ import annotations

from localnova.config import FT_ARMS, RAG_ARMS, ModelConfig
from localnova.types import ChatRequest, EvalItem, GenerationParams, RetrievedChunk

SYSTEM_PROMPT = "You are a helpful assistant. Answer the question accurately and concisely, in one or two sentences."

CONTEXT_TEMPLATE = (
    "Use the following passages to answer the question. If they do not contain the answer, say so.\n\n{passages}\n\nQuestion: {question}"
)

PASSAGE_TEMPLATE = "[{number}] (source: {doc_id})\n{text}"


def uses_retrieval(arm: str) -> bool:
    return arm in RAG_ARMS


def uses_adapter(arm: str) -> bool:
    return arm in FT_ARMS


def generation_params(model: ModelConfig, seed: int) -> GenerationParams:
    """How an answer model samples, from its config and the study's seed."""
    generation = model.generation
    return GenerationParams(max_new_tokens=generation.max_new_tokens, temperature=generation.temperature, top_p=generation.top_p, seed=seed)


def format_passages(chunks: list[RetrievedChunk]) -> str:
    return "\n\n".join(PASSAGE_TEMPLATE.format(number=n, doc_id=c.doc_id, text=c.text.strip()) for n, c in enumerate(chunks, 1))


def build_messages(question: str, retrieved: list[RetrievedChunk] | None) -> list[dict[str, str]]:
    """The chat messages for one question; `retrieved` is None for arms without retrieval."""
    if retrieved is None:
        user = f"Question: {question}"
    else:
        user = CONTEXT_TEMPLATE.format(passages=format_passages(retrieved), question=question)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def build_request(item: EvalItem, retrieved: list[RetrievedChunk] | None, params: GenerationParams) -> ChatRequest:
    return ChatRequest.from_messages(build_messages(item.question, retrieved), params)

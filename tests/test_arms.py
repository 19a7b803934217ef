"""The arms' prompts: one context template for every retrieval path, the question alone for
arms without retrieval, and sampling settings taken from the model's config."""

from __future__ import annotations

import pytest

from localnova.config import ARMS, FT_ARMS, RAG_ARMS, GenerationConfig, ModelConfig
from localnova.evaluate.arms import (
    CONTEXT_TEMPLATE,
    SYSTEM_PROMPT,
    build_messages,
    build_request,
    generation_params,
    uses_adapter,
    uses_retrieval,
)
from localnova.types import ChatRequest, EvalItem, GenerationParams, RetrievedChunk

QUESTION = "How many watts does the F4 lamp draw?"

# What a local FAISS index returns for two chunks.
FAISS_CHUNKS = [
    RetrievedChunk(chunk_id="lamps.md#fixed-0", doc_id="lamps.md", score=0.83, text="The F4 lamp draws 36 watts."),
    RetrievedChunk(chunk_id="guides/setup.md#fixed-2", doc_id="guides/setup.md", score=0.41, text="Plug the hub in first."),
]
# What a Bedrock Knowledge Base returns for the same two passages: other ids and scores, and
# text with the whitespace it was stored with.
KB_CHUNKS = [
    RetrievedChunk(chunk_id="s3://bucket/lamps.md#1", doc_id="lamps.md", score=0.61, text="\n  The F4 lamp draws 36 watts.\n"),
    RetrievedChunk(chunk_id="s3://bucket/guides/setup.md#7", doc_id="guides/setup.md", score=0.52, text="Plug the hub in first.  \n\n"),
]


def user_prompt(retrieved: list[RetrievedChunk] | None) -> str:
    messages = build_messages(QUESTION, retrieved)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    return messages[1]["content"]


def test_arms_without_retrieval_ask_only_the_question():
    prompt = user_prompt(None)
    assert prompt == f"Question: {QUESTION}"
    assert "source:" not in prompt and "passages" not in prompt


def test_arms_with_retrieval_number_the_passages_with_their_sources_inside_the_template():
    prompt = user_prompt(FAISS_CHUNKS)
    passages = "[1] (source: lamps.md)\nThe F4 lamp draws 36 watts.\n\n[2] (source: guides/setup.md)\nPlug the hub in first."
    assert prompt == CONTEXT_TEMPLATE.format(passages=passages, question=QUESTION)
    assert prompt.endswith(f"Question: {QUESTION}")


def test_passages_keep_retrieval_order():
    prompt = user_prompt(list(reversed(FAISS_CHUNKS)))
    assert prompt.index("[1] (source: guides/setup.md)") < prompt.index("[2] (source: lamps.md)")


def test_passage_text_is_stripped():
    padded = [RetrievedChunk("c", "lamps.md", 1.0, "   \n The F4 lamp draws 36 watts. \n\n ")]
    assert "[1] (source: lamps.md)\nThe F4 lamp draws 36 watts.\n\nQuestion:" in user_prompt(padded)


def test_same_chunks_give_the_same_prompt_whichever_retriever_found_them():
    assert user_prompt(FAISS_CHUNKS) == user_prompt(KB_CHUNKS)


def test_an_empty_retrieval_still_uses_the_context_template():
    # A rag arm that found nothing is told so, not silently turned into the base prompt.
    assert user_prompt([]) == CONTEXT_TEMPLATE.format(passages="", question=QUESTION)
    assert user_prompt([]) != user_prompt(None)


@pytest.mark.parametrize("arm", ARMS)
def test_arm_predicates_agree_with_the_config_lists(arm):
    assert uses_retrieval(arm) == (arm in RAG_ARMS)
    assert uses_adapter(arm) == (arm in FT_ARMS)


def test_the_four_arms_cover_each_combination_once():
    combinations = {(uses_retrieval(arm), uses_adapter(arm)) for arm in ARMS}
    assert combinations == {(False, False), (True, False), (False, True), (True, True)}
    assert len(ARMS) == 4


def test_generation_params_come_from_the_model_config_and_the_seed():
    model = ModelConfig(name="m", model="tiny", generation=GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.9, batch_size=4))
    params = generation_params(model, seed=13)
    assert params == GenerationParams(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=13)
    defaults = generation_params(ModelConfig(name="m", model="tiny"), seed=0)
    assert (defaults.max_new_tokens, defaults.temperature, defaults.top_p, defaults.seed) == (128, 0.0, 1.0, 0)


def test_build_request_sends_system_then_user_with_the_params():
    item = EvalItem(question_id="q1", question=QUESTION, answer="36 watts.", doc_ids=("lamps.md",))
    params = GenerationParams(max_new_tokens=32, seed=5)
    request = build_request(item, FAISS_CHUNKS, params)
    assert isinstance(request, ChatRequest)
    assert [role for role, _ in request.messages] == ["system", "user"]
    assert request.messages[0][1] == SYSTEM_PROMPT
    assert request.messages[1][1] == user_prompt(FAISS_CHUNKS)
    assert request.params == params
    assert build_request(item, None, params).messages[1][1] == f"Question: {QUESTION}"

"""The arms' prompts: one context template for every retrieval path, the question alone for
arms without retrieval, and sampling settings taken from the model's config."""

from __future__ import annotations

import hashlib
import json

import pytest

from localnova.config import ARMS, FT_ARMS, RAG_ARMS, GenerationConfig, ModelConfig, validate_config
from localnova.errors import UserError
from localnova.evaluate.arms import (
    CONTEXT_TEMPLATE,
    SYSTEM_PROMPT,
    ArmInputs,
    arm_top_k,
    build_messages,
    build_request,
    generation_params,
)
from localnova.store import generation_key
from localnova.study_parts import BUILTIN_ARMS
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
def test_arm_parts_agree_with_the_config_lists(arm):
    parts = BUILTIN_ARMS[arm]
    assert (parts.retrieval is not None) == (arm in RAG_ARMS)
    assert (parts.adapter == "sft") == (arm in FT_ARMS)


def test_the_four_arms_cover_each_combination_once():
    combinations = {(BUILTIN_ARMS[arm].retrieval is not None, BUILTIN_ARMS[arm].adapter != "none") for arm in ARMS}
    assert combinations == {(False, False), (True, False), (False, True), (True, True)}
    assert len(ARMS) == 4


# The default arms' requests as main built them before arms were data (0979510): the sha256 of
# each request's JSON, and its store key under a fixed backend identity. Equal here means a
# finished study's store answers the same requests again: it reruns with no model call.
PINNED_REQUESTS = {
    "base": ("52c090b90dd2174fb1fecfee1fe32a67", "bee1a8849671aca1694835347327f59a"),
    "rag": ("1fb2ca98675ddd7b3aa5687c39de09cc", "5dfd309c2048fae0a057f26c978c2a02"),
}


def pinned_inputs():
    item = EvalItem("q01", "How long is the Loam Hub warranty?", "Two years.", ("22-warranty.md",))
    chunks = [
        RetrievedChunk("c1", "22-warranty.md", 0.8, "The Loam Hub carries a two-year warranty.\n"),
        RetrievedChunk("c2", "10-pods.md", 0.5, "  Seed pods keep 18 months. "),
    ]
    return item, chunks, generation_params(ModelConfig(name="m", model="smollm2-135m-instruct"), 0)


@pytest.mark.parametrize("arm", ["base", "rag", "ft", "ft_rag", "raft"])
def test_the_built_in_arms_send_the_bytes_they_sent_before_arms_were_data(arm):
    item, chunks, params = pinned_inputs()
    config = validate_config({"name": "s", "corpus": {"path": "c"}, "eval": {"path": "e"}, "models": [{"name": "m", "model": "m"}]})
    parts = config.arm_config(arm)
    contexts = [chunks if parts.retrieval is not None else None]
    request = ArmInputs(parts.prompt, contexts).requests([item], params)[0]
    digest = hashlib.sha256(json.dumps(request.to_dict(), sort_keys=True).encode()).hexdigest()[:32]
    expected = PINNED_REQUESTS["rag" if parts.retrieval is not None else "base"]  # ft arms send what base and rag send
    assert (digest, generation_key({"backend": "transformers", "model": "x"}, request)) == expected


def test_an_arm_defined_in_the_config_has_its_own_prompt_top_k_and_chunking():
    config = validate_config(
        {
            "name": "s",
            "corpus": {"path": "c"},
            "eval": {"path": "e"},
            "models": [{"name": "m", "model": "m"}],
            "arms": ["base", "rag", "terse_rag5"],
            "arm_definitions": [
                {
                    "name": "terse_rag5",
                    "prompt": {"system": "Answer in five words.", "context": "{passages}\n\nQ: {question}"},
                    "retrieval": {"top_k": 5, "chunking": {"chunk_tokens": 64, "overlap_tokens": 8}},
                }
            ],
        }
    )
    parts = config.arm_config("terse_rag5")
    assert config.uses_retrieval("terse_rag5") and not config.uses_adapter("terse_rag5")
    assert arm_top_k(config, parts) == 5 and arm_top_k(config, config.arm_config("rag")) == 3
    item, chunks, params = pinned_inputs()
    messages = ArmInputs(parts.prompt, [chunks]).requests([item], params)[0].message_dicts()
    assert messages[0]["content"] == "Answer in five words."
    assert messages[1]["content"].startswith("[1] (source: 22-warranty.md)\nThe Loam Hub") and messages[1]["content"].endswith(
        "Q: " + item.question
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"arms": ["base", "nope"]}, r"arms: 'nope' is neither a built-in arm"),
        ({"arm_definitions": [{"name": "rag"}]}, r"'rag' is a built-in arm; give your variant another name"),
        ({"arm_definitions": [{"name": "x", "prompt": {"question": "Q: {query}"}}]}, r"prompt.question: unknown placeholder \{query\}"),
        ({"arm_definitions": [{"name": "x", "prompt": {"context": "Q: {question}"}}]}, r"prompt.context must place the \{passages\}"),
    ],
)
def test_arm_mistakes_are_one_line(change, error):
    data = {"name": "s", "corpus": {"path": "c"}, "eval": {"path": "e"}, "models": [{"name": "m", "model": "m"}], **change}
    with pytest.raises(UserError, match=error):
        validate_config(data)


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

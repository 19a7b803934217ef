"""The plain data types: what they serialise to. The store keys every generation by a hash of
ChatRequest.to_dict() and keeps GenerationResult.to_dict() as JSON, so a new field must leave
the keys and rows of existing studies as they were."""

from __future__ import annotations

import json

from localnova.store import Store, generation_key
from localnova.types import ChatRequest, GenerationParams, GenerationResult

IDENTITY = {"backend": "transformers", "model": "smollm2-135m-instruct", "weights": "abc", "adapter": "", "dtype": "float32"}
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]


def test_params_without_stop_serialise_and_hash_as_before_the_field_existed():
    params = GenerationParams(max_new_tokens=48, temperature=0.0, top_p=1.0, seed=0)
    assert params.to_dict() == {"max_new_tokens": 48, "temperature": 0.0, "top_p": 1.0, "seed": 0, "top_logprobs": 0}
    # Both keys were computed with the code before `stop` existed.
    assert generation_key(IDENTITY, ChatRequest.from_messages(MESSAGES, params)) == "807b8d977f9d728f328b556f375044b0"
    judge_request = ChatRequest.from_messages(
        [{"role": "user", "content": "Score it."}], GenerationParams(max_new_tokens=2, top_logprobs=20)
    )
    assert (
        generation_key({"backend": "vllm", "model": "m", "weights": "w", "adapter": ""}, judge_request)
        == "c2a7e6aee1b2e7a8afa7d44481d51027"
    )


def test_stop_strings_are_part_of_the_dict_and_the_key():
    without = GenerationParams(max_new_tokens=48)
    with_stop = GenerationParams(max_new_tokens=48, stop=("\n\n", "END"))
    assert with_stop.to_dict()["stop"] == ["\n\n", "END"]
    assert json.loads(json.dumps(with_stop.to_dict())) == with_stop.to_dict()
    assert generation_key(IDENTITY, ChatRequest.from_messages(MESSAGES, with_stop)) != generation_key(
        IDENTITY, ChatRequest.from_messages(MESSAGES, without)
    )


def test_stop_given_as_a_list_or_a_string_becomes_a_tuple():
    from_json = GenerationParams(**{"max_new_tokens": 8, "stop": ["a", "b"]})
    assert from_json.stop == ("a", "b") and hash(from_json) == hash(GenerationParams(max_new_tokens=8, stop=("a", "b")))
    assert GenerationParams(stop="###").stop == ("###",)
    assert GenerationParams(**GenerationParams(stop=("x",)).to_dict()) == GenerationParams(stop=("x",))


OLD_ROW = {
    "text": "Paris",
    "input_tokens": 30,
    "output_tokens": 3,
    "latency_ms": 12.5,
    "latency_method": "batch_wall_clock",
    "batch_size": 4,
    "server_latency_ms": None,
    "finish_reason": "stop",
    "top_logprobs": [{"Paris": -0.1, "The": -2.5}],
}


def test_results_without_sampled_tokens_serialise_as_before():
    result = GenerationResult("Paris", 30, 3, 12.5, "batch_wall_clock", 4, None, "stop", [{"Paris": -0.1, "The": -2.5}])
    assert result.to_dict() == OLD_ROW
    assert GenerationResult.from_dict(OLD_ROW) == result
    assert result.tokens is None and result.token_logprobs is None


def test_results_with_sampled_tokens_round_trip():
    result = GenerationResult("The", 30, 1, 12.5, top_logprobs=[{"Paris": -0.1, "The": -2.5}], tokens=["The"], token_logprobs=[-2.5])
    row = json.loads(json.dumps(result.to_dict()))
    assert row["tokens"] == ["The"] and row["token_logprobs"] == [-2.5]
    assert GenerationResult.from_dict(row) == result


def test_a_store_written_before_the_new_fields_still_answers_from_its_cache(tmp_path):
    store = Store(tmp_path)
    try:
        request = ChatRequest.from_messages(MESSAGES, GenerationParams(max_new_tokens=48))
        key = generation_key(IDENTITY, request)
        store.connection.execute(
            "INSERT INTO generations(key, backend_json, request_json, result_json, created_by_run, created_at) VALUES (?,?,?,?,?,?)",
            (key, json.dumps(IDENTITY), json.dumps(request.to_dict()), json.dumps(OLD_ROW), "old-run", "2024-01-01T00:00:00+00:00"),
        )
        found = store.cached_results([key])
    finally:
        store.close()
    assert found[key].text == "Paris" and found[key].tokens is None

"""The transformers backend: its identity is known before the model loads (a cached rerun loads
nothing), and its refill decoding gives transformers' own greedy answers on the bundled model."""

import pytest

from localnova.backends import create_backend
from localnova.config import ModelConfig
from localnova.errors import UserError
from localnova.evaluate.judges.llm import SCORE_PREFILL
from localnova.types import ChatRequest, GenerationParams


def model_config(**changes) -> ModelConfig:
    return ModelConfig(name="m", backend="transformers", model="smollm2-135m-instruct", **changes)


def test_identity_without_loading_the_model(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    backend = create_backend(model_config(), adapter_path=str(adapter))
    assert not backend.loaded
    assert backend.identity["backend"] == "transformers"
    assert backend.identity["weights"] and backend.identity["adapter"]
    assert backend.identity["dtype"] == "float32"
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes(b"other weights")
    assert create_backend(model_config(), adapter_path=str(other)).identity["adapter"] != backend.identity["adapter"]
    backend.close()  # nothing loaded, nothing to release
    assert not backend.loaded


def test_the_device_kind_and_a_merged_adapter_are_in_the_identity(tmp_path, monkeypatch):
    from localnova.backends import transformers_backend
    from localnova.optional import Precision

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    on_cpu = create_backend(model_config(options={"dtype": "float32"}))
    merged = create_backend(model_config(), adapter_path=str(adapter))
    unmerged = create_backend(model_config(options={"merge_adapter": False}), adapter_path=str(adapter))
    # W + BA rounds otherwise than W, then BA: the same adapter merged or not is another model
    assert (merged.identity["adapter_merged"], unmerged.identity["adapter_merged"]) == ("yes", "no")
    assert on_cpu.identity["device"] == "cpu" and "adapter_merged" not in on_cpu.identity
    # fp32 on a GPU may round its matmuls as TF32: the same dtype on another kind of device
    monkeypatch.setattr(transformers_backend, "pick_precision", lambda *args: Precision("float32", False, False, "cuda:1"))
    on_gpu = create_backend(model_config(options={"dtype": "float32"}))
    assert on_gpu.identity["device"] == "cuda" and on_gpu.identity != on_cpu.identity


def test_a_missing_adapter_folder_and_a_bad_decoding_option_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        create_backend(model_config(), adapter_path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="options.decoding"):
        create_backend(model_config(options={"decoding": "beam"}))


def test_refill_decoding_takes_several_batches_per_call():
    generation = {"batch_size": 8}
    assert create_backend(model_config(generation=generation)).requests_per_call(8) == 32
    assert create_backend(model_config(generation=generation, options={"decoding": "generate"})).requests_per_call(8) == 8


@pytest.mark.slow
def test_refill_answers_and_logprobs_match_generate_one_at_a_time():
    questions = ["What is the capital of France?", "Name a colour.", "Explain in one sentence why the sky is blue.", "2+2?", "Hi"]
    answers = [ChatRequest.from_messages([{"role": "user", "content": q}], GenerationParams(max_new_tokens=24)) for q in questions]
    grading = [
        ChatRequest.from_messages(
            [{"role": "user", "content": f"Grade this answer from 0 to 10: {q}"}, {"role": "assistant", "content": SCORE_PREFILL}],
            GenerationParams(max_new_tokens=2, top_logprobs=5),
        )
        for q in questions
    ]
    refill = create_backend(model_config(generation={"batch_size": 2}))
    reference = create_backend(model_config(options={"decoding": "generate"}))
    try:
        batched = refill.generate(answers + grading)
        alone = [reference.generate([request])[0] for request in answers + grading]
    finally:
        refill.close()
        reference.close()
    assert refill.loaded is False  # closed
    for got, expected in zip(batched, alone, strict=True):
        assert (got.text, got.output_tokens, got.finish_reason) == (expected.text, expected.output_tokens, expected.finish_reason)
        assert got.input_tokens == expected.input_tokens
    for got, expected in zip(batched[len(answers) :], alone[len(answers) :], strict=True):
        assert got.tokens == expected.tokens
        for got_step, expected_step in zip(got.top_logprobs, expected.top_logprobs, strict=True):
            assert set(got_step) == set(expected_step)
            assert all(got_step[token] == pytest.approx(expected_step[token], abs=1e-4) for token in expected_step)


@pytest.mark.slow
@pytest.mark.parametrize("decoding", ["refill", "generate"])
def test_a_forced_first_token_reads_what_a_prefilled_one_would(decoding):
    """The logprob judge's single request (the score position, then "1" forced) gives the same
    two distributions as its two requests: the plain one and the one prefilled with "1"."""
    questions = ["What is the capital of France?", "Name a colour.", "2+2?"]

    def grading(prefill: str, params: GenerationParams) -> list[ChatRequest]:
        return [
            ChatRequest.from_messages(
                [{"role": "user", "content": f"Grade from 0 to 10: {q}"}, {"role": "assistant", "content": prefill}], params
            )
            for q in questions
        ]

    backend = create_backend(model_config(generation={"batch_size": 2}, options={"decoding": decoding}))
    try:
        judge_prefix = grading(SCORE_PREFILL, GenerationParams())[0].message_dicts()
        assert backend.can_force_first_token(judge_prefix, "1") and not backend.can_force_first_token(judge_prefix, "10 points")
        forced = backend.generate(grading(SCORE_PREFILL, GenerationParams(max_new_tokens=2, top_logprobs=5, first_token="1")))
        plain = backend.generate(grading(SCORE_PREFILL, GenerationParams(max_new_tokens=1, top_logprobs=5)))
        after_one = backend.generate(grading(SCORE_PREFILL + "1", GenerationParams(max_new_tokens=1, top_logprobs=5)))
        with pytest.raises(UserError, match="not one"):
            backend.generate(grading(SCORE_PREFILL, GenerationParams(max_new_tokens=2, top_logprobs=5, first_token="10 points")))
    finally:
        backend.close()
    for got, first, second in zip(forced, plain, after_one, strict=True):
        assert got.tokens[0] == "1" and len(got.top_logprobs) == 2
        for got_step, expected_step in [(got.top_logprobs[0], first.top_logprobs[0]), (got.top_logprobs[1], second.top_logprobs[0])]:
            assert set(got_step) == set(expected_step)
            assert all(got_step[token] == pytest.approx(expected_step[token], abs=1e-4) for token in expected_step)

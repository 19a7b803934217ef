"""The simulated backend that serves the Bedrock dry run and fast pipeline tests: the same
request always gets the same reply, judge prompts get a parseable score that ranks the ground
truth above an empty answer, and token counts follow the shared cost estimate."""

from __future__ import annotations

from localnova.backends.simulated import SimulatedBackend
from localnova.config import ModelConfig
from localnova.costs import count_tokens_estimate
from localnova.evaluate.arms import build_messages
from localnova.evaluate.judges import JudgeInput, judge_messages, parse_judge_reply
from localnova.types import ChatRequest, GenerationParams, RetrievedChunk

PASSAGES = [
    RetrievedChunk("c1", "lamps.md", 0.9, "The F4 lamp draws 36 watts at full brightness. It ships with a warm white bulb."),
    RetrievedChunk("c2", "guides/setup.md", 0.5, "Plug the hub in before pairing any lamp. Pairing takes about a minute."),
]
TRUTH = "The F4 lamp draws 36 watts at full brightness."


def simulated(model: str = "sim-a", **options) -> SimulatedBackend:
    return SimulatedBackend(ModelConfig(name=model, backend="simulated", model=model, options=options))


def answer_request(question: str, max_new_tokens: int = 128, top_logprobs: int = 0) -> ChatRequest:
    params = GenerationParams(max_new_tokens=max_new_tokens, top_logprobs=top_logprobs)
    return ChatRequest.from_messages(build_messages(question, PASSAGES), params)


def judge_request(text: str) -> ChatRequest:
    item = JudgeInput("sim-a", "rag", "q1", "answer", "How many watts does the F4 lamp draw?", TRUTH, text)
    return ChatRequest.from_messages(judge_messages(item), GenerationParams(max_new_tokens=64))


QUESTIONS = [f"How many watts does lamp number {n} draw when it is set to level {n}?" for n in range(20)]


def test_the_same_request_gets_the_same_reply_from_two_instances():
    requests = [answer_request(question) for question in QUESTIONS]
    first, second = simulated().generate(requests), simulated().generate(requests)
    assert [r.to_dict() for r in first] == [r.to_dict() for r in second]


def test_a_rag_answer_is_taken_from_the_passages_not_the_question():
    [result] = simulated().generate([answer_request("How many watts does the F4 lamp draw?")])
    assert "36 watts" in result.text
    assert "Question:" not in result.text


def test_different_models_and_adapters_give_different_texts():
    requests = [answer_request(question) for question in QUESTIONS]
    texts_a = [r.text for r in simulated("sim-a").generate(requests)]
    texts_b = [r.text for r in simulated("sim-b").generate(requests)]
    adapted = SimulatedBackend(ModelConfig(name="sim-a", backend="simulated", model="sim-a"), adapter_path="adapters/sim-a")
    texts_adapted = [r.text for r in adapted.generate(requests)]
    assert texts_a != texts_b
    assert texts_a != texts_adapted
    assert simulated("sim-a").identity != simulated("sim-b").identity != adapted.identity


def test_a_judge_prompt_gets_a_parseable_score_that_ranks_the_truth_above_an_empty_answer():
    texts = [TRUTH, "", "Bananas are yellow.", "It draws 36 watts."]
    replies = simulated().generate([judge_request(text) for text in texts])
    parsed = [parse_judge_reply(reply.text) for reply in replies]
    assert all(reply is not None for reply in parsed)
    truth, empty, unrelated, partial = (score for score, _ in parsed)
    assert truth == 10
    assert empty <= 3 and unrelated <= 3  # the rubric's "incorrect" band
    assert empty < partial < truth


def test_token_counts_follow_the_shared_estimate():
    requests = [answer_request(question) for question in QUESTIONS[:5]] + [judge_request(TRUTH)]
    for request, result in zip(requests, simulated().generate(requests), strict=True):
        # every message costs its estimated tokens plus 4 for the chat markup around it
        assert result.input_tokens == sum(count_tokens_estimate(content) + 4 for _, content in request.messages)
        assert result.output_tokens == count_tokens_estimate(result.text)


def test_an_empty_message_counts_as_the_shared_estimate_counts_it():
    request = ChatRequest((("system", ""), ("user", "Question: How many watts does the F4 lamp draw?")), GenerationParams())
    [result] = simulated().generate([request])
    assert result.input_tokens == sum(count_tokens_estimate(content) + 4 for _, content in request.messages)


def test_latency_grows_with_output_tokens():
    question = "How many watts does the F4 lamp draw?"
    results = simulated().generate([answer_request(question, max_new_tokens=n) for n in (2, 5, 40)])
    assert [r.input_tokens for r in results] == [results[0].input_tokens] * 3
    output_tokens = [r.output_tokens for r in results]
    assert output_tokens == sorted(output_tokens) and output_tokens[0] < output_tokens[-1]
    latencies = [r.latency_ms for r in results]
    assert latencies == sorted(latencies) and latencies[0] < latencies[-1]
    # A slower simulated model takes longer for the very same reply.
    [fast] = simulated().generate([answer_request(question)])
    [slow] = simulated(latency_ms_per_token=80).generate([answer_request(question)])
    assert slow.text == fast.text and slow.latency_ms > fast.latency_ms


def test_top_logprobs_only_when_asked():
    question = "How many watts does the F4 lamp draw?"
    plain, with_logprobs = simulated().generate([answer_request(question), answer_request(question, top_logprobs=5)])
    assert plain.top_logprobs is None
    assert with_logprobs.top_logprobs and all(isinstance(step, dict) and step for step in with_logprobs.top_logprobs)

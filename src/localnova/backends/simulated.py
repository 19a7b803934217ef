"""A deterministic simulated backend: no model, no network.

It serves the Bedrock dry run (so the whole study and its report run offline, marked as
simulated) and fast pipeline tests. Its answers are built from the prompt itself, so they
are stable across runs and machines, and its token counts follow the usual ~4 characters per
token of English text, so cost estimates from a dry run are of the right size.
It is never used to produce a result that a report presents as real.
"""

from __future__ import annotations

import json
import random
import re

from localnova.backends.base import Backend
from localnova.config import ModelConfig
from localnova.costs import CHARS_PER_TOKEN, count_tokens_estimate
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, GenerationResult, stable_hash


class SimulatedBackend(Backend):
    supports_logprobs = True

    def __init__(self, model: ModelConfig, adapter_path: str | None = None):
        self.model_name = model.model
        self.adapter_path = adapter_path
        self.identity = {"backend": "simulated", "model": model.model, "adapter": str(adapter_path or "")}
        # options.latency_ms_per_token lets a dry run mimic a model's speed in its report
        self.ms_per_output_token = float(model.options.get("latency_ms_per_token", 20.0))
        self.calls = 0

    def _rng(self, request: ChatRequest) -> random.Random:
        return random.Random(stable_hash({"model": self.identity, "request": request.to_dict()}))

    def _reply(self, request: ChatRequest, rng: random.Random) -> str:
        prompt = request.messages[-1][1]
        if "JSON object" in prompt and '"score"' in prompt:
            # A judge prompt: score by word overlap of the fenced answer with the truth.
            truth = _last_between(prompt, "<ground_truth>", "</ground_truth>")
            answer = _last_between(prompt, "<answer>", "</answer>")
            truth_words, answer_words = _words(truth), _words(answer)
            overlap = len(truth_words & answer_words) / max(1, len(truth_words))
            return json.dumps({"score": int(round(10 * overlap)), "reason": "simulated: word overlap with the ground truth"})
        # An answer: echo the sentence before the question (the passages, in a rag prompt) that
        # shares most words with it; without passages, the question itself.
        context, _, question = prompt.rpartition("Question:")
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", context) if len(s.strip()) > 20]
        question_words = _words(question)
        best = max(sentences, key=lambda s: len(_words(s) & question_words), default=question.strip())
        if rng.random() < 0.3 and best:
            best = "I am not certain, but " + best[0].lower() + best[1:]
        return best[: request.params.max_new_tokens * int(CHARS_PER_TOKEN)]

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            self.calls += 1
            rng = self._rng(request)
            text = self._reply(request, rng)
            input_tokens = sum(count_tokens_estimate(content) + 4 for _, content in request.messages)
            output_tokens = count_tokens_estimate(text)
            logprobs = None
            if request.params.top_logprobs:
                logprobs = [{piece: 0.0} for piece in re.findall(r"\d+|\S", text)]
            latency_ms = 150.0 + self.ms_per_output_token * output_tokens + 0.2 * input_tokens
            results.append(
                GenerationResult(
                    text=text,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    latency_ms=round(latency_ms, 1),
                    latency_method=LATENCY_PER_REQUEST + " (simulated)",
                    server_latency_ms=round(latency_ms * 0.9, 1),
                    finish_reason="stop",
                    top_logprobs=logprobs,
                )
            )
        return results


def _last_between(text: str, start: str, end: str) -> str:
    """The text inside the last `start`...`end` pair: the judge template names its tags in its
    instructions before the fenced fields."""
    head, _, tail = text.rpartition(start)
    return tail.partition(end)[0] if head or tail else ""


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if len(word) > 2}

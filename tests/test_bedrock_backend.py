"""The Converse backend, through botocore's Stubber and a throttling client wrapper."""

from __future__ import annotations

import random
import threading

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402
from botocore.stub import ANY, Stubber  # noqa: E402

from localnova.backends.bedrock_backend import BedrockBackend  # noqa: E402
from localnova.config import ModelConfig  # noqa: E402
from localnova.errors import UserError  # noqa: E402
from localnova.types import ChatRequest, GenerationParams  # noqa: E402

MODEL = ModelConfig(
    name="nova-micro", backend="bedrock", model="us.amazon.nova-micro-v1:0", options={"region": "us-east-1", "max_concurrency": 4}
)


def _client():
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def _response(text: str, input_tokens: int = 12, output_tokens: int = 5, latency_ms: int = 321) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": latency_ms},
    }


def test_converse_shape_tokens_and_both_latencies():
    client = _client()
    request = ChatRequest.from_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Watts of the F4?"}],
        GenerationParams(max_new_tokens=64, temperature=0.0, top_p=0.9),
    )
    with Stubber(client) as stubber:
        stubber.add_response(
            "converse",
            _response("36 watts."),
            {
                "modelId": "us.amazon.nova-micro-v1:0",
                "system": [{"text": "Be brief."}],
                "messages": [{"role": "user", "content": [{"text": "Watts of the F4?"}]}],
                "inferenceConfig": {"maxTokens": 64, "temperature": 0.0, "topP": 0.9},
            },
        )
        backend = BedrockBackend(MODEL, client=client)
        [result] = backend.generate([request])
    assert result.text == "36 watts."
    assert (result.input_tokens, result.output_tokens) == (12, 5)
    assert result.server_latency_ms == 321.0
    assert result.latency_ms >= 0 and result.latency_method == "per_request_wall_clock"
    assert backend.identity == {"backend": "bedrock", "model": "us.amazon.nova-micro-v1:0", "region": "us-east-1"}


def test_ft_arm_answers_through_the_hosted_arn():
    client = _client()
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/abc123def456"
    with Stubber(client) as stubber:
        stubber.add_response("converse", _response("ok"), {"modelId": arn, "messages": ANY, "inferenceConfig": ANY})
        backend = BedrockBackend(MODEL, adapter_path=arn, client=client)
        assert backend.generate([ChatRequest.from_messages([{"role": "user", "content": "hi"}], GenerationParams())])[0].text == "ok"
    assert backend.identity["model"] == arn


class ThrottlingClient:
    """Answers like Bedrock but throws ThrottlingException on about 30% of calls."""

    def __init__(self, rate: float = 0.3, seed: int = 7):
        self.rng = random.Random(seed)
        self.rate = rate
        self.lock = threading.Lock()
        self.throttled = 0
        self.answered = 0

    def converse(self, **body):
        with self.lock:
            throttle = self.rng.random() < self.rate
            if throttle:
                self.throttled += 1
            else:
                self.answered += 1
        if throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Too many requests"}}, "Converse")
        question = body["messages"][-1]["content"][0]["text"]
        return _response(f"answer to {question}")


def test_thirty_percent_throttling_loses_no_answer():
    client = ThrottlingClient()
    backend = BedrockBackend(MODEL, client=client, sleep=lambda seconds: None)
    requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(200)]
    results = backend.generate(requests)
    assert [r.text for r in results] == [f"answer to q{i}" for i in range(200)]
    assert client.throttled > 30  # the wrapper really throttled
    assert backend.throttled_retries == client.throttled


def test_access_denied_is_one_user_error():
    client = _client()
    with Stubber(client) as stubber:
        stubber.add_client_error("converse", "AccessDeniedException", "You don't have access to the model")
        backend = BedrockBackend(MODEL, client=client)
        with pytest.raises(UserError, match="AccessDeniedException"):
            backend.generate([ChatRequest.from_messages([{"role": "user", "content": "hi"}], GenerationParams())])

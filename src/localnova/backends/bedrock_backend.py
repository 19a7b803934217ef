"""The Bedrock backend: the Converse API, with bounded concurrency and patient retries.

`model.model` is a foundation model id, an inference profile id (us.amazon.nova-micro-v1:0)
or the ARN of a custom model deployment or provisioned model; for the `ft` arms the pipeline
passes the hosted ARN as `adapter_path`, and it becomes the modelId. Token counts come from the
response's `usage`, the server's own latency from `metrics.latencyMs`, beside our wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from localnova.backends.base import Backend
from localnova.bedrock.aws import BOTOCORE_MAX_ATTEMPTS, error_code, is_retryable, make_client, require_credentials
from localnova.config import BedrockConfig, ModelConfig
from localnova.errors import UserError
from localnova.retry import RetryPolicy, retry_call
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, GenerationResult

log = logging.getLogger(__name__)

# A Bedrock model outside a study with a bedrock section gets that section's defaults; in a
# study, bedrock/study.py fills options.region and options.max_concurrency from it.
DEFAULT_REGION = BedrockConfig().region
DEFAULT_MAX_CONCURRENCY = BedrockConfig().max_concurrency
DEFAULT_MAX_RETRIES = 8  # our own tries on throttling, after botocore's adaptive retries gave up


def converse_messages(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) in the Converse shape; system messages become the system prompt."""
    system_blocks = [{"text": content} for role, content in request.messages if role == "system"]
    messages = [{"role": role, "content": [{"text": content}]} for role, content in request.messages if role != "system"]
    return system_blocks, messages


def converse_request(model_id: str, request: ChatRequest) -> dict[str, Any]:
    system_blocks, messages = converse_messages(request)
    params = request.params
    inference_config: dict[str, Any] = {"maxTokens": params.max_new_tokens, "temperature": float(params.temperature)}
    # Some models (Anthropic's) refuse temperature and topP together unless topP is left at 1.
    if params.top_p < 1.0:
        inference_config["topP"] = float(params.top_p)
    body: dict[str, Any] = {"modelId": model_id, "messages": messages, "inferenceConfig": inference_config}
    if system_blocks:
        body["system"] = system_blocks
    return body


def result_from_response(response: dict[str, Any], wall_ms: float) -> GenerationResult:
    content = response.get("output", {}).get("message", {}).get("content", [])
    text = "".join(block.get("text", "") for block in content)
    usage = response.get("usage", {})
    server_ms = response.get("metrics", {}).get("latencyMs")
    return GenerationResult(
        text=text,
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
        latency_ms=round(wall_ms, 1),
        latency_method=LATENCY_PER_REQUEST,
        batch_size=1,
        server_latency_ms=float(server_ms) if server_ms is not None else None,
        finish_reason=response.get("stopReason"),
    )


class BedrockBackend(Backend):
    supports_logprobs = False

    def __init__(
        self,
        model: ModelConfig,
        adapter_path: str | None = None,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        options = model.options
        self.region = str(options.get("region", DEFAULT_REGION))
        # For ft arms the hosted custom model (deployment or provisioned ARN) answers.
        self.model_id = str(adapter_path) if adapter_path else model.model
        self.max_concurrency = int(options.get("max_concurrency", DEFAULT_MAX_CONCURRENCY))
        self.max_retries = int(options.get("max_retries", DEFAULT_MAX_RETRIES))
        self.base_delay_s = float(options.get("retry_base_delay_s", 1.0))
        self.retry_policy = RetryPolicy(max_attempts=self.max_retries + 1, base_delay_s=self.base_delay_s)
        self.identity = {"backend": "bedrock", "model": self.model_id, "region": self.region}
        self._sleep = sleep
        self._stats_lock = threading.Lock()
        self.throttled_retries = 0
        if client is None:
            require_credentials(self.region)
            client = make_client("bedrock-runtime", self.region, int(options.get("botocore_max_attempts", BOTOCORE_MAX_ATTEMPTS)))
        self.client = client

    def _converse_one(self, request: ChatRequest) -> GenerationResult:
        if request.params.top_logprobs:
            raise UserError(f"{self.model_id}: Bedrock's Converse API returns no log probabilities; use scoring: parsed")
        body = converse_request(self.model_id, request)

        def converse() -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            response = self.client.converse(**body)
            return response, (time.perf_counter() - started) * 1000.0  # the successful try only

        try:
            response, wall_ms = retry_call(converse, is_retryable, self.retry_policy, sleep=self._sleep, on_retry=self._count_retry)
        except Exception as error:
            code = error_code(error)
            if code in ("AccessDeniedException", "ValidationException", "ResourceNotFoundException"):
                raise UserError(f"Bedrock {code} for model {self.model_id} in {self.region}: {_message(error)}") from None
            raise
        return result_from_response(response, wall_ms)

    def _count_retry(self, attempt: int, error: Exception, delay_s: float) -> None:
        with self._stats_lock:
            self.throttled_retries += 1

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        workers = max(1, min(self.max_concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="converse") as pool:
            # map keeps the order of the requests; the first error is raised here.
            return list(pool.map(self._converse_one, requests))


def _message(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", error))

"""The Bedrock backend: the Converse API, with bounded concurrency and patient retries.

`model.model` is a foundation model id, an inference profile id (us.amazon.nova-micro-v1:0)
or the ARN of a custom model deployment or provisioned model. For the `ft` arms the pipeline
passes the custom model's ARN as `adapter_path`: it names the model in the cache key, and the
study registers (`host_on_first_call`) how to host it, which happens on the first call that
is not answered from the store, so a resumed run whose ft answers are all stored hosts nothing.

Latency: botocore makes one attempt per call here (no retry, no rate limiter inside it); this
module retries throttling and model errors itself, and times only the attempt that answered.
Each result carries that wall time and the server's own `metrics.latencyMs`.

Hosting happens in the calling thread, before any request of the batch is sent, so Ctrl-C or
SIGTERM during its wait reaches the study, which deletes it.

Spending: each call reserves its largest cost (its prompt, estimated, and max_tokens of output)
with the active SpendGuard (budget.py) before it is sent, which stops it if the budget would
be crossed; the answer's `usage` then settles it. A call whose answer never comes (Ctrl-C, a
lost connection) stays counted. Results are handed to the store one by one as each call
answers (`generate_each`), so every answer paid for is committed at once; on Ctrl-C the calls
already sent are waited for and committed, those not sent are cancelled.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from localnova.aws.clients import error_code, error_message, is_retryable, make_client, pause, require_credentials
from localnova.backends.base import Backend
from localnova.budget import active_spend_guard
from localnova.config import BedrockConfig, ModelConfig
from localnova.costs import count_tokens_estimate
from localnova.errors import UserError
from localnova.retry import RetryPolicy, retry_call
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, GenerationResult

log = logging.getLogger(__name__)

# A Bedrock model outside a study with a bedrock section gets that section's defaults; in a
# study, bedrock/study.py fills options.region and options.max_concurrency from it.
DEFAULT_REGION = BedrockConfig().region
DEFAULT_MAX_CONCURRENCY = BedrockConfig().max_concurrency
DEFAULT_MAX_RETRIES = 8  # our own retries on throttling and model errors (botocore makes one attempt)
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "jp.", "au.", "ca.", "us-gov.", "global.")

# custom model ARN -> a function that hosts it and returns the ARN to call (the study's)
_HOSTING: dict[str, Callable[[], str]] = {}


def host_on_first_call(custom_model_arn: str, host: Callable[[], str] | None) -> None:
    """Register (or with None, forget) how a custom model gets hosted when first called."""
    if host is None:
        _HOSTING.pop(custom_model_arn, None)
    else:
        _HOSTING[custom_model_arn] = host


def route_of(model_id: str, hosting: str = "on_demand") -> str:
    """How a model id is invoked: the report names it beside each arm's latency."""
    if model_id.startswith(PROFILE_PREFIXES) or ":inference-profile/" in model_id:
        return "cross-region inference profile"
    if ":custom-model-deployment/" in model_id or (":custom-model/" in model_id and hosting == "on_demand"):
        return "custom model deployment (on-demand, one region)"
    if ":provisioned-model/" in model_id or ":custom-model/" in model_id:
        return "provisioned throughput"
    return "foundation model (on-demand, one region)"


def converse_messages(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) in the Converse shape; system messages become the system prompt."""
    system_blocks = [{"text": content} for role, content in request.messages if role == "system"]
    messages = [{"role": role, "content": [{"text": content}]} for role, content in request.messages if role != "system"]
    return system_blocks, messages


# Converse's requestMetadata, as botocore's model of it says (botocore 1.38 has it, the oldest
# the bedrock extra allows): at most 16 pairs, keys of 1-256 and values of 0-256 characters
# among letters, digits, whitespace and :_@$#=/+,-. ; any other character is sent as "_".
REQUEST_METADATA_MAX_PAIRS = 16
REQUEST_METADATA_MAX_CHARS = 256
_METADATA_REFUSED = re.compile(r"[^a-zA-Z0-9 \t\n\x0b\f\r:_@$#=/+,\-.]")


def request_metadata(tags: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A request's log tags as Converse's requestMetadata accepts them."""
    return {
        (_METADATA_REFUSED.sub("_", key)[:REQUEST_METADATA_MAX_CHARS] or "_"): _METADATA_REFUSED.sub("_", value)[
            :REQUEST_METADATA_MAX_CHARS
        ]
        for key, value in tags[:REQUEST_METADATA_MAX_PAIRS]
    }


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
    if request.log_tags:
        # why the call is made (the latency probe's calls say so), for the account's invocation
        # logs; the service bills and answers the same with or without it
        body["requestMetadata"] = request_metadata(request.log_tags)
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
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
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
        self._sleep = sleep or pause
        self._clock = clock
        self._stats_lock = threading.Lock()
        self._invoke_id: str | None = None if self.model_id in _HOSTING else self.model_id
        self.throttled_retries = 0
        if client is None:
            require_credentials(self.region)
            client = make_client("bedrock-runtime", self.region)
        self.client = client

    def invoke_id(self) -> str:
        """The modelId to call: the model itself, or its hosting, made on the first call."""
        with self._stats_lock:
            if self._invoke_id is None:
                self._invoke_id = _HOSTING[self.model_id]()
            return self._invoke_id

    def _converse_one(self, request: ChatRequest, invoke_id: str) -> GenerationResult:
        if request.params.top_logprobs:
            raise UserError(f"{self.model_id}: Bedrock's Converse API returns no log probabilities; use scoring: parsed")
        guard = active_spend_guard()
        reservation = None
        if guard is not None:
            prompt_tokens = sum(count_tokens_estimate(content) for _, content in request.messages)
            largest = guard.token_cost(self.model_id, prompt_tokens, request.params.max_new_tokens)
            reservation = guard.reserve(f"a call to {self.model_id}", largest)
        body = converse_request(invoke_id, request)

        def converse() -> tuple[dict[str, Any], float]:
            started = self._clock()
            response = self.client.converse(**body)
            return response, (self._clock() - started) * 1000.0  # the attempt that answered, no waits

        try:
            response, wall_ms = retry_call(converse, is_retryable, self.retry_policy, sleep=self._sleep, on_retry=self._count_retry)
        except BaseException as error:
            code = error_code(error)
            if guard is not None and reservation is not None:
                if code:
                    guard.release(reservation)  # AWS answered with a refusal: nothing billed
                else:
                    guard.lost(reservation, f"a call to {self.model_id}")  # no answer: it may have been billed
            if code in ("AccessDeniedException", "ValidationException", "ResourceNotFoundException"):
                raise UserError(f"Bedrock {code} for model {self.model_id} in {self.region}: {error_message(error)}") from None
            raise
        result = result_from_response(response, wall_ms)
        if guard is not None and reservation is not None:
            guard.settle(reservation, guard.token_cost(self.model_id, result.input_tokens, result.output_tokens))
        return result

    def _count_retry(self, attempt: int, error: Exception, delay_s: float) -> None:
        with self._stats_lock:
            self.throttled_retries += 1

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        answered = dict(self.generate_each(requests))
        return [answered[index] for index in range(len(requests))]

    def generate_each(self, requests: list[ChatRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Each request's result with its index, as soon as its call answers, so the store
        commits it at once. The first failure is raised once every call sent has ended (the
        answers before it are yielded first); on Ctrl-C the calls already sent are waited
        for and yielded, those not started are cancelled, then the interrupt goes on."""
        if not requests:
            return
        invoke_id = self.invoke_id()  # hosting, if any, happens here, in the caller's thread
        workers = max(1, min(self.max_concurrency, len(requests)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="converse")
        futures: dict[Future, int] = {pool.submit(self._converse_one, request, invoke_id): index for index, request in enumerate(requests)}
        pending = set(futures)
        first_error: BaseException | None = None
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    if future.cancelled():
                        continue  # never sent
                    error = future.exception()
                    if error is None:
                        yield futures[future], future.result()
                    elif first_error is None:
                        first_error = error
                        for waiting in pending:
                            waiting.cancel()  # not sent yet: never sent
        except KeyboardInterrupt:
            for waiting in pending:
                waiting.cancel()
            for future in [f for f in pending if not f.cancelled()]:
                if future.exception() is None:  # waits for a call already sent: it is paid
                    yield futures[future], future.result()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if first_error is not None:
            raise first_error

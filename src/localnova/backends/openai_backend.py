"""A backend for any OpenAI-compatible chat-completions server.

`vllm serve`, llama.cpp's server, TGI, Ollama, `localnova serve` and hosted endpoints all speak
POST {base_url}/chat/completions. This backend uses only the standard library (urllib and a
thread pool): one fewer dependency, and a request per thread is all a batch of chat calls
needs. The API key is read from the environment at start-up, sent in one header and never
logged, written or put into an error message or the identity; the identity holds the server's
address without any user, password or query string.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from localnova.backends.base import Backend
from localnova.errors import UserError
from localnova.retry import RetryPolicy, retry_call
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, GenerationResult

if TYPE_CHECKING:
    from localnova.config import ModelConfig

log = logging.getLogger(__name__)

# options this backend reads from ModelConfig.options, with their defaults
DEFAULT_OPTIONS: dict[str, Any] = {
    "base_url": None,  # e.g. http://127.0.0.1:8000/v1; default: $OPENAI_BASE_URL
    "api_key_env": "OPENAI_API_KEY",  # the NAME of the variable holding the key, never the key
    "max_concurrency": 8,  # requests in flight at once
    "max_attempts": 5,  # tries per request, the first included
    "backoff_initial_s": 0.5,  # first retry waits up to this long (full jitter, localnova.retry), doubling
    "backoff_max_s": 30.0,
    "timeout_s": 300.0,  # per HTTP attempt
}

# Rate limits and server-side failures are worth another try; other 4xx mean the request
# itself is wrong and would fail again.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def chat_completions_url(base_url: str) -> str:
    """The endpoint for a base URL. OpenAI's convention puts /v1 in the base URL; a bare
    host:port gets /v1 added, so both `http://h:8000` and `http://h:8000/v1` work."""
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"openai backend: base_url {base_url!r} is not an http(s) URL")
    path = parsed.path.rstrip("/")
    if not path:
        path = "/v1"
    return urllib.parse.urlunparse(parsed._replace(path=path + "/chat/completions"))


def server_address(base_url: str) -> str:
    """Where the server lives, as the identity holds it: scheme, host, port and path of its
    endpoint, written one way (`http://H:8000` and `http://h:8000/v1/` alike). What can carry a
    credential is left out: a user and password in the URL, and the query string (`?key=...`)."""
    parsed = urllib.parse.urlparse(chat_completions_url(base_url))
    host = (parsed.hostname or "").lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[parsed.scheme.lower()]
    port = f":{parsed.port}" if parsed.port not in (None, default_port) else ""
    return f"{parsed.scheme.lower()}://{host}{port}{parsed.path.removesuffix('/chat/completions')}"


def request_payload(model_name: str, request: ChatRequest) -> dict[str, Any]:
    """The JSON body for one chat request."""
    params = request.params
    payload: dict[str, Any] = {
        "model": model_name,
        "messages": request.message_dicts(),
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
    }
    if params.top_logprobs > 0:
        payload["logprobs"] = True
        payload["top_logprobs"] = params.top_logprobs
    if params.stop:
        payload["stop"] = list(params.stop)
    if request.messages[-1][0] == "assistant":
        # A trailing assistant message is a prefix to continue (the logprob judge's prefill);
        # vLLM's server and `localnova serve` take these two fields for that.
        payload["continue_final_message"] = True
        payload["add_generation_prompt"] = False
    return payload


def parse_top_logprobs(choice: dict[str, Any]) -> list[dict[str, float]] | None:
    """`choices[0].logprobs.content[i].top_logprobs` as one {token: logprob} dict per position."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None
    positions: list[dict[str, float]] = []
    for entry in logprobs["content"]:
        candidates = entry.get("top_logprobs") or []
        positions.append({candidate["token"]: float(candidate["logprob"]) for candidate in candidates})
    return positions


def parse_sampled_tokens(choice: dict[str, Any]) -> tuple[list[str] | None, list[float] | None]:
    """`choices[0].logprobs.content[i].token` and `.logprob`: what was generated at each
    position; (None, None) when the server does not say (a null token or logprob)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None, None
    entries = logprobs["content"]
    if not all(
        isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(entry.get("logprob"), (int, float))
        for entry in entries
    ):
        return None, None
    return [entry["token"] for entry in entries], [float(entry["logprob"]) for entry in entries]


class OpenAIBackend(Backend):
    """Chat completions over HTTP, `max_concurrency` at a time, with bounded retries."""

    supports_logprobs = True  # when the server returns them; None in the result otherwise

    def __init__(self, model: "ModelConfig", adapter_path: str | None = None) -> None:
        unknown = sorted(set(model.options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise UserError(
                f"model {model.name!r}: unknown option(s) for the openai backend: {', '.join(unknown)}; known: {', '.join(DEFAULT_OPTIONS)}"
            )
        if adapter_path is not None:
            # The server owns the weights: an adapter is served under its own model name.
            raise UserError(
                f"model {model.name!r}: the openai backend cannot load an adapter; serve it on the server "
                "(`localnova serve --adapter DIR` or `vllm serve --lora-modules NAME=DIR`) and set model to its served name"
            )
        options = {**DEFAULT_OPTIONS, **model.options}
        base_url = options["base_url"] or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise UserError(f"model {model.name!r}: the openai backend needs options.base_url or the OPENAI_BASE_URL environment variable")
        self.model_name = model.model
        self.base_url = str(base_url)
        self.url = chat_completions_url(self.base_url)
        # What messages and logs name: the URL without a query string that may hold a key.
        self.shown_url = server_address(self.base_url) + "/chat/completions"
        self._api_key = os.environ.get(str(options["api_key_env"])) or None  # local servers need none
        self.max_concurrency = int(options["max_concurrency"])
        self.max_attempts = int(options["max_attempts"])
        self.backoff_initial_s = float(options["backoff_initial_s"])
        self.backoff_max_s = float(options["backoff_max_s"])
        self.timeout_s = float(options["timeout_s"])
        if self.max_concurrency < 1 or self.max_attempts < 1:
            raise UserError(f"model {model.name!r}: max_concurrency and max_attempts must be at least 1")
        self.retry_policy = RetryPolicy(self.max_attempts, self.backoff_initial_s, self.backoff_max_s)
        # A served name says little on its own: two servers can serve "llama3" as different
        # weights, quantizations or chat templates. So the server's address is part of what
        # answered (a server moved to a new address answers again, which costs calls, never a
        # stale answer); credentials never are. The server's own system_fingerprint is known
        # only after a call, so each result records it.
        self.identity = {"backend": "openai", "model": self.model_name, "server": server_address(self.base_url)}
        if model.revision:
            self.identity["revision"] = model.revision
        self.retry_count = 0  # retries made over this backend's life, for reports and tests
        self._retry_lock = threading.Lock()
        self._missing_usage_warned = False

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(url={self.shown_url!r}, model={self.model_name!r})"

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests)), thread_name_prefix="openai") as pool:
            return list(pool.map(self._complete, requests))

    def _complete(self, request: ChatRequest) -> GenerationResult:
        body = json.dumps(request_payload(self.model_name, request)).encode("utf-8")
        response, latency_ms = self._post_with_retries(body)
        try:
            choice = response["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"{self.shown_url}: response has no choices[0].message.content: {json.dumps(response)[:200]}") from None
        usage = response.get("usage") or {}
        if "prompt_tokens" not in usage and not self._missing_usage_warned:
            self._missing_usage_warned = True
            log.warning("%s returns no usage; input and output tokens are recorded as 0", self.shown_url)
        wants_logprobs = request.params.top_logprobs > 0
        tokens, token_logprobs = parse_sampled_tokens(choice) if wants_logprobs else (None, None)
        return GenerationResult(
            text=text,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            latency_ms=latency_ms,
            latency_method=LATENCY_PER_REQUEST,
            batch_size=1,
            finish_reason=choice.get("finish_reason"),
            top_logprobs=parse_top_logprobs(choice) if wants_logprobs else None,
            tokens=tokens,
            token_logprobs=token_logprobs,
            system_fingerprint=str(response["system_fingerprint"]) if response.get("system_fingerprint") else None,
        )

    def _post_with_retries(self, body: bytes) -> tuple[dict[str, Any], float]:
        """POST the body; return the parsed reply and the wall time of the attempt that
        succeeded. Backoff sleeps are left out of the latency: they measure our rate limit,
        not the model."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"

        def post() -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            try:
                http_request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(http_request, timeout=self.timeout_s) as reply:
                    payload = reply.read()
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                if error.code not in RETRYABLE_STATUS:
                    raise UserError(f"{self.shown_url}: HTTP {error.code}: {detail}") from None
                retry_after_s = _retry_after_seconds(error.headers.get("Retry-After") if error.headers else None)
                raise _RetryableFailure(f"HTTP {error.code}: {detail}", retry_after_s) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                raise _RetryableFailure(f"{type(error).__name__}: {getattr(error, 'reason', error)}") from None
            latency_ms = (time.perf_counter() - started) * 1000.0
            try:
                return json.loads(payload), latency_ms
            except json.JSONDecodeError:
                raise _RetryableFailure(f"reply is not JSON: {payload[:120]!r}") from None

        def count_retry(attempt: int, failure: Exception, delay_s: float) -> None:
            with self._retry_lock:
                self.retry_count += 1
            log.info("%s: attempt %d/%d failed (%s); retrying in %.2f s", self.shown_url, attempt, self.max_attempts, failure, delay_s)

        try:
            return retry_call(
                post,
                lambda error: isinstance(error, _RetryableFailure),
                self.retry_policy,
                on_retry=count_retry,
                min_delay_s=lambda failure: getattr(failure, "retry_after_s", None),
            )
        except _RetryableFailure as failure:
            raise UserError(f"{self.shown_url}: gave up after {self.max_attempts} attempts; last error: {failure}") from None


class _RetryableFailure(Exception):
    """One failed attempt worth another: a rate limit, a server error, a dropped connection."""

    def __init__(self, problem: str, retry_after_s: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after_s = retry_after_s  # what the server's Retry-After header asked for


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The server's error message, short: OpenAI-style {"error": {"message": ...}} or raw text."""
    try:
        raw = error.read().decode("utf-8", "replace")
    except OSError:
        return error.reason or ""
    try:
        parsed = json.loads(raw)
        message = parsed.get("error", {}).get("message") if isinstance(parsed.get("error"), dict) else parsed.get("error")
        return str(message or raw)[:300]
    except (json.JSONDecodeError, AttributeError):
        return raw[:300]


def _retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to our own backoff

"""The openai backend against real HTTP servers: `localnova serve` with the bundled SmolLM2 in
a subprocess, and tiny stdlib servers that fail on purpose to exercise the retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localnova.backends.openai_backend import (
    OpenAIBackend,
    chat_completions_url,
    parse_sampled_tokens,
    parse_top_logprobs,
    request_payload,
    server_address,
)
from localnova.config import ModelConfig
from localnova.errors import UserError
from localnova.types import ChatRequest, GenerationParams

BUNDLED = "smollm2-135m-instruct"


def _backend(base_url: str, model: str = BUNDLED, **options) -> OpenAIBackend:
    return OpenAIBackend(ModelConfig(name="remote", backend="openai", model=model, options={"base_url": base_url, **options}))


def _ask(question: str, **params) -> ChatRequest:
    return ChatRequest.from_messages([{"role": "user", "content": question}], GenerationParams(**params))


@pytest.fixture(scope="module")
def served_model():
    """`python -m localnova.serve` (what `localnova serve` calls) on a free port of 127.0.0.1."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOCALNOVA_CACHE": os.environ.get("LOCALNOVA_CACHE", "/tmp/lncache")}
    command = [sys.executable, "-m", "localnova.serve", "--model", BUNDLED, "--port", "0", "--max-batch-size", "8", "--max-wait-ms", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base_url = None
    seen = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "listening on " in line:
            base_url = line.rsplit("listening on ", 1)[1].strip()
            break
    if base_url is None:
        process.kill()
        pytest.fail("localnova serve did not start:\n" + "".join(seen[-20:]))
    # keep draining the pipe so the server never blocks on a full one
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    yield base_url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from localnova.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(BUNDLED).path)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.mark.slow
def test_answers_with_the_tokenizers_token_counts(served_model, tokenizer):
    backend = _backend(served_model)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]
    (result,) = backend.generate([ChatRequest.from_messages(messages, GenerationParams(max_new_tokens=12))])
    assert result.text.strip()
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert result.input_tokens == len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    assert 1 <= result.output_tokens <= 12
    assert result.latency_ms > 0 and result.latency_method == "per_request_wall_clock"
    # the served model and the server that serves it name the outputs
    assert backend.identity == {"backend": "openai", "model": BUNDLED, "server": server_address(served_model)}


@pytest.mark.slow
def test_returns_top_logprobs_when_asked(served_model):
    backend = _backend(served_model)
    with_logprobs, without = backend.generate(
        [_ask("Name a colour.", max_new_tokens=5, top_logprobs=3), _ask("Name a colour.", max_new_tokens=5)]
    )
    assert without.top_logprobs is None
    assert with_logprobs.top_logprobs is not None and len(with_logprobs.top_logprobs) == with_logprobs.output_tokens
    for candidates in with_logprobs.top_logprobs:
        assert 1 <= len(candidates) <= 3
        assert all(logprob <= 0 for logprob in candidates.values())
    # greedy: both requests produce the same text whether or not logprobs were asked for
    assert with_logprobs.text == without.text


@pytest.mark.slow
def test_stop_strings_and_sampled_tokens_travel_both_ways(served_model):
    backend = _backend(served_model)
    (full,) = backend.generate([_ask("Name three colours.", max_new_tokens=24)])
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = words[len(words) // 2]
    (stopped,) = backend.generate([_ask("Name three colours.", max_new_tokens=24, stop=(stop,))])
    assert stopped.text == full.text[: full.text.find(stop)].strip() and stopped.finish_reason == "stop"
    (sampled,) = backend.generate([_ask("Name three colours.", max_new_tokens=12, temperature=1.5, seed=3, top_logprobs=2)])
    assert sampled.tokens is not None and len(sampled.tokens) == len(sampled.token_logprobs) == sampled.output_tokens
    assert all(logprob <= 0 for logprob in sampled.token_logprobs)


@pytest.mark.slow
def test_concurrent_requests_are_batched_by_the_server(served_model):
    backend = _backend(served_model, max_concurrency=8)
    before = _get_json(served_model.removesuffix("/v1") + "/stats")
    results = backend.generate([_ask(f"Count to {n}.", max_new_tokens=8) for n in range(8)])
    after = _get_json(served_model.removesuffix("/v1") + "/stats")
    assert all(result.text for result in results)
    assert after["requests"] - before["requests"] == 8
    assert after["max_batch_size_seen"] > 1, after


@pytest.mark.slow
def test_malformed_request_gets_400_and_the_server_lives_on(served_model):
    bad = urllib.request.Request(
        chat_completions_url(served_model), data=json.dumps({"messages": "hello"}).encode(), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad, timeout=30)
    assert caught.value.code == 400
    assert "messages" in json.loads(caught.value.read())["error"]["message"]
    # the client turns a 4xx into one clear UserError, without retrying
    backend = _backend(served_model, model="not-served-here")
    with pytest.raises(UserError, match="404"):
        backend.generate([_ask("hi", max_new_tokens=2)])
    assert backend.retry_count == 0
    assert _get_json(served_model.removesuffix("/v1") + "/health") == {"status": "ok"}
    assert _get_json(served_model + "/models")["data"][0]["id"] == BUNDLED


class _ScriptedServer:
    """A stdlib server that answers with `failures` error statuses, then successes."""

    def __init__(self, failures: int, status: int = 429, system_fingerprint: str | None = None) -> None:
        self.failures_left = failures
        self.status = status
        self.calls = 0
        self.authorizations: list[str | None] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                scripted.calls += 1
                scripted.authorizations.append(self.headers.get("Authorization"))
                if scripted.failures_left != 0:
                    scripted.failures_left -= 1
                    body = json.dumps({"error": {"message": "slow down"}}).encode()
                    self.send_response(scripted.status)
                else:
                    reply = {
                        "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
                    }
                    if system_fingerprint is not None:
                        reply["system_fingerprint"] = system_fingerprint
                    body = json.dumps(reply).encode()
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_retries_429_then_succeeds(monkeypatch):
    monkeypatch.setenv("LOCALNOVA_TEST_KEY", "sk-secret-value")
    server = _ScriptedServer(failures=2, status=429)
    try:
        backend = _backend(server.url, model="m", backoff_initial_s=0.01, api_key_env="LOCALNOVA_TEST_KEY")
        (result,) = backend.generate([_ask("hi")])
    finally:
        server.close()
    assert result.text == "ok" and (result.input_tokens, result.output_tokens) == (7, 1)
    assert backend.retry_count == 2 and server.calls == 3
    assert server.authorizations == ["Bearer sk-secret-value"] * 3
    assert "sk-secret" not in repr(backend) and "sk-secret" not in json.dumps(backend.identity)


def test_two_servers_serving_one_name_never_share_a_cached_answer(tmp_path):
    from localnova.store import Store

    first, other = _ScriptedServer(failures=0, system_fingerprint="fp_b1"), _ScriptedServer(failures=0, system_fingerprint="fp_b2")
    try:
        # both serve "llama3", at different addresses: they may be different weights or templates
        backend, backend_other = _backend(first.url, model="llama3"), _backend(other.url, model="llama3")
        assert backend.identity != backend_other.identity
        assert _backend(first.url, model="other").identity != backend.identity
        store = Store(tmp_path)
        store.start_run("s", {}, {})
        _, (result,) = store.generate_cached(backend, [_ask("hi")], batch_size=1)
        assert result.system_fingerprint == "fp_b1" and result.to_dict()["system_fingerprint"] == "fp_b1"
        _, (again,) = store.generate_cached(backend_other, [_ask("hi")], batch_size=1)
        assert (first.calls, other.calls) == (1, 1) and again.system_fingerprint == "fp_b2"
        # the same server asked again answers from the store
        store.generate_cached(_backend(first.url, model="llama3"), [_ask("hi")], batch_size=1)
        assert first.calls == 1
    finally:
        first.close()
        other.close()
    # a server that reports none: nothing recorded, and the stored row has no such key
    silent = _ScriptedServer(failures=0)
    try:
        (result,) = _backend(silent.url, model="m").generate([_ask("hi")])
    finally:
        silent.close()
    assert result.system_fingerprint is None and "system_fingerprint" not in result.to_dict()


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://Judge-Node:8000", "http://judge-node:8000/v1/"),  # the host's case, the /v1 the backend adds
        ("https://api.example.com/v1", "https://api.example.com:443/v1"),  # the scheme's own port
        ("http://user:pw@h:8000/v1", "http://h:8000/v1"),  # credentials in the URL are no part of it
        ("http://h:8000/v1?api-key=sk-secret", "http://h:8000/v1"),  # nor a query string that may carry a key
    ],
)
def test_a_server_has_one_address_and_no_credential_in_it(one, other):
    assert server_address(one) == server_address(other)
    assert "pw" not in server_address(one) and "sk-secret" not in server_address(one)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://h1:8000/v1", "http://h2:8000/v1"),
        ("http://h:8000/v1", "http://h:8001/v1"),
        ("http://h:8000/v1", "https://h:8000/v1"),
        ("http://h:8000/llama/v1", "http://h:8000/qwen/v1"),  # two servers behind one proxy
    ],
)
def test_servers_at_different_addresses_are_different_servers(one, other):
    assert server_address(one) != server_address(other)


def test_a_key_in_the_query_string_stays_out_of_errors_and_the_identity():
    server = _ScriptedServer(failures=-1, status=400)
    try:
        backend = _backend(server.url + "?key=sk-secret", model="m")
        with pytest.raises(UserError) as raised:
            backend.generate([_ask("hi")])
    finally:
        server.close()
    assert "sk-secret" not in str(raised.value) and "sk-secret" not in repr(backend)
    assert "sk-secret" not in json.dumps(backend.identity)


def test_gives_up_after_bounded_attempts_with_a_clear_error():
    server = _ScriptedServer(failures=-1, status=503)  # always fails
    try:
        backend = _backend(server.url, model="m", backoff_initial_s=0.01, max_attempts=3)
        with pytest.raises(UserError, match=r"gave up after 3 attempts; last error: HTTP 503: slow down"):
            backend.generate([_ask("hi")])
    finally:
        server.close()
    assert server.calls == 3 and backend.retry_count == 2


def test_connection_refused_is_retried_then_reported():
    server = _ScriptedServer(failures=0)
    url = server.url
    server.close()  # nothing listens on that port any more
    backend = _backend(url, model="m", backoff_initial_s=0.01, max_attempts=2)
    with pytest.raises(UserError, match="gave up after 2 attempts"):
        backend.generate([_ask("hi")])
    assert backend.retry_count == 1


def test_config_problems_are_user_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="base_url"):
        OpenAIBackend(ModelConfig(name="x", backend="openai", model="m"))
    with pytest.raises(UserError, match="unknown option"):
        _backend("http://127.0.0.1:1/v1", max_concurency=2)
    with pytest.raises(UserError, match="adapter"):
        OpenAIBackend(ModelConfig(name="x", backend="openai", model="m", options={"base_url": "http://h/v1"}), adapter_path="/tmp/a")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid:9000")
    assert OpenAIBackend(ModelConfig(name="x", backend="openai", model="m")).url == "http://example.invalid:9000/v1/chat/completions"


def test_parse_top_logprobs_reads_the_openai_shape():
    candidates = [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.5}]
    choice = {"logprobs": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": candidates}]}}
    assert parse_top_logprobs(choice) == [{"A": -0.1, "B": -2.5}]
    assert parse_top_logprobs({"logprobs": None}) is None


def test_stop_is_sent_only_when_set():
    assert "stop" not in request_payload("m", _ask("hi"))
    assert request_payload("m", _ask("hi", stop=("\n\n", "END")))["stop"] == ["\n\n", "END"]


def test_parse_sampled_tokens_reads_the_generated_token_and_its_logprob():
    candidates = [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.5}]
    choice = {"logprobs": {"content": [{"token": "B", "logprob": -2.5, "top_logprobs": candidates}]}}
    assert parse_sampled_tokens(choice) == (["B"], [-2.5])
    # a server that does not know the generated token says null: nothing is guessed
    assert parse_sampled_tokens({"logprobs": {"content": [{"token": None, "logprob": None, "top_logprobs": candidates}]}}) == (None, None)
    assert parse_sampled_tokens({"logprobs": None}) == (None, None)

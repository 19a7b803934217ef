"""The Converse backend, through botocore's Stubber and a throttling client wrapper."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402
from botocore.stub import ANY, Stubber  # noqa: E402

from localnova.backends.bedrock_backend import BedrockBackend  # noqa: E402
from localnova.config import ModelConfig  # noqa: E402
from localnova.errors import UserError  # noqa: E402
from localnova.store import generation_key  # noqa: E402
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


class StandIn(BaseHTTPRequestHandler):
    """Bedrock Runtime's Converse over HTTP: 429 ThrottlingException on about 30% of calls,
    otherwise an answer naming the question, with a server latency of 5 ms."""

    rng = random.Random(7)
    lock = threading.Lock()
    calls: list[str] = []  # "throttled" | "answered", in arrival order

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            throttle = self.rng.random() < 0.3
            self.calls.append("throttled" if throttle else "answered")
        if throttle:
            payload, status, headers = {"message": "Too many requests"}, 429, {"x-amzn-ErrorType": "ThrottlingException:"}
        else:
            payload, status, headers = _response(f"answer to {body['messages'][-1]['content'][0]['text']}", latency_ms=5), 200, {}
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.calls.clear()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    yield StandIn.calls
    server.shutdown()
    thread.join()


def test_thirty_percent_throttling_through_botocore_loses_nothing_and_times_only_the_answering_attempt(stand_in):
    """The real client (botocore's protocol, error parsing and retry handler, one attempt per
    call) against an HTTP stand-in. The clock moves only when the backend waits to retry, by an
    hour a wait: a latency that held any wait would be over 3,600,000 ms."""
    from localnova.aws.clients import make_client

    now = [0.0]
    model = MODEL.model_copy(update={"options": {**MODEL.options, "max_concurrency": 1}})
    backend = BedrockBackend(
        model,
        client=make_client("bedrock-runtime", "us-east-1"),
        sleep=lambda seconds: now.__setitem__(0, now[0] + 3600.0),
        clock=lambda: now[0],
    )
    requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(120)]
    results = backend.generate(requests)
    assert [r.text for r in results] == [f"answer to q{i}" for i in range(120)]
    throttled = stand_in.count("throttled")
    assert throttled > 20 and stand_in.count("answered") == 120
    assert backend.throttled_retries == throttled  # botocore retried nothing on its own
    assert max(r.latency_ms for r in results) == 0.0 and now[0] == 3600.0 * throttled
    assert {r.server_latency_ms for r in results} == {5.0}


@pytest.mark.parametrize("code", ["ModelTimeoutException", "ModelErrorException"])
def test_model_timeouts_and_errors_are_retried(code):
    client = _client()
    with Stubber(client) as stubber:
        stubber.add_client_error("converse", code, "try again", http_status_code=424 if code == "ModelErrorException" else 408)
        stubber.add_response("converse", _response("ok"), {"modelId": MODEL.model, "messages": ANY, "inferenceConfig": ANY})
        backend = BedrockBackend(MODEL, client=client, sleep=lambda s: None)
        assert backend.generate([ChatRequest.from_messages([{"role": "user", "content": "hi"}], GenerationParams())])[0].text == "ok"
    assert backend.throttled_retries == 1


def test_one_failure_keeps_the_answers_of_its_batch(tmp_path):
    """Of a batch of 4, three answer and one is refused: the store keeps the three."""
    from localnova.store import Store

    client = _client()
    model = MODEL.model_copy(update={"options": {**MODEL.options, "max_concurrency": 1}})
    requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(4)]
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    with Stubber(client) as stubber:
        for i in range(3):
            stubber.add_response("converse", _response(f"a{i}"), {"modelId": MODEL.model, "messages": ANY, "inferenceConfig": ANY})
        stubber.add_client_error("converse", "ServiceQuotaExceededException", "quota")
        with pytest.raises(ClientError, match=r"ServiceQuotaExceededException.*: quota"):
            store.generate_cached(BedrockBackend(model, client=client), requests, batch_size=4)
    keys, _ = store.generate_cached(BedrockBackend(model, client=client), requests[:3], batch_size=4)  # all stored: no call
    assert len(store.cached_results(keys)) == 3
    store.close()


class CountingRuntime:
    """Converse, answering each call after `check(n)` ran (n: the calls made so far)."""

    def __init__(self, check):
        self.calls = 0
        self.lock = threading.Lock()
        self.check = check

    def converse(self, modelId, messages, inferenceConfig, system=None):
        with self.lock:
            self.calls += 1
            number = self.calls
        self.check(number)
        return _response(f"answer {messages[-1]['content'][0]['text']}")


def test_each_answer_is_committed_as_its_call_returns_not_per_batch(tmp_path):
    """A batch of 16 on Bedrock: while the 4th call is being made, the first 3 answers reach the
    store, without waiting for the batch to end (a kill then loses at most the calls in flight)."""
    import sqlite3

    from localnova.store import Store

    seen = {}

    def check(number):
        if number == 4:  # the batch is still running: wait (up to 10 s) for the first three answers to land
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with sqlite3.connect(tmp_path / "store.sqlite") as other:
                    seen["stored"] = other.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
                if seen["stored"] >= 3:
                    break
                time.sleep(0.02)

    model = MODEL.model_copy(update={"options": {**MODEL.options, "max_concurrency": 1}})
    requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(16)]
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    store.generate_cached(BedrockBackend(model, client=CountingRuntime(check)), requests, batch_size=16)
    store.close()
    assert seen["stored"] == 3


def test_ctrl_c_mid_batch_keeps_every_answer_paid_for_and_sends_no_more(tmp_path):
    """Ctrl-C (a real SIGINT, in the main thread) while a batch of 16 runs 2 calls at a time:
    the calls already sent are waited for and stored, the rest are never sent."""
    import os
    import signal

    from localnova.store import Store

    def check(number):
        if number == 5:
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the main thread gets the interrupt while these calls are in flight

    runtime = CountingRuntime(check)
    model = MODEL.model_copy(update={"options": {**MODEL.options, "max_concurrency": 2}})
    requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams()) for i in range(16)]
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    with pytest.raises(KeyboardInterrupt):
        store.generate_cached(BedrockBackend(model, client=runtime), requests, batch_size=16)
    sent = runtime.calls
    keys = [generation_key(BedrockBackend(model, client=runtime).identity, request) for request in requests]
    assert 5 <= sent < 16
    assert len(store.cached_results(keys)) == sent  # every call sent was answered and kept
    store.close()


def test_access_denied_is_one_user_error():
    client = _client()
    with Stubber(client) as stubber:
        stubber.add_client_error("converse", "AccessDeniedException", "You don't have access to the model")
        backend = BedrockBackend(MODEL, client=client)
        with pytest.raises(UserError, match="AccessDeniedException"):
            backend.generate([ChatRequest.from_messages([{"role": "user", "content": "hi"}], GenerationParams())])


class AlwaysThrottled(BaseHTTPRequestHandler):
    """Any Bedrock control-plane call, answered 429 ThrottlingException every time."""

    requests = 0

    def do_GET(self):
        type(self).requests += 1
        data = json.dumps({"message": "slow down"}).encode()
        self.send_response(429)
        for name, value in {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "x-amzn-ErrorType": "ThrottlingException:",
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_control_plane_call_is_retried_by_one_layer_only(monkeypatch):
    """Our retry policy is the one layer: 8 tries reach the service, not 8 x botocore's own."""
    from localnova.aws.clients import CONTROL_PLANE_TRIES, call_with_backoff, error_code, make_client

    server = ThreadingHTTPServer(("127.0.0.1", 0), AlwaysThrottled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    AlwaysThrottled.requests = 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    try:
        client = make_client("bedrock", "us-east-1")
        with pytest.raises(ClientError, match=r"ThrottlingException") as raised:
            call_with_backoff(client.list_custom_models, sleep=lambda seconds: None)
    finally:
        server.shutdown()
        thread.join()
    assert error_code(raised.value) == "ThrottlingException"
    assert AlwaysThrottled.requests == CONTROL_PLANE_TRIES == 8


def test_log_tags_go_out_as_request_metadata_the_service_accepts_and_leave_the_cache_key_alone():
    """The latency probe names its calls (requestMetadata, which invocation logs filter on).
    botocore's model allows letters, digits, whitespace and :_@$#=/+,-. there, 256 characters
    at most: anything else in a question id is sent as "_"."""
    client = _client()
    request = ChatRequest.from_messages([{"role": "user", "content": "hi"}], GenerationParams())
    tagged = dataclasses.replace(
        request, log_tags=(("localnova-call", "latency-probe"), ("question", "faq/3? (ünits)"), ("long", "x" * 300))
    )
    metadata = {"localnova-call": "latency-probe", "question": "faq/3_ __nits_", "long": "x" * 256}
    with Stubber(client) as stubber:
        stubber.add_response(
            "converse", _response("ok"), {"modelId": MODEL.model, "messages": ANY, "inferenceConfig": ANY, "requestMetadata": metadata}
        )
        stubber.add_response("converse", _response("ok"), {"modelId": MODEL.model, "messages": ANY, "inferenceConfig": ANY})
        backend = BedrockBackend(MODEL, client=client)
        backend.generate([tagged])
        backend.generate([request])  # no tags: no requestMetadata at all
    from bedrock_fixtures import recorded

    assert recorded("Converse")[0]["requestMetadata"] == metadata  # and it passed the check of botocore's model
    assert generation_key(backend.identity, tagged) == generation_key(backend.identity, request)


def test_every_latency_probe_call_goes_through_the_spend_guard(tmp_path):
    """The probe's calls, its warm-up included, reserve and settle with the run's guard as an
    answer does; with the budget spent, the probe stops before its first call is sent."""
    from localnova.budget import BudgetExceeded, SpendGuard, spend_guarded
    from localnova.config import LatencyProbeConfig
    from localnova.evaluate.latency_probe import ProbeArm, run_probe
    from localnova.store import Store

    client = _client()
    requests = {
        f"q{i}": ChatRequest.from_messages([{"role": "user", "content": f"q{i}"}], GenerationParams(max_new_tokens=8)) for i in range(2)
    }
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    guard = SpendGuard(budget_usd=1.0)
    with Stubber(client) as stubber, spend_guarded(guard):
        for _ in range(1 + 2 * 2 * 1):  # one warm-up (one backend), 2 questions x 2 arms x 1 round
            stubber.add_response("converse", _response("ok", input_tokens=1000, output_tokens=1000))
        backend = BedrockBackend(MODEL, client=client)
        arms = {arm: ProbeArm(backend, requests) for arm in ("base", "rag")}
        assert run_probe(store, "nova-micro", arms, LatencyProbeConfig(questions=2, repeats=1), seed=0) == 2
        stubber.assert_no_pending_responses()
    # 5 calls of 1,000 tokens in and out at Nova Micro's $0.000035 and $0.00014 per 1k (price file)
    assert guard.token_usd == pytest.approx(5 * (0.000035 + 0.00014)) and guard.reserved_usd == 0
    spent = SpendGuard(budget_usd=1.0, spent_usd=1.0)
    store.start_run("s", {"again": 1}, {})
    with Stubber(_client()) as nothing_sent, spend_guarded(spent):  # any call sent would find no response
        backend = BedrockBackend(MODEL, client=nothing_sent.client)
        arms = {
            arm: ProbeArm(backend, {q: dataclasses.replace(r, params=GenerationParams(max_new_tokens=9)) for q, r in requests.items()})
            for arm in ("base", "rag")
        }
        with pytest.raises(BudgetExceeded, match="stopping before a call to us.amazon.nova-micro-v1:0"):
            run_probe(store, "nova-micro", arms, LatencyProbeConfig(questions=2, repeats=1), seed=0)
    assert store.probe_calls() == []
    store.close()

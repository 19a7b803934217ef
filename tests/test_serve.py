"""`localnova serve` in-process, in front of a small recording backend: request validation,
the response shape, error statuses, micro-batching and the flags. The slow tests put the real
bundled model behind it (stop strings, sampled tokens); the same server in a subprocess is
exercised in test_openai_backend.py."""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from localnova import serve as serve_module
from localnova.backends.base import Backend
from localnova.cli import build_parser
from localnova.serve import BadRequest, MicroBatcher, add_serve_arguments, completion_response, make_server, parse_chat_request
from localnova.types import ChatRequest, GenerationParams, GenerationResult


class RecordingBackend(Backend):
    """Echoes the last message; records every batch it was given; waits on a gate if set."""

    supports_logprobs = True

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.identity = {"backend": "recording", "model": "echo"}
        self.batches: list[int] = []
        self.requests: list[ChatRequest] = []
        self.gate = gate
        self.fail = fail
        self.entered = threading.Event()

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batches.append(len(requests))
        self.requests.extend(requests)
        if self.fail:
            raise RuntimeError("model exploded")
        results = []
        for request in requests:
            text = request.messages[-1][1].upper()
            logprobs = [{"A": -0.1, "B": -2.0}] * 2 if request.params.top_logprobs else None
            input_tokens = len(request.messages[-1][1].split())
            results.append(GenerationResult(text, input_tokens=input_tokens, output_tokens=2, latency_ms=1.0, top_logprobs=logprobs))
        return results


@contextlib.contextmanager
def serving(backend, model_name: str, max_wait_ms: float):
    """`backend` behind a server on a free local port, for the block; yields its base URL."""
    chat_server = make_server(backend, model_name, port=0, max_batch_size=4, max_wait_ms=max_wait_ms)
    threading.Thread(target=chat_server.serve_forever, daemon=True).start()
    host, port = chat_server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        chat_server.shutdown()
        chat_server.server_close()
        chat_server.batcher.close()


@pytest.fixture
def server():
    backend = RecordingBackend()
    with serving(backend, "echo", max_wait_ms=5) as url:
        yield url, backend


def _post(url: str, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_chat_completion_has_the_openai_shape(server):
    url, _ = server
    body = {"model": "echo", "messages": [{"role": "user", "content": "two words"}], "max_tokens": 5, "logprobs": True, "top_logprobs": 2}
    status, reply = _post(url, body)
    assert status == 200
    assert reply["object"] == "chat.completion" and reply["model"] == "echo"
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "TWO WORDS"}
    assert reply["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    # greedy: the chosen token is the most likely candidate
    candidates = [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.0}]
    assert choice["logprobs"]["content"][0] == {"token": "A", "logprob": -0.1, "top_logprobs": candidates}


@pytest.mark.parametrize(
    "body, status, mentions",
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ({"messages": [{"role": "user", "content": 3}]}, 400, "content"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": 3}, 400, "'stop'"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, 400, "'stop'"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", ""]}, 400, "'stop'"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": {"a": 1}}, 400, "'stop'"),
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "not served"),
    ],
)
def test_bad_requests_get_an_error_json(server, body, status, mentions):
    url, backend = server
    got_status, reply = _post(url, body)
    assert got_status == status
    assert mentions in reply["error"]["message"]
    assert backend.batches == []  # nothing reached the model


def test_body_that_is_not_json_gets_400(server):
    url, _ = server
    status, reply = _post(url, None, raw=b"{not json")
    assert status == 400 and "JSON" in reply["error"]["message"]


def test_models_health_and_unknown_route(server):
    url, _ = server
    with urllib.request.urlopen(url + "/v1/models") as reply:
        assert [model["id"] for model in json.loads(reply.read())["data"]] == ["echo"]
    with urllib.request.urlopen(url + "/health") as reply:
        assert json.loads(reply.read()) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url + "/v2/nothing")
    assert caught.value.code == 404


def test_concurrent_requests_form_micro_batches():
    gate = threading.Event()
    backend = RecordingBackend(gate=gate)
    batcher = MicroBatcher(backend, max_batch_size=4, max_wait_ms=5)
    try:
        requests = [ChatRequest.from_messages([{"role": "user", "content": f"q{n}"}], GenerationParams()) for n in range(9)]
        # The first request is taken alone and held at the gate; the other eight queue behind it.
        futures = [batcher.submit(requests[0])]
        assert backend.entered.wait(timeout=10)
        futures += [batcher.submit(request) for request in requests[1:]]
        gate.set()
        texts = [future.result(timeout=10).text for future in futures]
    finally:
        batcher.close()
    assert texts == [f"Q{n}" for n in range(9)]  # each client gets its own answer
    assert backend.batches == [1, 4, 4]
    assert batcher.stats()["batch_size_counts"] == {"1": 1, "4": 2}


def test_a_backend_failure_reaches_every_waiting_client_and_the_server_lives_on():
    backend = RecordingBackend(fail=True)
    chat_server = make_server(backend, "echo", port=0, max_batch_size=4, max_wait_ms=20)
    threading.Thread(target=chat_server.serve_forever, daemon=True).start()
    host, port = chat_server.server_address[:2]
    url = f"http://{host}:{port}"
    try:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda n: _post(url, {"messages": [{"role": "user", "content": str(n)}]}), range(3)))
        with urllib.request.urlopen(url + "/health") as reply:
            assert reply.status == 200
    finally:
        chat_server.shutdown()
        chat_server.server_close()
        chat_server.batcher.close()
    assert [status for status, _ in replies] == [500, 500, 500]
    assert all("model exploded" in reply["error"]["message"] for _, reply in replies)


def test_parse_chat_request_maps_the_openai_fields():
    request = parse_chat_request(
        {
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 7,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 3,
            "logprobs": True,
            "top_logprobs": 4,
        }
    )
    assert request.messages == (("system", "s"), ("user", "hi"))
    assert request.params == GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3, top_logprobs=4)
    with pytest.raises(BadRequest, match="needs 'logprobs'"):
        parse_chat_request({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})


def test_stop_reaches_the_backend_as_a_tuple(server):
    url, backend = server
    for stop, expected in (("###", ("###",)), (["\n\n", "END"], ("\n\n", "END")), (None, ()), ([], ())):
        status, _ = _post(url, {"messages": [{"role": "user", "content": "x"}], "stop": stop})
        assert status == 200
        assert backend.requests[-1].params.stop == expected
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}], "stop": "a"}).params == GenerationParams(stop=("a",))


def test_sampled_logprobs_name_the_token_the_backend_generated():
    request = ChatRequest.from_messages([{"role": "user", "content": "x"}], GenerationParams(temperature=0.8, top_logprobs=2))
    candidates = [{"A": -0.1, "B": -2.0}, {"C": -0.3, "D": -1.5}]
    # position 0 drew the less likely B; position 1 drew E, outside the top 2
    result = GenerationResult("BE", 1, 2, 1.0, top_logprobs=candidates, tokens=["B", "E"], token_logprobs=[-2.0, -4.2])
    content = completion_response(result, request, "m")["choices"][0]["logprobs"]["content"]
    assert [(entry["token"], entry["logprob"]) for entry in content] == [("B", -2.0), ("E", -4.2)]
    assert content[0]["top_logprobs"] == [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.0}]
    # tokens without their log probabilities: read from the candidates where they are there
    result = GenerationResult("BE", 1, 2, 1.0, top_logprobs=candidates, tokens=["B", "E"])
    content = completion_response(result, request, "m")["choices"][0]["logprobs"]["content"]
    assert [(entry["token"], entry["logprob"]) for entry in content] == [("B", -2.0), ("E", None)]


def test_without_tokens_from_the_backend_sampled_logprobs_claim_no_token():
    request = ChatRequest.from_messages([{"role": "user", "content": "x"}], GenerationParams(temperature=0.8, top_logprobs=2))
    result = GenerationResult("y", 1, 1, 1.0, top_logprobs=[{"A": -0.1, "B": -2.0}])
    entry = completion_response(result, request, "m")["choices"][0]["logprobs"]["content"][0]
    assert entry["token"] is None and len(entry["top_logprobs"]) == 2


def test_the_cli_and_python_m_serve_share_one_set_of_flags_and_exit_codes(monkeypatch, capsys):
    flags = ["--model", "m", "--port", "0", "--max-wait-ms", "5"]
    from_cli = vars(build_parser().parse_args(["serve", *flags]))
    alone = vars(add_serve_arguments(argparse.ArgumentParser()).parse_args(flags))
    assert {key: from_cli[key] for key in alone} == alone
    assert alone == {
        "model": "m",
        "backend": "transformers",
        "adapter": None,
        "host": "127.0.0.1",
        "port": 0,
        "max_batch_size": 16,
        "max_wait_ms": 5.0,
        "served_model_name": None,
        "options": [],
    }

    def refuse(model_config, **kwargs):
        from localnova.errors import UserError

        raise UserError(f"no model {model_config.model!r}")

    monkeypatch.setattr(serve_module, "serve", refuse)
    assert serve_module.main(flags) == 2
    assert capsys.readouterr().err == "localnova: error: no model 'm'\n"


def test_option_flags_become_the_served_model_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(serve_module, "serve", lambda model_config, **kwargs: seen.update(config=model_config))
    options = ["tensor_parallel_size=2", "gpu_memory_utilization=0.8", "enforce_eager=true", "quantization=awq", "dtype=bfloat16"]
    flags = ["--model", "m", "--backend", "vllm", *[part for option in options for part in ("--option", option)]]
    assert serve_module.main(flags) == 0
    assert seen["config"].backend == "vllm"
    assert seen["config"].options == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "enforce_eager": True,
        "quantization": "awq",
        "dtype": "bfloat16",
    }
    cli_args = build_parser().parse_args(["serve", "--model", "m", "--option", "max_model_len=4096", "--option", "max_model_len=2048"])
    assert serve_module.parse_options(cli_args.options) == {"max_model_len": 2048}  # the later one wins


def test_bad_option_flags_are_one_line_errors(capsys):
    assert serve_module.main(["--model", "m", "--option", "tensor_parallel_size"]) == 2
    assert capsys.readouterr().err == "localnova: error: --option 'tensor_parallel_size': expected KEY=VALUE\n"
    # the transformers backend refuses an option it does not know before it loads anything
    assert serve_module.main(["--model", "m", "--option", "tensor_parallel_size=2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("localnova: error: model 'm': unknown option(s) for the transformers backend: tensor_parallel_size;")
    assert error.count("\n") == 1


@pytest.fixture(scope="module")
def smollm2_server():
    """The bundled SmolLM2 through the transformers backend, behind the server."""
    from localnova.backends import create_backend
    from localnova.config import ModelConfig

    backend = create_backend(ModelConfig(name="smollm2", model="smollm2-135m-instruct"))
    try:
        with serving(backend, "smollm2", max_wait_ms=50) as url:
            yield url, backend
    finally:
        backend.close()


QUESTION = [{"role": "user", "content": "Name three colours and say one thing about each."}]


@pytest.mark.slow
def test_the_real_model_stops_before_the_stop_string(smollm2_server):
    url, backend = smollm2_server
    (full,) = backend.generate([ChatRequest.from_messages(QUESTION, GenerationParams(max_new_tokens=32))])
    words = full.text.split()
    assert len(words) >= 4, full.text
    stop = words[len(words) // 2]
    expected = full.text[: full.text.find(stop)].strip()
    # with a second request in the batch, which pads the first after it stops
    other = [{"role": "user", "content": "Count from one to twenty in words."}]
    stopped, _ = backend.generate(
        [ChatRequest.from_messages(m, GenerationParams(max_new_tokens=32, stop=(stop,))) for m in (QUESTION, other)]
    )
    assert stopped.text == expected and stop not in stopped.text
    assert stopped.finish_reason == "stop" and stopped.output_tokens < full.output_tokens
    status, reply = _post(url, {"messages": QUESTION, "max_tokens": 32, "stop": [stop, "never-generated-###"], "logprobs": True})
    assert status == 200, reply
    choice = reply["choices"][0]
    assert choice["message"]["content"] == expected and choice["finish_reason"] == "stop"
    tokens = [entry["token"] for entry in choice["logprobs"]["content"]]
    assert len(tokens) == reply["usage"]["completion_tokens"] == stopped.output_tokens
    assert stop in "".join(tokens) and stop not in "".join(tokens[:-1])  # the last token completed the stop string


@pytest.mark.slow
def test_the_real_model_reports_the_tokens_it_sampled(smollm2_server):
    url, _ = smollm2_server
    body = {"messages": QUESTION, "max_tokens": 24, "temperature": 1.5, "seed": 11, "logprobs": True, "top_logprobs": 2}
    status, reply = _post(url, body)
    assert status == 200, reply
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"]
    assert all(isinstance(entry["token"], str) and entry["logprob"] <= 0 for entry in content)
    # every token is the one generated: together they spell the answer
    assert "".join(entry["token"] for entry in content).replace("<|im_end|>", "").strip() == reply["choices"][0]["message"]["content"]
    for entry in content:
        candidates = {candidate["token"]: candidate["logprob"] for candidate in entry["top_logprobs"]}
        if entry["token"] in candidates:
            assert entry["logprob"] == pytest.approx(candidates[entry["token"]], abs=1e-5)
        else:
            assert entry["logprob"] <= min(candidates.values())
    # at this temperature some token is not the most likely one: a greedy guess would be wrong there
    assert any(entry["token"] != entry["top_logprobs"][0]["token"] for entry in content)
    again = _post(url, body)[1]
    assert again["choices"][0]["logprobs"]["content"] == content  # seeded

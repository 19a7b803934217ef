"""`localnova serve`: any localnova backend behind the OpenAI chat-completions API.

One model (say a judge with its LoRA adapter) loaded once can then serve several studies, or
studies on other machines, through the openai backend. Requests that arrive together are
gathered into micro-batches by one worker thread, because a transformers model answers a
batch of 16 several times faster than 16 single requests (see DESIGN.md).

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health, GET /stats (batch sizes).
Standard library only (http.server), so serving adds no dependency.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from localnova.backends import BACKENDS, create_backend
from localnova.config import ModelConfig, parse_override_value
from localnova.errors import UserError, exit_on_user_error
from localnova.types import ChatRequest, GenerationParams, GenerationResult

if TYPE_CHECKING:
    from localnova.backends.base import Backend

ROLES = ("system", "user", "assistant")
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit
MAX_STOP_STRINGS = 4  # OpenAI's own limit
MAX_BODY_BYTES = 8 << 20


class BadRequest(ValueError):
    """A request the server refuses with HTTP 400 (or another 4xx status)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat-completions body and turn it into a ChatRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{index}] needs a role among {', '.join(ROLES)}", f"messages[{index}].role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text parts are meaningful here
            texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(text, str) for text in texts):
                raise BadRequest(f"messages[{index}].content: only text parts are supported", f"messages[{index}].content")
            content = "".join(texts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content must be a string", f"messages[{index}].content")
        pairs.append((message["role"], content))
    if body.get("stream"):
        raise BadRequest("streaming is not supported", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported", "n")

    def number(key: str, default: Any, kind: type, low: float, high: float | None = None) -> Any:
        value = body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and int(value) != value):
            raise BadRequest(f"'{key}' must be a{'n integer' if kind is int else ' number'}", key)
        if value < low or (high is not None and value > high):
            raise BadRequest(f"'{key}' must be between {low} and {high if high is not None else 'any'}", key)
        return kind(value)

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    body = {**body, "max_tokens": max_tokens}
    top_logprobs = number("top_logprobs", 0, int, 0, MAX_TOP_LOGPROBS)
    wants_logprobs = body.get("logprobs", False)
    if not isinstance(wants_logprobs, bool):
        raise BadRequest("'logprobs' must be true or false", "logprobs")
    if wants_logprobs and top_logprobs == 0:
        top_logprobs = 1  # logprobs without top_logprobs: the chosen token's, which needs one candidate
    if top_logprobs and not wants_logprobs:
        raise BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    params = GenerationParams(
        max_new_tokens=number("max_tokens", GenerationParams.max_new_tokens, int, 1),
        temperature=number("temperature", 0.0, float, 0.0, 2.0),
        top_p=number("top_p", 1.0, float, 0.0, 1.0) or 1.0,
        seed=number("seed", 0, int, -(2**63)),
        top_logprobs=top_logprobs,
        stop=parse_stop(body.get("stop")),
    )
    return ChatRequest(tuple(pairs), params)


def parse_stop(value: Any) -> tuple[str, ...]:
    """OpenAI's `stop`: null, one string, or a list of up to four non-empty strings."""
    if value is None:
        return ()
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or len(strings) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in strings):
        raise BadRequest(f"'stop' must be a non-empty string or a list of up to {MAX_STOP_STRINGS} of them", "stop")
    return tuple(strings)


def _chosen_tokens(result: GenerationResult, greedy: bool) -> list[tuple[str | None, float | None]]:
    """The token generated at each position of result.top_logprobs and its log probability."""
    positions = result.top_logprobs or []
    if result.tokens is not None and len(result.tokens) == len(positions):
        token_logprobs = (
            result.token_logprobs if result.token_logprobs is not None and len(result.token_logprobs) == len(positions) else None
        )
        return [
            (token, token_logprobs[index] if token_logprobs is not None else candidates.get(token))
            for index, (token, candidates) in enumerate(zip(result.tokens, positions, strict=True))
        ]
    # A backend that reports candidates only: under greedy decoding the generated token is the
    # most likely one; under sampling it is unknown.
    return [max(candidates.items(), key=lambda item: item[1]) if candidates and greedy else (None, None) for candidates in positions]


def completion_response(result: GenerationResult, request: ChatRequest, model_name: str) -> dict[str, Any]:
    """The OpenAI chat.completion shape for one result."""
    logprobs = None
    if result.top_logprobs is not None and request.params.top_logprobs > 0:
        chosen = _chosen_tokens(result, greedy=request.params.temperature == 0)
        content = [
            {
                "token": token,
                "logprob": logprob,
                "top_logprobs": [{"token": candidate, "logprob": value} for candidate, value in candidates.items()],
            }
            for (token, logprob), candidates in zip(chosen, result.top_logprobs, strict=True)
        ]
        logprobs = {"content": content}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason or "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": result.input_tokens,
            "completion_tokens": result.output_tokens,
            "total_tokens": result.input_tokens + result.output_tokens,
        },
    }


@dataclass
class _Pending:
    request: ChatRequest
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Gathers requests from many HTTP threads into batches for one backend.

    One worker thread owns the backend (models are rarely thread-safe). It takes the first
    waiting request, then waits up to `max_wait_ms` for more, up to `max_batch_size`; while a
    batch is generating, new requests queue up and form the next one.
    """

    def __init__(self, backend: "Backend", max_batch_size: int = 16, max_wait_ms: float = 10.0) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._stats_lock = threading.Lock()
        self.batch_size_counts: Counter[int] = Counter()
        self._worker = threading.Thread(target=self._run, name="localnova-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: ChatRequest) -> Future:
        pending = _Pending(request)
        self._queue.put(pending)
        return pending.future

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            counts = dict(sorted(self.batch_size_counts.items()))
        return {
            "requests": sum(size * count for size, count in counts.items()),
            "batches": sum(counts.values()),
            "max_batch_size_seen": max(counts, default=0),
            "batch_size_counts": {str(size): count for size, count in counts.items()},
            "queued": self._queue.qsize(),
        }

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _next_batch(self) -> list[_Pending] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining_s = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining_s) if remaining_s > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            with self._stats_lock:
                self.batch_size_counts[len(batch)] += 1
            try:
                results = self.backend.generate([pending.request for pending in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} requests")
            except BaseException as error:  # noqa: BLE001 - every waiting client must hear of it
                for pending in batch:
                    pending.future.set_exception(error)
                continue
            for pending, result in zip(batch, results, strict=True):
                pending.future.set_result(result)


class _Handler(BaseHTTPRequestHandler):
    server: "ChatServer"
    server_version = "localnova-serve"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            model = {"id": self.server.model_name, "object": "model", "created": self.server.started, "owned_by": "localnova"}
            self._send_json(200, {"object": "list", "data": [model]})
        elif path == "/stats":
            self._send_json(200, {"model": self.server.model_name, "identity": self.server.identity, **self.server.batcher.stats()})
        else:
            self._send_error(404, f"no route for GET {path}", kind="not_found_error")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._send_error(404, f"no route for POST {path}", kind="not_found_error")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                raise BadRequest("a JSON body (Content-Length 1 to 8 MiB) is required")
            try:
                body = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadRequest("the body is not valid JSON") from None
            requested_model = body.get("model") if isinstance(body, dict) else None
            if requested_model not in (None, self.server.model_name):
                served = self.server.model_name
                raise BadRequest(f"model {requested_model!r} is not served here; this server serves {served!r}", "model", 404)
            request = parse_chat_request(body)
        except BadRequest as error:
            self._send_error(error.status, str(error), error.param)
            return
        try:
            result = self.server.batcher.submit(request).result()
        except Exception as error:  # noqa: BLE001 - the client gets the failure, the server lives on
            self._send_error(500, f"generation failed: {type(error).__name__}: {error}", kind="server_error")
            return
        self._send_json(200, completion_response(result, request, self.server.model_name))


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], batcher: MicroBatcher, model_name: str, identity: dict[str, str], verbose: bool = False
    ) -> None:
        super().__init__(address, _Handler)
        self.batcher = batcher
        self.model_name = model_name
        self.identity = identity
        self.verbose = verbose
        self.started = int(time.time())


def make_server(
    backend: "Backend", model_name: str, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 16, max_wait_ms: float = 10.0
) -> ChatServer:
    """A server (not yet serving) in front of an already built backend; port 0 picks a free one."""
    batcher = MicroBatcher(backend, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    return ChatServer((host, port), batcher, model_name, dict(backend.identity))


def serve(
    model_config: ModelConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    adapter_path: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 10.0,
    served_model_name: str | None = None,
) -> None:
    """Load the backend `model_config` names (with an optional LoRA adapter) and serve it until
    interrupted. Clients ask for the model by `served_model_name` (default: model_config.model)."""
    backend = create_backend(model_config, adapter_path=adapter_path)
    backend.load()  # ready before the first request, which should not wait for the weights
    model_name = served_model_name or model_config.model
    server = make_server(backend, model_name, host, port, max_batch_size, max_wait_ms)
    bound_host, bound_port = server.server_address[:2]
    # Tests and scripts read this line to learn the port when they asked for port 0.
    print(f"localnova serve: {model_name} ({model_config.backend}) listening on http://{bound_host}:{bound_port}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.batcher.close()
        backend.close()


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `localnova serve` and `python -m localnova.serve`, defined once."""
    parser.add_argument("--model", required=True, help="bundled name, hub id or local path")
    parser.add_argument("--backend", default="transformers", choices=list(BACKENDS))
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--max-batch-size", type=int, default=16, help="requests gathered into one backend call")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with")
    parser.add_argument("--served-model-name", default=None, help="the model name clients send (default: --model)")
    parser.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option, repeatable, the value read as YAML (e.g. --backend vllm --option tensor_parallel_size=2)",
    )
    return parser


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`--option KEY=VALUE` flags as the options of a ModelConfig; a later KEY wins."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, raw_value = pair.partition("=")
        if not separator or not key.strip():
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = parse_override_value(raw_value)
    return options


def serve_from_args(args: argparse.Namespace) -> int:
    """Serve what the flags of `add_serve_arguments` describe, until interrupted."""
    model_config = ModelConfig(
        name=args.served_model_name or args.model, backend=args.backend, model=args.model, options=parse_options(args.options)
    )
    serve(
        model_config,
        host=args.host,
        port=args.port,
        adapter_path=args.adapter,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        served_model_name=args.served_model_name,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m localnova.serve`: the same flags, and the same exit codes, as `localnova serve`."""
    parser = add_serve_arguments(argparse.ArgumentParser(prog="localnova serve", description=__doc__.split("\n\n")[0]))
    return exit_on_user_error(serve_from_args, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

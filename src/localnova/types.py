"""Plain data types that the stages pass to each other.

Every stage (corpus, retrieval, backends, evaluate, store, report) speaks in these types,
never in another stage's internals, so each stage can be read and tested alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def stable_hash(obj: Any, length: int = 16) -> str:
    """A hex digest of a JSON-serialisable object, stable across runs and machines."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Document:
    """One source document of the corpus, already converted to plain text or Markdown."""

    doc_id: str  # the file's path relative to the corpus folder (or the `id` field of a JSONL row)
    text: str
    title: str = ""
    source_path: str = ""


@dataclass(frozen=True)
class Chunk:
    """A piece of a document that the retriever indexes.

    For hierarchical chunking the child `text` is what is embedded and matched, and
    `context_text` (the parent) is what the model is given; for the other strategies the two
    are the same.
    """

    chunk_id: str  # stable: derived from doc_id, strategy and position/content
    doc_id: str
    text: str
    context_text: str
    position: int = 0  # order within its document
    parent_id: str | None = None


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    doc_id: str
    score: float
    text: str  # the text given to the model (the parent, for hierarchical chunks)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation question with its ground truth and the documents that hold the answer."""

    question_id: str
    question: str
    answer: str
    doc_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0
    top_logprobs: int = 0  # >0: return this many most likely tokens at each generated position
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings, which is not returned
    # When set, the first generated token is this text's single token whatever the model would
    # pick; its top_logprobs are still the model's own. Only where Backend.can_force_first_token.
    first_token: str = ""

    def __post_init__(self) -> None:
        # A list (from JSON) or one string would make the frozen params unhashable or wrong.
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # The store keys every generation by a hash of this dict: `stop` is left out when empty
        # so that requests without stop strings keep the keys they had before the field existed.
        if self.stop:
            data["stop"] = list(self.stop)
        else:
            del data["stop"]
        if not self.first_token:
            del data["first_token"]  # likewise
        return data


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make: the messages and how to sample."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs; roles: system, user, assistant
    params: GenerationParams = field(default_factory=GenerationParams)
    # (key, value) pairs that say why the call is made, for the service's own records (Bedrock
    # sends them as Converse's requestMetadata, which its invocation logs can filter on). They
    # do not change the answer, so they are not in to_dict and not in the cache key.
    log_tags: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def from_messages(messages: list[dict[str, str]], params: GenerationParams) -> "ChatRequest":
        return ChatRequest(tuple((m["role"], m["content"]) for m in messages), params)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.message_dicts(), "params": self.params.to_dict()}


# How a latency figure was taken. A batched backend cannot time one request inside a batch,
# so it records the wall-clock time of the whole batched call for every request in it: the
# time a user who sent that batch waited. Servers and APIs time each request on its own.
LATENCY_BATCH_WALL = "batch_wall_clock"
LATENCY_PER_REQUEST = "per_request_wall_clock"


# Finish reasons that say the generation itself failed, so its text is no answer: a server that
# aborted or errored on the request (vllm's OpenAI server: "abort", "error"), a Bedrock model
# whose output the service could not read ("malformed_model_output"). The store never serves
# such a result again: a rerun makes the call anew. "length" and "content_filter" are answers.
FAILED_FINISH_REASONS = frozenset({"abort", "error", "malformed_model_output"})


@dataclass
class GenerationResult:
    """What a backend returns for one request."""

    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    latency_method: str = LATENCY_PER_REQUEST
    batch_size: int = 1
    server_latency_ms: float | None = None  # as reported by a server or API, where it says
    finish_reason: str | None = None
    # One dict per generated token: candidate token text -> log probability (only when
    # GenerationParams.top_logprobs > 0 and the backend can give them).
    top_logprobs: list[dict[str, float]] | None = None
    # The token generated at each position of top_logprobs and its log probability: what was
    # drawn, which under sampling need not be the most likely candidate (None where the
    # backend cannot say).
    tokens: list[str] | None = None
    token_logprobs: list[float] | None = None
    # What an OpenAI-compatible server says about the build that answered (its reply's
    # system_fingerprint). Known only after the call, so it is recorded with each result
    # rather than in the cache key: a change shows in the store without being hidden by it.
    system_fingerprint: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the backend says the generation failed (FAILED_FINISH_REASONS)."""
        return self.finish_reason in FAILED_FINISH_REASONS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Left out when unknown, so rows without them read the same as rows written before
        # these fields existed (and older versions can still read them).
        for key in ("tokens", "token_logprobs", "system_fingerprint"):
            if data[key] is None:
                del data[key]
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "GenerationResult":
        """A result from its to_dict(), including rows stored before tokens and token_logprobs existed."""
        return GenerationResult(**data)

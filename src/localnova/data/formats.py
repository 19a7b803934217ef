"""Training-data formats: plain chat JSONL for local training, and Amazon Nova's
`bedrock-conversation-2024` JSONL for Bedrock customization jobs.

Plain chat JSONL, one record a line:
    {"id": "...", "doc_id": "...", "messages": [{"role": "user", "content": "..."}, ...]}

Nova JSONL, one sample a line (Nova user guide, "Preparing data for fine-tuning Understanding
models", read 2026-11-25):
    {"schemaVersion": "bedrock-conversation-2024",
     "system": [{"text": "..."}],
     "messages": [{"role": "user", "content": [{"text": "..."}]},
                  {"role": "assistant", "content": [{"text": "..."}]}]}

Converting a chat record to Nova and back keeps the system prompt and every user/assistant
turn exactly. Nova samples have no id or source document, so those two fields do not survive
the trip: an imported record gets an id derived from its content and an empty doc_id.

Every writer here goes through localnova.files: a temporary file beside the target, renamed
into place, so a failure never leaves a half-written file behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.data.tables import field_value, read_rows
from localnova.errors import UserError
from localnova.files import write_jsonl_atomic
from localnova.jsonl import read_json_lines
from localnova.types import stable_hash

NOVA_SCHEMA_VERSION = "bedrock-conversation-2024"
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TrainingPair:
    """One question-answer pair and where it came from."""

    question: str
    answer: str
    doc_id: str = ""
    chunk_id: str = ""
    pair_id: str = ""

    def __post_init__(self) -> None:
        if not self.pair_id:
            # frozen dataclass: set the derived id through object.__setattr__
            object.__setattr__(self, "pair_id", stable_hash({"q": self.question, "a": self.answer, "doc": self.doc_id}, 12))

    def to_record(self, system_prompt: str | None = None) -> "ChatRecord":
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": "user", "content": self.question}, {"role": "assistant", "content": self.answer}]
        return ChatRecord(id=self.pair_id, doc_id=self.doc_id, messages=messages)

    def to_dict(self) -> dict[str, str]:
        return {"pair_id": self.pair_id, "doc_id": self.doc_id, "chunk_id": self.chunk_id, "question": self.question, "answer": self.answer}


@dataclass
class ChatRecord:
    """One training conversation: an optional system message, then user/assistant turns."""

    id: str
    messages: list[dict[str, str]]
    doc_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # other keys of a chat line, kept as they are

    @property
    def system(self) -> str | None:
        systems = [m["content"] for m in self.messages if m["role"] == "system"]
        return "\n".join(systems) if systems else None

    @property
    def turns(self) -> list[dict[str, str]]:
        return [m for m in self.messages if m["role"] != "system"]

    def to_pair(self) -> TrainingPair:
        """The first user turn and the last assistant turn as a question-answer pair."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        assistants = [m["content"] for m in self.messages if m["role"] == "assistant"]
        if not users or not assistants:
            raise ValueError(f"record {self.id!r} has no user or no assistant turn")
        return TrainingPair(question=users[0], answer=assistants[-1], doc_id=self.doc_id, pair_id=self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "doc_id": self.doc_id, "messages": self.messages, **self.extra}


def chat_record_from_dict(row: Any, where: str) -> ChatRecord:
    """Build a ChatRecord from one parsed chat line; `where` (path:line) names it in errors."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with a 'messages' list")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES or not isinstance(message.get("content"), str):
            raise UserError(f"{where}: messages[{index}] must be {{'role': one of {'/'.join(CHAT_ROLES)}, 'content': a string}}")
        clean.append({"role": message["role"], "content": message["content"]})
    record_id = str(row.get("id") or stable_hash(clean, 12))
    extra = {key: value for key, value in row.items() if key not in ("id", "doc_id", "messages")}
    return ChatRecord(id=record_id, messages=clean, doc_id=str(row.get("doc_id") or ""), extra=extra)


def read_chat_jsonl(path: str | Path) -> list[ChatRecord]:
    path = Path(path)
    return [chat_record_from_dict(row, f"{path}:{line}") for line, row in read_json_lines(path)]


def write_chat_jsonl(records: Iterable[ChatRecord], path: str | Path) -> int:
    return write_jsonl_atomic(path, (record.to_dict() for record in records))


def record_to_nova(record: ChatRecord) -> dict[str, Any]:
    """A chat record as one Nova sample. System messages go to the top-level `system` list."""
    sample: dict[str, Any] = {"schemaVersion": NOVA_SCHEMA_VERSION}
    systems = [m["content"] for m in record.messages if m["role"] == "system"]
    if systems:
        sample["system"] = [{"text": text} for text in systems]
    sample["messages"] = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in record.turns]
    return sample


def nova_to_record(sample: Any, where: str = "nova sample") -> ChatRecord:
    """One Nova sample as a chat record. Only text content can be imported; a sample with an
    image or video block is a UserError, since local training here is text-only."""
    if not isinstance(sample, dict) or not isinstance(sample.get("messages"), list):
        raise UserError(f"{where}: expected a Nova sample with a 'messages' list")
    messages: list[dict[str, str]] = []
    system = sample.get("system") or []
    if not isinstance(system, list):
        raise UserError(f"{where}: 'system' must be a list of {{'text': ...}} blocks")
    for block in system:
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise UserError(f"{where}: 'system' must be a list of {{'text': ...}} blocks")
        messages.append({"role": "system", "content": block["text"]})
    for index, message in enumerate(sample["messages"]):
        role_ok = isinstance(message, dict) and message.get("role") in ("user", "assistant")
        if not role_ok or not isinstance(message.get("content"), list):
            raise UserError(f"{where}: messages[{index}] must have role user or assistant and a content list")
        texts = []
        for block in message["content"]:
            if not isinstance(block, dict) or set(block) != {"text"} or not isinstance(block["text"], str):
                raise UserError(f"{where}: messages[{index}]: only text content blocks can be imported")
            texts.append(block["text"])
        # Several text blocks in one turn are one message to a chat template.
        messages.append({"role": message["role"], "content": "".join(texts)})
    return ChatRecord(id=stable_hash(messages, 12), messages=messages)


def write_nova_jsonl(records: Iterable[ChatRecord], path: str | Path) -> int:
    return write_jsonl_atomic(path, (record_to_nova(record) for record in records))


def read_nova_jsonl(path: str | Path) -> list[ChatRecord]:
    path = Path(path)
    return [nova_to_record(row, f"{path}:{line}") for line, row in read_json_lines(path)]


def is_nova_row(row: Any) -> bool:
    """Whether a parsed line looks like a Nova sample rather than a chat record."""
    if not isinstance(row, dict):
        return False
    if "schemaVersion" in row or "system" in row:
        return True
    messages = row.get("messages")
    return isinstance(messages, list) and bool(messages) and isinstance(messages[0], dict) and isinstance(messages[0].get("content"), list)


def read_training_file(path: str | Path) -> list[ChatRecord]:
    """Read a chat JSONL or a Nova JSONL file, telling them apart by the first record."""
    path = Path(path)
    rows = read_json_lines(path)
    if not rows:
        raise UserError(f"{path}: the file holds no records")
    convert = nova_to_record if is_nova_row(rows[0][1]) else chat_record_from_dict
    return [convert(row, f"{path}:{line}") for line, row in rows]


def is_conversation_file(path: str | Path) -> bool:
    """Whether `path` is a chat or Nova JSONL file (its first record has a `messages` list),
    rather than rows of question/answer columns."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file():
        return False
    rows = read_json_lines(path)
    return bool(rows) and isinstance(rows[0][1], dict) and "messages" in rows[0][1]


def read_question_answer_rows(path: str | Path, fields: Mapping[str, str] | None = None, split: str | None = None) -> list[TrainingPair]:
    """Training pairs from rows of question, answer and (optionally) doc_id columns, in any
    form data/tables.py reads; `fields` renames the columns (finetune.train_fields)."""
    fields = dict(fields or {})
    pairs = [
        TrainingPair(
            question=field_value(row, "question", fields),
            answer=field_value(row, "answer", fields),
            doc_id=field_value(row, "doc_id", fields, required=False) or "",
        )
        for row in read_rows(path, split, prefer=("train",))
    ]
    if not pairs:
        raise UserError(f"{path}: the file holds no records")
    return pairs


def read_training_pairs(path: str | Path, fields: Mapping[str, str] | None = None, split: str | None = None) -> list[TrainingPair]:
    """Read a training set as question-answer pairs: a chat or Nova file (first user turn, last
    assistant turn), else rows of question/answer columns (read_question_answer_rows)."""
    if not is_conversation_file(path):
        return read_question_answer_rows(path, fields, split)
    pairs = []
    for record in read_training_file(path):
        try:
            pairs.append(record.to_pair())
        except ValueError as error:
            raise UserError(f"{path}: {error}") from None
    return pairs

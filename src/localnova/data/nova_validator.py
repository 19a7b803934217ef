"""Check a JSONL file against Amazon Nova's documented fine-tuning rules, before a Bedrock
job finds the problem an hour (and a bill) later.

Every problem in the file is reported with its line number, not just the first one.

Where the rules come from (both read 2026-11-25; the constraints table re-read 2026-12-02):
- [guide] Amazon Nova user guide, "Preparing data for fine-tuning Understanding models"
  (docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html): its
  numbered list of requirements, and its "Dataset constraints" table
  (#custom-fine-tune-constraints): per model (Micro, Lite, Pro) the minimum and maximum number of
  samples and the context length of one sample, and the image and video limits per sample.
- [script] the validation script that the guide's SageMaker page recommends:
  aws-samples/amazon-bedrock-samples,
  custom-models/bedrock-fine-tuning/nova/understanding/dataset_validation/nova_ft_dataset_validator.py.
Rules that are ours, stricter than either source, say so where they are checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnova.costs import count_tokens_estimate
from localnova.data.formats import is_nova_row
from localnova.errors import UserError


@dataclass(frozen=True)
class NovaLimits:
    """One model's row of the guide's "Dataset constraints" table."""

    min_samples: int
    max_samples: int
    context_tokens: int  # one sample's system prompt and turns together
    takes_media: bool  # images and video ([script]: Micro is text only)


# [guide] "Dataset constraints": Amazon Nova Micro, Lite and Pro each take 8 to 20k samples and a
# context length of 32k (the table gives all three the same row). "32k" is read as 32,000
# tokens, the stricter reading of 32,000 or 32,768. The [script]'s MODEL_TO_NUM_SAMPLES_MAP agrees
# on the sample counts. A sample's tokens are estimated at 4 characters a token (costs.py), the
# one estimate of the package, so a sample near the limit is flagged by estimate, not counted.
NOVA_LIMITS: dict[str, NovaLimits] = {
    "micro": NovaLimits(min_samples=8, max_samples=20_000, context_tokens=32_000, takes_media=False),
    "lite": NovaLimits(min_samples=8, max_samples=20_000, context_tokens=32_000, takes_media=True),
    "pro": NovaLimits(min_samples=8, max_samples=20_000, context_tokens=32_000, takes_media=True),
}
# Without --model the tightest limits of the three hold.
DEFAULT_LIMITS = NovaLimits(
    min_samples=max(limits.min_samples for limits in NOVA_LIMITS.values()),
    max_samples=min(limits.max_samples for limits in NOVA_LIMITS.values()),
    context_tokens=min(limits.context_tokens for limits in NOVA_LIMITS.values()),
    takes_media=True,
)
MAX_IMAGES_PER_SAMPLE = 10  # [guide] "Maximum images: 10/sample"

# [guide] item 12 lists User:, Bot:, Assistant:, System:, <image>, <video> and [EOS] as
# reserved keywords that may appear nowhere in a prompt; [script] INVALID_TOKENS_TEXT adds the
# upper-case forms and "Thought:", and checks every text block, assistant turns included.
RESERVED_KEYWORDS = (
    "System:", "SYSTEM:", "User:", "USER:", "Bot:", "BOT:", "Assistant:", "ASSISTANT:",
    "Thought:", "[EOS]", "<image>", "<video>",
)  # fmt: skip

# [script] IMAGE_FORMATS, VIDEO_FORMATS, MAX_NUM_IMAGES ([guide]: the same formats)
IMAGE_FORMATS = ("jpeg", "png", "gif", "webp")
VIDEO_FORMATS = ("mov", "mkv", "mp4", "webm")
MAX_IMAGES_PER_MESSAGE = 10

# [guide] item 3: file names may hold only letters, digits, underscores, hyphens, slashes, dots.
FILE_NAME_PATTERN = re.compile(r"^[\w\-/.]+$", re.ASCII)
S3_URI_PATH_PATTERN = re.compile(r"^[\w\-/.]+$", re.ASCII)  # [script] is_valid_path


@dataclass(frozen=True)
class Problem:
    """One rule broken. line is 1-based; 0 means the file as a whole (name, sample count)."""

    line: int
    message: str


def format_problems(problems: list[Problem], path: str | Path) -> str:
    """`path:LINE: message`, one a line (`path: message` for file-wide problems)."""
    return "\n".join(f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}" for p in problems)


def _reserved_in(text: str) -> list[str]:
    return [keyword for keyword in RESERVED_KEYWORDS if keyword in text]


def _check_text(text: Any, where: str) -> list[str]:
    if not isinstance(text, str):
        return [f"{where}: 'text' must be a string"]
    found = _reserved_in(text)
    if found:
        listed = ", ".join(f"'{keyword}'" for keyword in found)
        return [f"{where}: reserved keyword {listed} (Nova rejects these anywhere in a text; reword it)"]
    return []


def _check_media(block: dict[str, Any], kind: str, where: str) -> list[str]:
    """An image or video block: {"format": ..., "source": {"s3Location": {"uri": "s3://..."}}}."""
    media = block[kind]
    allowed = IMAGE_FORMATS if kind == "image" else VIDEO_FORMATS
    if not isinstance(media, dict):
        return [f"{where}: '{kind}' must be an object with 'format' and 'source'"]
    problems = []
    media_format = media.get("format")
    if not isinstance(media_format, str) or media_format.lower() not in allowed:
        problems.append(f"{where}: {kind} format {media_format!r} is not one of {', '.join(allowed)}")
    source = media.get("source")
    uri = source.get("s3Location", {}).get("uri") if isinstance(source, dict) and isinstance(source.get("s3Location"), dict) else None
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        problems.append(f"{where}: {kind} needs source.s3Location.uri starting with 's3://'")
    elif not S3_URI_PATH_PATTERN.match(uri[len("s3://") :]):
        problems.append(f"{where}: {kind} uri may hold only letters, digits, '_', '-', '/' and '.'")
    return problems


def _check_message(message: Any, index: int, model: str | None, modalities: set[str]) -> list[str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return [f"{where}: must be an object with 'role' and 'content'"]
    problems = []
    role = message.get("role")
    if role not in ("user", "assistant"):
        # [guide] item 7: the supported roles are user and assistant; a system prompt goes in
        # the top-level 'system' list (item 6).
        hint = " (put a system prompt in the top-level 'system' list)" if role == "system" else ""
        problems.append(f"{where}: role {role!r} is not 'user' or 'assistant'{hint}")
    content = message.get("content")
    if not isinstance(content, list) or not content:
        # Our reading of the content shape that both sources use: a non-empty list of blocks.
        shape = (
            "a string"
            if isinstance(content, str)
            else "empty"
            if content == []
            else "missing"
            if content is None
            else type(content).__name__
        )
        return problems + [f'{where}: \'content\' must be a non-empty list of blocks like {{"text": "..."}}, got {shape}']
    text_chars = 0
    images = videos = 0
    for block_index, block in enumerate(content):
        block_where = f"{where}.content[{block_index}]"
        if not isinstance(block, dict) or not any(key in block for key in ("text", "image", "video")):
            problems.append(f"{block_where}: a block must hold 'text', 'image' or 'video'")
            continue
        if "text" in block:
            problems += _check_text(block["text"], block_where)
            text_chars += len(block["text"].strip()) if isinstance(block["text"], str) else 0
        for kind in ("image", "video"):
            if kind in block:
                problems += _check_media(block, kind, block_where)
                modalities.add(kind)
        images += "image" in block
        videos += "video" in block
    if images or videos:
        if role == "assistant":
            problems.append(f"{where}: an assistant turn cannot hold an image or video")  # [script]
        if model is not None and not NOVA_LIMITS[model].takes_media:
            problems.append(f"{where}: Nova {model.capitalize()} takes text only, not images or video")  # [script]
        if images and videos:
            problems.append(f"{where}: a message cannot hold both images and a video")  # [guide] 4.1
        if images > MAX_IMAGES_PER_MESSAGE:
            problems.append(f"{where}: {images} images, more than the {MAX_IMAGES_PER_MESSAGE} allowed")  # [script]
    elif text_chars == 0:
        # [script] rejects empty text; we also count whitespace-only text as empty.
        problems.append(f"{where}: empty message (no text)")
    return problems


def _check_roles_order(messages: list[Any]) -> list[str]:
    """[guide] item 8: the first turn is the user's, the last the assistant's; [script]
    check_roles_order: at least one of each, strictly alternating."""
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if len(roles) < 2:
        return ["'messages' needs at least a user turn followed by an assistant turn"]
    problems = []
    if roles[0] != "user":
        problems.append(f"the first turn must be 'user', got {roles[0]!r}")
    for index in range(1, len(roles)):
        if roles[index] in ("user", "assistant") and roles[index] == roles[index - 1]:
            problems.append(f"messages[{index}]: two '{roles[index]}' turns in a row; user and assistant must alternate")
    if roles[-1] != "assistant":
        problems.append(f"the last turn must be 'assistant', got {roles[-1]!r}")
    return problems


def check_sample(sample: Any, model: str | None = None, modalities: set[str] | None = None) -> list[str]:
    """Every problem with one parsed sample, as messages without a line number. `modalities`
    collects the media kinds seen, for the file-wide check that a dataset does not mix them."""
    modalities = set() if modalities is None else modalities
    if not isinstance(sample, dict):
        return ["a sample must be a JSON object with 'messages'"]
    problems = []
    if "schemaVersion" in sample and not isinstance(sample["schemaVersion"], str):
        # [guide] item 5: "schemaVersion can be any string value"; anything else is wrong.
        problems.append(f"'schemaVersion' must be a string (e.g. \"bedrock-conversation-2024\"), got {json.dumps(sample['schemaVersion'])}")
    if "system" in sample:
        system = sample["system"]
        if not isinstance(system, list) or not all(isinstance(block, dict) and "text" in block for block in system):
            problems.append('\'system\' must be a list of blocks like {"text": "..."}')
        else:
            for index, block in enumerate(system):
                problems += _check_text(block["text"], f"system[{index}]")
    messages = sample.get("messages")
    if messages is None:
        return problems + ["'messages' is missing"]
    if not isinstance(messages, list):
        return problems + ["'messages' must be a list of turns"]
    problems += _check_roles_order(messages)
    for index, message in enumerate(messages):
        problems += _check_message(message, index, model, modalities)
    videos = sum(
        1
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and "video" in b
    )
    if videos > 1:
        problems.append(f"{videos} videos in one sample; at most one is allowed")  # [guide] 4.3
    images = sum(
        1
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and "image" in b
    )
    if images > MAX_IMAGES_PER_SAMPLE:
        problems.append(f"{images} images in one sample; at most {MAX_IMAGES_PER_SAMPLE} are allowed")  # [guide] Dataset constraints
    limits = NOVA_LIMITS[model] if model is not None else DEFAULT_LIMITS
    sample_tokens = _sample_tokens(sample)
    if sample_tokens > limits.context_tokens:
        who = f"Nova {model.capitalize()}'s" if model else "Nova's"
        problems.append(
            f"about {sample_tokens:,} tokens (at 4 characters a token), over {who} context length of {limits.context_tokens:,} "
            "for one sample (the Nova user guide's Dataset constraints); shorten or split it"
        )
    return problems


def _sample_tokens(sample: dict[str, Any]) -> int:
    """The estimated tokens of one sample: its system prompt and every text of its turns."""
    texts = (
        [block.get("text") for block in sample.get("system", []) if isinstance(block, dict)]
        if isinstance(sample.get("system"), list)
        else []
    )
    for message in sample.get("messages", []) if isinstance(sample.get("messages"), list) else []:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            texts += [block.get("text") for block in message["content"] if isinstance(block, dict)]
    return sum(count_tokens_estimate(text) for text in texts if isinstance(text, str))


def validate_nova_file(path: str | Path, model: str | None = None) -> list[Problem]:
    """Every problem in a Nova fine-tuning JSONL file, in line order. A missing file is a
    UserError; an empty list means the file passes every rule checked here."""
    path = Path(path)
    if model is not None and model not in NOVA_LIMITS:
        raise UserError(f"unknown Nova model {model!r}; known: {', '.join(NOVA_LIMITS)}")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    problems: list[Problem] = []
    if path.suffix != ".jsonl":
        problems.append(Problem(0, "the file name must end in .jsonl"))  # [guide] item 3
    if not FILE_NAME_PATTERN.match(path.name):
        problems.append(Problem(0, "the file name may hold only letters, digits, '_', '-', '/' and '.'"))  # [guide] item 3
    sample_count = 0
    modalities: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                # [script] parses every line, so a blank line fails the job's parser too.
                problems.append(Problem(line_number, "blank line (every line must hold one JSON sample)"))
                continue
            sample_count += 1
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(Problem(line_number, f"malformed JSON: {error.msg} at column {error.colno}"))
                continue
            problems += [Problem(line_number, message) for message in check_sample(sample, model, modalities)]
    if {"image", "video"} <= modalities:
        problems.append(Problem(0, "the dataset mixes images and videos; use one media kind per dataset"))  # [guide] 4.1
    limits = NOVA_LIMITS[model] if model is not None else DEFAULT_LIMITS
    low, high = limits.min_samples, limits.max_samples
    who = f"Nova {model.capitalize()}" if model else "Nova"
    if sample_count < low:
        problems.append(Problem(0, f"{sample_count} samples; {who} fine-tuning needs at least {low}"))
    elif sample_count > high:
        problems.append(Problem(0, f"{sample_count} samples; {who} fine-tuning takes at most {high:,}"))
    return sorted(problems, key=lambda p: p.line)


def count_samples(path: str | Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def _first_row_is_chat(path: str | Path) -> bool:
    """Whether the file's first line is a chat record (a 'messages' list of strings), not Nova."""
    try:
        with open(path, encoding="utf-8") as handle:
            row = json.loads(next(line for line in handle if line.strip()))
    except (OSError, StopIteration, ValueError):
        return False
    return isinstance(row, dict) and "messages" in row and not is_nova_row(row)


def validate_command(path: str | Path, model: str | None = None) -> int:
    """`localnova validate FILE [--model micro|lite|pro]`: print every problem and return exit
    code 2 if there is any, else print `FILE: N samples, valid` and return 0."""
    if _first_row_is_chat(path):
        # a chat file is no Nova file: one line, not the same two problems on every line
        raise UserError(
            f"{path}: chat JSONL ({{'messages': [{{'role', 'content'}}]}}), not Nova's bedrock-conversation-2024 format; "
            "localnova converts chat files to Nova itself for a customization job, so there is nothing to validate here"
        )
    problems = validate_nova_file(path, model)
    if problems:
        print(format_problems(problems, path))
        print(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
        return 2
    print(f"{path}: {count_samples(path)} samples, valid")
    return 0

"""The training file of a Bedrock customization job: in Nova's format, checked by the Nova
validator with the base model's own rules, and its tokens counted as the job bills them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localnova.aws.availability import nova_family
from localnova.costs import count_tokens_estimate
from localnova.data.formats import is_nova_row, read_training_file, write_nova_jsonl
from localnova.data.nova_validator import validate_nova_file
from localnova.errors import UserError


def validator_model(base_model_id: str) -> str:
    """The Nova validator's name for a base model ('micro' for amazon.nova-micro-v1:0:128k)."""
    family = nova_family(base_model_id)
    if family is None:
        raise UserError(f"{base_model_id!r} is not a Nova model the validator knows")
    return family.removeprefix("nova-")


def validate_training_file(path: Path, model: str) -> None:
    """Run the Nova validator with `model`'s rules; one UserError naming the first problem
    and how many there are."""
    problems = list(validate_nova_file(path, model))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = problems[0]
        line = getattr(first, "line", 0)
        where = f"{path}:{line}" if line else str(path)
        raise UserError(f"{where}: fails the Nova validator: {getattr(first, 'message', first)}{more}")


def _first_row(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    raise UserError(f"{path}: the training file holds no records")


def nova_file(train_path: Path, work_dir: Path) -> Path:
    """The training file in Nova format: as given, or converted from chat JSONL."""
    if is_nova_row(_first_row(train_path)):
        return train_path
    nova_path = work_dir / f"{train_path.stem}.nova.jsonl"
    write_nova_jsonl(read_training_file(train_path), nova_path)
    return nova_path


def count_training_tokens(nova_path: Path) -> int:
    """The tokens one epoch trains on: every text block of the file as uploaded, the system
    prompts included (a customization job bills tokens x epochs)."""
    total = 0
    for line in nova_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        blocks = list(row.get("system", []))
        for message in row.get("messages", []):
            blocks += message.get("content", [])
        total += sum(
            count_tokens_estimate(block["text"]) for block in blocks if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return total

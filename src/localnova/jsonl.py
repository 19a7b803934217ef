"""Reading JSON Lines files: the one reader every JSONL input goes through, so each error
names the file and line the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localnova.errors import UserError


def read_json_lines(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line. A missing file, bytes that are not
    UTF-8, or a line that is not JSON is a UserError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((line_number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{line_number}: malformed JSON: {error.msg} at column {error.colno}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return rows

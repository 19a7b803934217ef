"""Writing a file so that a reader never sees half of it.

Every writer goes through a temporary file in the target's own folder (a rename is atomic
only within one file system) and renames it into place. A failure midway removes the
temporary file and leaves any earlier version of the target as it was. Files come out
0o644: mkstemp makes them private, and study results are for sharing.

Standard library only: this module sits on the bottom floor, below everything that writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write (for writers that want a file
    name, such as faiss.write_index); when the block ends cleanly it becomes `path`, mode
    0o644, in one rename. On any exception it is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, fsync: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically. `fsync` also flushes it to the disk before
    the rename, for files whose loss in a power cut costs money (the Bedrock state file)."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        if fsync:
            out.flush()
            os.fsync(out.fileno())


def json_safe(value: Any) -> Any:
    """`value` with every NaN and infinity replaced by None, so that it is valid JSON (json.dumps
    writes NaN by default, which other JSON readers refuse). Tuples become lists and numpy
    scalars Python numbers (duck-typed: this module imports no numpy)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def json_text(value: Any) -> str:
    """Indented, valid JSON for a file that people and other programs read: NaN becomes null."""
    return json.dumps(json_safe(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> int:
    """Write one JSON value a line (UTF-8, not ASCII-escaped) to `path` atomically; returns
    the number of lines. Rows are streamed, so a long file is never held in memory twice."""
    count = 0
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n")
            count += 1
    return count

"""Rows of a data set in the forms people keep them: JSON Lines, CSV, Parquet, a Hugging Face
dataset folder on disk, or a dataset on the Hugging Face Hub (`hf:owner/name`).

Every reader yields (where, row) pairs: `where` names the file and the row the way an error
message shows it (`eval.csv:12` is the CSV's 12th line; `eval.parquet row 3` the third row),
and `row` is a plain dict. A field map (`fields` in the config) renames the source's columns
to the names localnova reads, so a user's own data needs no conversion step; `field_value`
reads one field and says, in one line naming the file, row and field, what is wrong with it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.jsonl import read_json_lines
from localnova.optional import require

HUB_PREFIX = "hf:"  # a path that starts so names a dataset on the Hugging Face Hub
# Files whose presence makes a folder one that `datasets.save_to_disk` wrote.
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
TABLE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    """One row of a data set: where it is (for error lines) and its columns."""

    where: str
    values: Mapping[str, Any]


def is_hub_dataset(path: str | Path) -> bool:
    return str(path).startswith(HUB_PREFIX)


def source_exists(path: str | Path) -> bool:
    """Whether a data source is there to read (a hub dataset is taken to be)."""
    return is_hub_dataset(path) or Path(path).exists()


def read_rows(path: str | Path, split: str | None = None, prefer: tuple[str, ...] = ("test", "train")) -> list[Row]:
    """Every row of the data set at `path`, in order. The form comes from the path: a hub id
    (`hf:owner/name`), a folder (a saved Hugging Face dataset, or a folder of data files that
    `datasets.load_dataset` reads), else the file's suffix. `split` picks one split of a
    dataset that has several (default: the only one, else the first of `prefer` it has)."""
    text = str(path)
    if is_hub_dataset(text):
        return _hub_rows(text[len(HUB_PREFIX) :], split, prefer)
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        return _folder_rows(path, split, prefer)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind == "jsonl":
        return [Row(f"{path}:{line}", _mapping(value, f"{path}:{line}")) for line, value in read_json_lines(path)]
    if kind in ("csv", "tsv"):
        return _csv_rows(path, "\t" if kind == "tsv" else ",")
    if kind == "parquet":
        return _parquet_rows(path)
    suffix = path.suffix or "(no suffix)"
    raise UserError(f"{path}: unknown data format {suffix}: expected .jsonl, .csv, .tsv, .parquet or a dataset folder")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object")
    return value


def _csv_rows(path: Path, delimiter: str) -> list[Row]:
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if not reader.fieldnames:
                raise UserError(f"{path}: no header row")
            start = 2  # the header is line 1
            for values in reader:
                if None in values:
                    raise UserError(f"{path}:{start}: more cells than the header has columns")
                rows.append(Row(f"{path}:{start}", values))
                start = reader.line_num + 1  # a quoted cell may span lines
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except csv.Error as error:
        raise UserError(f"{path}: malformed CSV: {error}") from None
    return rows


def _parquet_rows(path: Path) -> list[Row]:
    require("pyarrow", f"reading {path}")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a file that is no parquet
        raise UserError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None
    return [Row(f"{path} row {index}", values) for index, values in enumerate(table.to_pylist(), 1)]


def _pick_split(splits: list[str], split: str | None, prefer: tuple[str, ...], where: str) -> str:
    if split is not None:
        if split not in splits:
            raise UserError(f"{where}: no split {split!r}; it has {', '.join(splits)}")
        return split
    if len(splits) == 1:
        return splits[0]
    for preferred in prefer:
        if preferred in splits:
            return preferred
    raise UserError(f"{where}: several splits ({', '.join(splits)}); name one with the config's split key")


def _dataset_rows(dataset: Any, where: str, split: str | None, prefer: tuple[str, ...]) -> list[Row]:
    """Rows of a datasets.Dataset or DatasetDict (one split picked)."""
    if isinstance(dataset, dict):  # a DatasetDict is a dict of splits
        name = _pick_split(list(dataset.keys()), split, prefer, where)
        dataset, where = dataset[name], f"{where}[{name}]"
    return [Row(f"{where} row {index}", values) for index, values in enumerate(dataset.to_list(), 1)]


def _folder_rows(path: Path, split: str | None, prefer: tuple[str, ...]) -> list[Row]:
    require("datasets", f"reading the dataset folder {path}")
    import datasets

    try:
        if any((path / name).is_file() for name in SAVED_DATASET_FILES):
            dataset = datasets.load_from_disk(str(path))
        else:
            dataset = datasets.load_dataset(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"{path}: not a dataset folder datasets can read ({error})") from None
    return _dataset_rows(dataset, str(path), split, prefer)


def _hub_rows(name: str, split: str | None, prefer: tuple[str, ...]) -> list[Row]:
    require("datasets", f"reading the hub dataset {name}")
    import datasets

    try:
        dataset = datasets.load_dataset(name)
    except Exception as error:  # offline, unknown name, gated: each its own exception type
        raise UserError(f"{HUB_PREFIX}{name}: could not load it from the Hugging Face Hub ({type(error).__name__}: {error})") from None
    return _dataset_rows(dataset, f"{HUB_PREFIX}{name}", split, prefer)


def field_value(row: Row, field: str, fields: Mapping[str, str], kind: str = "text", required: bool = True) -> Any:
    """One field of a row, read from the column the field map names for it (or the field's own
    name). `kind` text: a non-empty string (numbers are taken as their text); list: a list of
    strings, or a JSON list or ';'-separated text in a CSV cell. None when optional and absent."""
    column = fields.get(field, field)
    label = f"field {field!r}" + (f" (column {column!r})" if column != field else "")
    value = row.values.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required:
            return None if kind == "text" else []
        present = ", ".join(str(key) for key in list(row.values)[:8])
        raise UserError(f"{row.where}: {label} is missing or empty (columns here: {present})")
    if kind == "text":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{row.where}: {label} must be text, not {type(value).__name__}")
        return str(value).strip()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise UserError(f"{row.where}: {label} is not a JSON list") from None
        else:
            value = [part.strip() for part in text.split(";") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise UserError(f"{row.where}: {label} must be a list of strings")
    return list(value)


def check_field_map(fields: Mapping[str, str], known: Iterable[str], key: str) -> None:
    """A field map may only rename the fields localnova reads."""
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise UserError(f"{key}: unknown field {unknown[0]!r}; the fields are {', '.join(known)}")


def source_fingerprint(path: str | Path) -> str:
    """A hash of a data source's content: a file's bytes, every file of a folder (by relative
    path), or for a hub dataset its name (its content is not known without loading it)."""
    if is_hub_dataset(path):
        return hashlib.sha256(str(path).encode()).hexdigest()
    path = Path(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()

"""Reading a config file before its schema checks it: the YAML, the `--set` overrides, one line
for a validation error, and where its paths point: a relative path written in a config file is
read from the file's own folder, so a config can name the data beside it and run from any folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from localnova.errors import UserError

# Where a config names files and folders: these are resolved from the config file's folder.
# Model ids (`model:`) are not: a hub id and a local path look alike.
PATH_KEYS = (
    ("output_dir",),
    ("corpus", "path"),
    ("eval", "path"),
    ("finetune", "train_path"),
    ("finetune", "validation_path"),
    ("gen_qa", "generator", "adapter"),
)


def _resolve_relative(value: Any, folder: Path) -> Any:
    """A relative path string as seen from the working folder, given that it was written
    relative to `folder`; anything else (absolute, a hub dataset, not a string) as it is."""
    if not isinstance(value, str) or not value or value.startswith("hf:") or Path(value).is_absolute():
        return value
    return os.path.normpath(folder / value)


def resolve_config_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config's relative paths, written relative to its own `folder`, rewritten as paths
    from the working folder (normalised: `configs/../data/x` is `data/x`). So a config names
    its data beside itself and runs from any folder; run from the folder above the config's
    (configs/demo.yaml from the repository), each path reads as before the rule existed and the
    run keeps its identity. `eval.findings` is resolved when it is a file name (a bundled set's
    name or none are left alone)."""
    for keys in PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = _resolve_relative(node[keys[-1]], folder)
    for section in ("models", "judges"):
        for entry in data.get(section) or []:
            model = entry.get("model") if section == "judges" and isinstance(entry, dict) else entry
            if isinstance(model, dict) and "adapter" in model:
                model["adapter"] = _resolve_relative(model["adapter"], folder)
    eval_section = data.get("eval")
    if isinstance(eval_section, dict):
        findings = eval_section.get("findings")
        if isinstance(findings, str) and findings.endswith((".yaml", ".yml")):
            eval_section["findings"] = _resolve_relative(findings, folder)
    return data


def parse_override_value(text: str) -> Any:
    """A --set value is read as YAML, so `3`, `true`, `[a, b]` and `null` get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; list items are addressed by index (`models.0.name`)."""
    for override in overrides:
        if "=" not in override:
            raise UserError(f"--set {override!r}: expected key.path=value")
        key_path, raw_value = override.split("=", 1)
        keys = key_path.strip().split(".")
        node: Any = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise UserError(f"--set {key_path}: {key!r} is not an index of the list at {'.'.join(keys[:depth]) or 'top'}")
                if last:
                    node[int(key)] = parse_override_value(raw_value)
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = parse_override_value(raw_value)
                else:
                    node = node.setdefault(key, {})
            else:
                raise UserError(f"--set {key_path}: {'.'.join(keys[:depth])} is not a section")
    return data


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line for a pydantic error: the source, the first problem's key path and what is
    wrong with it, and how many more problems there are."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "missing required key"
    else:
        message = first["msg"]
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {location}: {message}{suffix}"


def load_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """A YAML document whose top level is a mapping; anything else is one line naming `source`
    (and the line the parser stopped at)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{source}{where}: malformed YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of keys at the top level")
    return data

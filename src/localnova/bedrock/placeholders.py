"""Placeholders a shipped config holds until the user replaces them: they block a real run.

configs/bedrock-nova.yaml names a role, a bucket and a vector index that do not exist
(`replace-with-your-bucket`, `.../role/replace-with-your-bedrock-service-role`, ...). A real run
with one of them left would only fail at AWS, after the preflight's calls; here each is found by
its key before anything, and the dry run lists them, so a user knows what `localnova bedrock
setup CONFIG` is for before they need it.
"""

from __future__ import annotations

import re
from typing import Any

from localnova.config import StudyConfig
from localnova.errors import UserError

# A value segment (after /, :, or at the start) that begins "replace-", or a value in <...>.
PLACEHOLDER = re.compile(r"(?:^|[/:])replace-|^<[^>]*>$", re.IGNORECASE)


def _walk(value: Any, key: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [found for name, item in value.items() for found in _walk(item, f"{key}.{name}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _walk(item, f"{key}[{index}]")]
    if isinstance(value, str) and PLACEHOLDER.search(value):
        return [(key, value)]
    return []


def placeholders(config: StudyConfig) -> list[tuple[str, str]]:
    """(config key, value) of every placeholder left in the bedrock section."""
    if config.bedrock is None:
        return []
    return _walk(config.bedrock.model_dump(), "bedrock")


def setup_hint(config_path: str = "CONFIG") -> str:
    return f"`localnova bedrock setup {config_path}` prints the policies and the AWS CLI commands that make them"


def check_no_placeholders(config: StudyConfig) -> None:
    """One UserError naming every placeholder left in the config: a real run needs real values."""
    found = placeholders(config)
    if found:
        named = "; ".join(f"{key}: {value!r}" for key, value in found)
        raise UserError(f"{found[0][0]}: the config still holds {len(found)} placeholder(s) ({named}); {setup_hint()}")


def placeholder_lines(config: StudyConfig) -> list[str]:
    """The dry run's lines: which placeholders would block a real run."""
    found = placeholders(config)
    if not found:
        return []
    lines = [f"A real run is blocked until these {len(found)} placeholder(s) are replaced ({setup_hint()}):"]
    return lines + [f"  {key}: {value}" for key, value in found]

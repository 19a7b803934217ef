"""Names and tokens of the AWS resources a study creates, built so that they never collide.

Every name starts with a hash of what makes the resource unique (study, model, data,
hyperparameters, attempt), then carries the study and model names for people to read. Names
are cut to the operation's length limit from the end, so the hash always survives: two studies
or two models that share a long prefix still get different names.

The limits and character rules are those of botocore's service models (pattern and max of each
name member); tests/test_bedrock_names.py reads them from botocore and checks every name built
here against them. All the name patterns accept letters, digits and single hyphens, starting
and ending with a letter or digit, which is what `clean_name` produces.
"""

from __future__ import annotations

import re
from typing import Any

from localnova.types import stable_hash

# (service, operation, member) -> the member's max length in botocore's model.
NAME_LIMITS: dict[tuple[str, str, str], int] = {
    ("bedrock", "CreateModelCustomizationJob", "jobName"): 63,
    ("bedrock", "CreateModelCustomizationJob", "customModelName"): 63,
    ("bedrock", "CreateProvisionedModelThroughput", "provisionedModelName"): 63,
    ("bedrock", "CreateCustomModelDeployment", "modelDeploymentName"): 63,
    ("bedrock-agent", "CreateKnowledgeBase", "name"): 100,
    ("bedrock-agent", "CreateDataSource", "name"): 100,
}
NAME_HASH_CHARS = 10
TOKEN_CHARS = 40  # client tokens: hex, within every operation's 33-256 characters


def clean_name(text: str, max_chars: int) -> str:
    """Letters and digits joined by single hyphens, at most `max_chars` long."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    return cleaned[:max_chars].rstrip("-")


def resource_name(limit_key: tuple[str, str, str], identity: Any, *readable: str) -> str:
    """`<hash>-<readable parts>`, cleaned to the operation's rules; the hash comes first so a
    cut never removes what tells two resources apart."""
    digest = stable_hash(identity, NAME_HASH_CHARS)
    return clean_name("-".join([digest, *readable]), NAME_LIMITS[limit_key])


def client_token(identity: Any) -> str:
    return stable_hash(identity, TOKEN_CHARS)


HASH_FIRST = re.compile(rf"^[0-9a-f]{{{NAME_HASH_CHARS}}}-(.+)$")


def is_hash_first(name: str) -> bool:
    """Whether a name has this tool's shape: a hash of NAME_HASH_CHARS hex digits, a hyphen, words."""
    return HASH_FIRST.match(name) is not None


def names_study(name: str, study: str) -> bool:
    """Whether a hash-first name carries `study` right after its hash (or the start of it, where
    the name was cut at its limit). Names of two studies where one's name starts the other's
    both pass; the resource's tag tells them apart."""
    match = HASH_FIRST.match(name)
    if match is None:
        return False
    rest, wanted = match.group(1), clean_name(study, 256)
    return rest == wanted or rest.startswith(f"{wanted}-") or (len(name) >= 60 and wanted.startswith(rest))

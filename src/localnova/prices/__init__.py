"""The dated price file (bedrock.yaml, beside this module) and its reader.

Each figure in the file says where it was read and when; `verified: false` marks one that no
primary page confirmed. Plain Python and PyYAML: no boto3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from localnova.errors import UserError


def price_key(model_id: str) -> str:
    """The price-file key of a model id: 'us.amazon.nova-micro-v1:0' and
    'amazon.nova-micro-v1:0:128k' both become 'amazon.nova-micro-v1:0'."""
    key = re.sub(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.", "", model_id.strip())
    key = re.sub(r":\d+k$", "", key)
    if key.startswith("arn:"):
        match = re.search(r"(?:foundation-model|inference-profile)/(.+)$", key)
        key = price_key(match.group(1)) if match else key
    return key


@dataclass(frozen=True)
class PriceBook:
    data: dict[str, Any]
    path: str

    @property
    def read_on(self) -> str:
        return str(self.data.get("read_on", "unknown"))

    def token_prices(self, model_id: str) -> dict[str, Any] | None:
        return self.data.get("models", {}).get(price_key(model_id))

    def customization(self, model_id: str) -> dict[str, Any] | None:
        return self.data.get("customization", {}).get(price_key(model_id))

    def provisioned(self, model_id: str) -> dict[str, Any] | None:
        return self.data.get("hosting", {}).get("provisioned_per_unit_hour", {}).get(price_key(model_id))

    @property
    def embedding_model(self) -> str:
        return str(self.data.get("knowledge_base", {}).get("embedding_model", "amazon.titan-embed-text-v2:0"))


def load_prices(path: str | Path | None = None) -> PriceBook:
    """The price file shipped with the package, or another one."""
    if path is None:
        text = resources.files("localnova").joinpath("prices/bedrock.yaml").read_text(encoding="utf-8")
        where = "localnova/prices/bedrock.yaml"
    else:
        if not Path(path).is_file():
            raise UserError(f"{path}: price file not found")
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "models" not in data:
        raise UserError(f"{where}: not a price file (expected a 'models' section)")
    return PriceBook(data, where)

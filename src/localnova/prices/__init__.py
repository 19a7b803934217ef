"""The dated price file (bedrock.yaml, beside this module) and its reader.

Each figure in the file says where it was read and when; `verified: false` marks one that no
primary page confirmed. A model's price follows the route a call takes: an entry may give a
`regional_profile` price for calls through a regional cross-region inference profile (us.,
eu., apac., ...), which for some models costs more than the global profile or the model's
own id. Prices a study config sets (bedrock.prices) are laid over the file and say so.
Plain Python and PyYAML: no boto3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from localnova.errors import UserError

PROFILE_PREFIX = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")
GLOBAL_PROFILE = "global"
CONFIG_PRICE_SOURCE = "bedrock.prices in the study config"


def price_key(model_id: str) -> str:
    """The price-file key of a model id: 'us.amazon.nova-micro-v1:0' and
    'amazon.nova-micro-v1:0:128k' both become 'amazon.nova-micro-v1:0'."""
    key = PROFILE_PREFIX.sub("", model_id.strip())
    key = re.sub(r":\d+k$", "", key)
    if key.startswith("arn:"):
        match = re.search(r"(?:foundation-model|inference-profile)/(.+)$", key)
        key = price_key(match.group(1)) if match else key
    return key


def route_of_id(model_id: str) -> str:
    """'regional profile' (us.anthropic...), 'global profile' (global.anthropic...) or 'model'
    (the model's own id in one region), for an id or an inference profile ARN."""
    tail = model_id.rsplit("inference-profile/", 1)[-1] if model_id.startswith("arn:") else model_id
    match = PROFILE_PREFIX.match(tail)
    if match is None:
        return "model"
    return "global profile" if match.group(1) == GLOBAL_PROFILE else "regional profile"


@dataclass(frozen=True)
class PriceBook:
    data: dict[str, Any]
    path: str

    @property
    def read_on(self) -> str:
        return str(self.data.get("read_on", "unknown"))

    def token_prices(self, model_id: str) -> dict[str, Any] | None:
        """The per-1k prices of a call to `model_id` by the route that id takes; None when the
        file (and the config) has no price for the model."""
        entry = self.data.get("models", {}).get(price_key(model_id))
        if entry is None:
            return None
        regional = entry.get("regional_profile")
        if regional and route_of_id(model_id) == "regional profile":
            return {**entry, **regional, "route": "regional profile"}
        return entry

    def customization(self, model_id: str) -> dict[str, Any] | None:
        return self.data.get("customization", {}).get(price_key(model_id))

    def provisioned(self, model_id: str) -> dict[str, Any] | None:
        return self.data.get("hosting", {}).get("provisioned_per_unit_hour", {}).get(price_key(model_id))

    def s3_per_gb_month(self) -> dict[str, Any] | None:
        return self.data.get("s3", {}).get("standard_per_gb_month")

    @property
    def embedding_model(self) -> str:
        return str(self.data.get("knowledge_base", {}).get("embedding_model", "amazon.titan-embed-text-v2:0"))

    def with_prices(self, prices: dict[str, Any]) -> "PriceBook":
        """This book with a config's prices (model id -> input_per_1k, output_per_1k) laid over
        it, each marked as the config's and unverified. A price keyed by a regional profile id
        (us.anthropic...) prices the calls through regional profiles only, the model's other
        routes keeping the file's; a price keyed by the model's own id keeps the route uplift the
        file gives its regional profile (Claude Sonnet 4.5: +10%), so setting a model's price
        does not quietly drop what its regional route costs more."""
        if not prices:
            return self
        models = dict(self.data.get("models", {}))
        for model_id, price in prices.items():
            values = price if isinstance(price, dict) else price.model_dump()
            given = {"input_per_1k": float(values["input_per_1k"]), "output_per_1k": float(values.get("output_per_1k", 0.0))}
            mark = {"source": CONFIG_PRICE_SOURCE, "verified": False, "note": f"price set in the config (bedrock.prices: {model_id})"}
            key = price_key(model_id)
            shipped = models.get(key)
            if route_of_id(model_id) == "regional profile":
                models[key] = {**(shipped or {**given, **mark}), "regional_profile": {**given, **mark}}
                continue
            entry = {**given, **mark}
            regional = (shipped or {}).get("regional_profile")
            if regional and shipped and shipped.get("input_per_1k") and shipped.get("output_per_1k"):
                up_in = float(regional["input_per_1k"]) / float(shipped["input_per_1k"])
                up_out = float(regional["output_per_1k"]) / float(shipped["output_per_1k"])
                entry["regional_profile"] = {
                    "input_per_1k": given["input_per_1k"] * up_in,
                    "output_per_1k": given["output_per_1k"] * up_out,
                    **mark,
                    "note": f"price set in the config (bedrock.prices: {model_id}) x the price file's regional uplift "
                    f"({(up_in - 1) * 100:+.0f}% in, {(up_out - 1) * 100:+.0f}% out)",
                }
            models[key] = entry
        return PriceBook({**self.data, "models": models}, f"{self.path} + {CONFIG_PRICE_SOURCE}")


VECTOR_STORE_NOTE = "OpenSearch Serverless bills per OCU-hour even when idle (a minimum of OCUs); S3 Vectors per GB and per query"
VECTOR_STORE_KEYS = ("vector_store_usd_per_month", "vector_store_billed_elsewhere")


@dataclass(frozen=True)
class VectorStorePrice:
    """What the Knowledge Base's vector store costs, as the config says (bedrock.knowledge_base):
    a price a month (vector_store_usd_per_month), billed elsewhere (vector_store_billed_elsewhere:
    true, e.g. a collection other studies share), or neither: unpriced, which the estimate
    refuses. The price file has no figure for it: a store bills on its own terms."""

    usd_per_month: float | None = None
    billed_elsewhere: bool = False

    @classmethod
    def from_settings(cls, kb: dict[str, Any]) -> "VectorStorePrice":
        """From a study's bedrock.knowledge_base settings; a bad value is one UserError."""
        price, elsewhere = kb.get("vector_store_usd_per_month"), kb.get("vector_store_billed_elsewhere", False)
        key = "bedrock.knowledge_base"
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price < 0):
            raise UserError(f"{key}.vector_store_usd_per_month: {price!r} is not a price (USD a month, 0 or more)")
        if not isinstance(elsewhere, bool):
            raise UserError(f"{key}.vector_store_billed_elsewhere: {elsewhere!r} is not true or false")
        if price is not None and elsewhere:
            raise UserError(f"{key}: give vector_store_usd_per_month or vector_store_billed_elsewhere: true, not both")
        return cls(None if price is None else float(price), elsewhere)

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> "VectorStorePrice":
        """The price written down with a Knowledge Base in the state file (cleanup has no config)."""
        price = details.get("vector_store_usd_per_month")
        return cls(None if price is None else float(price), bool(details.get("vector_store_billed_elsewhere", False)))

    def to_details(self) -> dict[str, Any]:
        return {"vector_store_usd_per_month": self.usd_per_month, "vector_store_billed_elsewhere": self.billed_elsewhere}

    def describe(self) -> str:
        if self.billed_elsewhere:
            return "no charge of its own; its vector store is billed elsewhere, as the config says"
        if self.usd_per_month is not None:
            return f"no charge of its own; its vector store ${self.usd_per_month:,.2f} a month, as the config prices it"
        return f"no charge of its own; its vector store is unpriced and bills on its own terms ({VECTOR_STORE_NOTE})"


@lru_cache(maxsize=1)
def _shipped_prices() -> PriceBook:
    text = resources.files("localnova").joinpath("prices/bedrock.yaml").read_text(encoding="utf-8")
    return _parse(text, "localnova/prices/bedrock.yaml")


def load_prices(path: str | Path | None = None) -> PriceBook:
    """The price file shipped with the package (read once per process), or another one."""
    if path is None:
        return _shipped_prices()
    if not Path(path).is_file():
        raise UserError(f"{path}: price file not found")
    return _parse(Path(path).read_text(encoding="utf-8"), str(path))


def _parse(text: str, where: str) -> PriceBook:
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "models" not in data:
        raise UserError(f"{where}: not a price file (expected a 'models' section)")
    return PriceBook(data, where)

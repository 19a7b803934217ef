"""What a Bedrock study has spent so far, read from its state file and its store.

Resources: each customization job's training tokens times epochs (from when the job exists),
a month of storage for each custom model, and every provisioned throughput's started hours
from its creation to its deletion (or to now, while it lives). Tokens: every generation the
store holds for a Bedrock model, answers and judges alike, at the price file's rates; answers
through a provisioned throughput are paid by its hours, not per token.

The study recomputes the resource part whenever a resource changes and seeds the SpendGuard
with all of it, so a rerun after a budget stop starts from what was already paid.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from localnova.aws.state import BedrockState
from localnova.config import StudyConfig
from localnova.costs import STORAGE_MONTHS, PriceBook, load_prices


def _hours_between(start: str, end: str | None) -> float:
    started = datetime.fromisoformat(start)
    ended = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return max(0.0, (ended - started).total_seconds() / 3600.0)


def resource_spend(state: BedrockState, config: StudyConfig, prices: PriceBook | None = None) -> dict[str, float]:
    """USD per kind of resource (training, storage, hosting) this study's state file lists."""
    prices = prices or load_prices()
    base_of = {m.name: (m.customization_model or m.model) for m in config.models}
    spend = {"training": 0.0, "storage": 0.0, "hosting": 0.0}
    for job in state.all_of("customization_job"):
        entry = prices.customization(base_of.get(str(job.details.get("model")), ""))
        if entry and job.details.get("job_status") not in ("Stopped",):
            spend["training"] += int(job.details.get("training_tokens", 0)) * config.finetune.epochs / 1000 * entry["train_per_1k"]
    for model in state.all_of("custom_model"):
        name = str(model.key).split(":", 1)[-1]
        entry = prices.customization(base_of.get(name, ""))
        spend["storage"] += STORAGE_MONTHS * entry["storage_per_month"] if entry else 0.0
    for throughput in state.all_of("provisioned_throughput"):
        name = str(throughput.key).split(":", 1)[-1]
        rate = prices.provisioned(base_of.get(name, ""))
        hours = math.ceil(_hours_between(throughput.created_at, throughput.deleted_at or None))
        units = int(throughput.details.get("model_units", 1))
        spend["hosting"] += max(1, hours) * units * rate["no_commitment"] if rate else 0.0
    return {kind: round(usd, 6) for kind, usd in spend.items()}


def price_ids(config: StudyConfig, custom_model_arns: dict[str, str]) -> dict[str, str | None]:
    """The price-file id of each model id the study calls: a custom model (the ft arms' id)
    is priced as its base model on demand, and not per token (None) on provisioned throughput."""
    hosting = config.bedrock.hosting if config.bedrock else "on_demand"
    ids: dict[str, str | None] = {}
    for model in config.models:
        if model.name in custom_model_arns:
            ids[custom_model_arns[model.name]] = (model.customization_model or model.model) if hosting == "on_demand" else None
    return ids


def token_spend(usage: list[tuple[dict[str, Any], int, int]], ids: dict[str, str | None], prices: PriceBook | None = None) -> float:
    """USD of the stored Bedrock generations (store.generation_usage()), priced through `ids`
    (see price_ids; a model id not in it is its own price id)."""
    prices = prices or load_prices()
    total = 0.0
    for identity, input_tokens, output_tokens in usage:
        model_id = str(identity.get("model", ""))
        price_id = ids.get(model_id, model_id)
        if identity.get("backend") != "bedrock" or price_id is None:
            continue
        entry = prices.token_prices(price_id)
        if entry is not None:
            total += input_tokens / 1000 * entry["input_per_1k"] + output_tokens / 1000 * entry["output_per_1k"]
    return round(total, 6)

"""What a Bedrock study has spent so far, read from its state file and its store.

Resources, from the state file, each from the moment it is written down (before its create
call), so nothing the account may have made goes uncounted:
- training: each customization job's tokens (counted in the file actually uploaded) x epochs;
- storage: a month of custom model storage for each job that did not fail or stop;
- hosting: each provisioned throughput's started hours, from its entry to its deletion (or to
  this moment, while it lives), at the price per hour it was written down with;
- ingestion: the corpus tokens each Knowledge Base ingestion embeds;
- vector store: a month of it for each Knowledge Base the study made, at the price the config
  gave it (nothing when billed elsewhere; an unpriced one never gets this far);
- calls the store does not hold: retrieve calls, and calls whose answer never came (AWS may
  have billed them).
Tokens: every generation the store holds for a Bedrock model, answers and judges alike, at the
price of the route each was called by; answers through a provisioned throughput are paid by
its hours, not per token.

The spend guard re-reads the resource part before every billable call, so an hour of hosting
that starts mid-run is counted at the next call.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from localnova.aws import state as state_clock
from localnova.aws.state import ABSENT, BedrockState
from localnova.config import StudyConfig
from localnova.costs import STORAGE_MONTHS, PriceBook, prices_for

FAILED_JOB_STATUSES = ("Failed", "Stopped")


def _hours_between(start: str, end: str | None) -> float:
    started = datetime.fromisoformat(start)
    ended = datetime.fromisoformat(end) if end else state_clock.now()
    return max(0.0, (ended - started).total_seconds() / 3600.0)


def resource_spend(state: BedrockState, config: StudyConfig, prices: PriceBook | None = None) -> dict[str, float]:
    """USD per kind (training, storage, hosting, ingestion, vector_store, other_calls) the state file lists."""
    prices = prices or prices_for(config)
    base_of = {m.name: (m.customization_model or m.model) for m in config.models}
    spend = {"training": 0.0, "storage": 0.0, "hosting": 0.0, "ingestion": 0.0, "vector_store": 0.0, "other_calls": 0.0}
    for job in state.all_of("customization_job"):
        if job.status == ABSENT:
            continue
        entry = prices.customization(str(job.details.get("base_model") or base_of.get(str(job.details.get("model")), "")))
        if entry is None:
            continue
        epochs = int(job.details.get("epochs", config.finetune.epochs))
        spend["training"] += int(job.details.get("training_tokens", 0)) * epochs / 1000 * entry["train_per_1k"]
        if job.details.get("job_status") not in FAILED_JOB_STATUSES:
            spend["storage"] += STORAGE_MONTHS * entry["storage_per_month"]
    for throughput in state.all_of("provisioned_throughput"):
        if throughput.status == ABSENT:
            continue
        rate = throughput.hourly_usd
        if not rate:  # an entry written before prices were kept with it
            found = prices.provisioned(base_of.get(str(throughput.key).split(":", 1)[-1], ""))
            rate = found["no_commitment"] * int(throughput.details.get("model_units", 1)) if found else 0.0
        hours = math.ceil(_hours_between(throughput.created_at, throughput.deleted_at or None))
        spend["hosting"] += max(1, hours) * rate
    for source in state.all_of("data_source"):
        for ingestion in source.details.get("ingestions", []):
            entry = prices.token_prices(str(ingestion.get("embedding_model") or prices.embedding_model))
            spend["ingestion"] += int(ingestion.get("corpus_tokens", 0)) / 1000 * (entry["input_per_1k"] if entry else 0.0)
    for kb in state.all_of("knowledge_base"):
        if kb.status != ABSENT:
            spend["vector_store"] += STORAGE_MONTHS * float(kb.details.get("vector_store_usd_per_month") or 0.0)
    spend["other_calls"] = sum(float(call.get("cost_usd", 0.0)) for call in state.paid_calls)
    return spend


def price_ids(config: StudyConfig, custom_model_arns: dict[str, str], state: BedrockState | None = None) -> dict[str, str | None]:
    """The price-file id of each model id the study calls: a custom model (the ft arms' id)
    is priced as its base model on demand, and not per token (None) on provisioned throughput.
    With `state`, every custom model it lists counts too (earlier runs' answers are stored
    under theirs)."""
    hosting = config.bedrock.hosting if config.bedrock else "on_demand"
    arns = [(name, arn) for name, arn in custom_model_arns.items()]
    if state is not None:
        arns += [(str(entry.key).split(":", 1)[-1], entry.arn) for entry in state.all_of("custom_model") if entry.arn]
    ids: dict[str, str | None] = {}
    for model in config.models:
        for name, arn in arns:
            if name == model.name:
                ids[arn] = (model.customization_model or model.model) if hosting == "on_demand" else None
    return ids


def token_spend(usage: list[tuple[dict[str, Any], int, int]], ids: dict[str, str | None], prices: PriceBook) -> float:
    """USD of the stored Bedrock generations (store.generation_usage()), priced through `ids`
    (see price_ids; a model id not in it is its own price id) by the route each took."""
    total = 0.0
    for identity, input_tokens, output_tokens in usage:
        model_id = str(identity.get("model", ""))
        price_id = ids.get(model_id, model_id)
        if identity.get("backend") != "bedrock" or price_id is None:
            continue
        entry = prices.token_prices(price_id)
        if entry is not None:
            total += input_tokens / 1000 * entry["input_per_1k"] + output_tokens / 1000 * entry["output_per_1k"]
    return total

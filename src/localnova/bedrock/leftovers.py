"""What a study leaves in the account, with what each thing costs, as the lines a user reads.

The state file and the account (bedrock/inventory.py) are merged: a resource either names is
listed once, with where it was found; a kind the account could not be asked about is said, and
"nothing is left" is only said when every kind was asked. Each resource gets what it costs
while it is kept: provisioned throughput by the hour, custom model storage, S3 storage and the
vector store by the month; what has no charge of its own says so. The last line is the command
that deletes it all. Every way a Bedrock run ends prints these lines, so does every start that
finds something, and cleanup's question lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from localnova.aws.state import INTENDED, BedrockState, Resource
from localnova.bedrock.inventory import RUNNING_JOB_STATUSES, Held, Inventory
from localnova.costs import VectorStorePrice
from localnova.prices import PriceBook, price_key

FINISHED_JOB_STATUSES = ("Completed", "Failed", "Stopped")
# which inventory listing answers for which state type
ASKED_AS = {
    "provisioned_throughput": "provisioned throughputs",
    "custom_model_deployment": "custom model deployments",
    "customization_job": "customization jobs",
    "custom_model": "custom models",
    "knowledge_base": "knowledge bases",
    "data_source": "data sources",
    "s3_object": "S3 objects",
    "s3_prefix": "S3 objects",
}


@dataclass
class Left:
    """One thing left in the account, as a line names it."""

    type: str
    what: str
    cost: str
    hourly_usd: float = 0.0
    monthly_usd: float = 0.0
    found: str = "state file and account"  # or "state file" (the account not asked), "account only"
    identifiers: set[str] = field(default_factory=set)

    def line(self) -> str:
        where = "" if self.found == "state file and account" else f" [{self.found}]"
        return f"{self.what}: {self.cost}{where}"


def _money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 0.01 or usd == 0 else "under $0.01"


def _ids(resource: Resource) -> set[str]:
    return {value for value in (resource.arn, resource.id, resource.name) if value}


def _label(type_: str, primary: str, name: str) -> str:
    shown = f"{type_.replace('_', ' ')} {primary}"
    return f"{shown} ({name})" if name and name != primary else shown


def _storage_per_month(prices: PriceBook, base_model: str) -> float | None:
    entry = prices.customization(base_model) if base_model else None
    return float(entry["storage_per_month"]) if entry else None


def _hosting_left(type_: str, hourly: float | None) -> tuple[str, float]:
    if type_ == "custom_model_deployment":
        return "no hourly charge (its calls bill per token)", 0.0
    if hourly is None:
        return "bills by the hour (no price known for its model)", 0.0
    return f"{_money(hourly)} an hour until deleted", hourly


def _custom_model_left(prices: PriceBook, base_model: str) -> tuple[str, float]:
    monthly = _storage_per_month(prices, base_model)
    if monthly is None:
        return "stored by the month (no price known for its base model)", 0.0
    return f"{_money(monthly)} a month of storage", monthly


def _base_of(state: BedrockState, resource: Resource) -> str:
    if resource.details.get("base_model"):
        return str(resource.details["base_model"])
    job = next((r for r in state.resources if r.type == "customization_job" and r.client_token == resource.client_token), None)
    return str(job.details.get("base_model", "")) if job else ""


def _s3_left(prices: PriceBook, where: str, objects: int, size: int | None, found: str) -> Left:
    entry = prices.s3_per_gb_month()
    what = f"S3: {objects} object(s) under {where}"
    if size is None:
        return Left("s3_prefix", what, "stored by the month (sizes not known: the account was not asked)", found=found)
    monthly = size / 1e9 * float(entry["usd"]) if entry else 0.0
    cost = f"{size:,} bytes, {_money(monthly)} a month" if entry else f"{size:,} bytes, stored by the month"
    return Left("s3_prefix", what, cost, monthly_usd=monthly, found=found)


def _asked(inventory: Inventory | None, type_: str) -> bool:
    """Whether the account answered the listing that would show a resource of this type."""
    if inventory is None:
        return False
    labels = [ASKED_AS[type_]] + (["knowledge bases"] if type_ == "data_source" else [])
    return not any(line.startswith(label) for line in inventory.unasked for label in labels)


def what_is_left(
    state: BedrockState, inventory: Inventory | None, prices: PriceBook, vector_store: VectorStorePrice | None = None
) -> list[Left]:
    """Everything the study leaves in the account, from its state file and, when given, the
    account's own listing; each once, with its cost while kept."""
    held = list(inventory.held) if inventory is not None else []
    matched: set[int] = set()
    left: list[Left] = []
    s3_entries: list[Resource] = []
    for resource in state.live():
        found_in = [index for index, item in enumerate(held) if item.type == resource.type and item.identifiers() & _ids(resource)]
        matched.update(found_in)
        if resource.type.startswith("s3"):
            s3_entries.append(resource)
            continue
        if _asked(inventory, resource.type) and not found_in:
            continue  # the state calls it live; the account, asked, lists none
        found = "state file and account" if found_in else "state file"
        item = held[found_in[0]] if found_in else None
        line = _from_state(state, resource, item, prices, vector_store, found)
        if line is not None:
            left.append(line)
        running = resource.details.get("ingestion_running") if resource.type == "data_source" and inventory is None else ""
        if running:
            what = f"ingestion job {running} of knowledge base {resource.details.get('knowledge_base_id')}"
            left.append(Left("ingestion_job", what, "may still be running: it embeds the corpus once (counted) and ends by itself"))
    for index, item in enumerate(held):
        if index in matched or item.type == "s3_prefix":
            continue
        line = _from_account(item, prices, vector_store)
        if line is not None:
            left.append(line)
    s3_held = [item for item in held if item.type == "s3_prefix"]
    for item in s3_held:
        left.append(_s3_left(prices, item.name, int(item.details["objects"]), int(item.details["bytes"]), "state file and account"))
    if not s3_held and s3_entries and not _asked(inventory, "s3_object"):
        objects = [r for r in s3_entries if r.type == "s3_object"]
        prefixes = [r for r in s3_entries if r.type == "s3_prefix"]
        sizes = [r.details.get("bytes") for r in objects]
        size = sum(int(s) for s in sizes) if sizes and all(s is not None for s in sizes) and not prefixes else None
        buckets = sorted({str(r.details.get("bucket")) for r in s3_entries})
        keys = [str(r.details.get("key") or r.details.get("prefix") or "") for r in s3_entries]
        common = os.path.commonprefix(keys).rsplit("/", 1)[0] + "/" if "/" in os.path.commonprefix(keys) else ""
        where = f"s3://{', '.join(buckets)}/{common} (and {len(prefixes)} output prefix(es))"
        left.append(_s3_left(prices, where, len(objects), size, "state file"))
    return left


def _from_state(
    state: BedrockState, resource: Resource, item: Held | None, prices: PriceBook, vector_store: VectorStorePrice | None, found: str
) -> Left | None:
    type_ = resource.type
    primary = resource.arn or resource.id or resource.name
    what = _label(type_, primary, resource.name)
    if resource.status == INTENDED:
        found = "its create answer was lost; not yet found in the account"
    if type_ in ("provisioned_throughput", "custom_model_deployment"):
        hourly = resource.hourly_usd if resource.hourly_usd or type_ == "custom_model_deployment" else None
        cost, rate = _hosting_left(type_, hourly)
        return Left(type_, what, cost, hourly_usd=rate, found=found, identifiers=_ids(resource))
    if type_ == "customization_job":
        status = item.status if item is not None else str(resource.details.get("job_status", ""))
        if status in FINISHED_JOB_STATUSES:
            return None
        storage = _storage_per_month(prices, str(resource.details.get("base_model", "")))
        after = f"; the custom model it makes will store at {_money(storage)} a month" if storage is not None else ""
        cost = f"{status or 'running'}: its training bills by the tokens it trains on (counted when it started){after}"
        return Left(type_, what, cost, found=found, identifiers=_ids(resource))
    if type_ == "custom_model":
        cost, monthly = _custom_model_left(prices, _base_of(state, resource))
        return Left(type_, what, cost, monthly_usd=monthly, found=found, identifiers=_ids(resource))
    if type_ == "knowledge_base":
        own = vector_store or VectorStorePrice.from_details(resource.details)
        return Left(type_, what, own.describe(), monthly_usd=own.usd_per_month or 0.0, found=found, identifiers=_ids(resource))
    if type_ == "data_source":
        return Left(type_, what, "no charge of its own (deleted with its Knowledge Base)", found=found, identifiers=_ids(resource))
    return None


def describe_held(item: Held, prices: PriceBook) -> str:
    """One resource the account holds, named with what it costs while kept (cleanup's lines)."""
    left = _from_account(item, prices, None)
    return left.line() if left is not None else f"{item.type.replace('_', ' ')} {item.arn or item.id or item.name}"


def _from_account(item: Held, prices: PriceBook, vector_store: VectorStorePrice | None) -> Left | None:
    what = _label(item.type, item.arn or item.id or item.name, item.name)
    found = "account only"
    if item.type == "provisioned_throughput":
        rate = prices.provisioned(price_key(str(item.details.get("base_model", ""))))
        hourly = float(rate["no_commitment"]) * int(item.details.get("model_units", 1)) if rate else None
        cost, hourly_usd = _hosting_left(item.type, hourly)
        return Left(item.type, what, f"{cost}, {item.status}", hourly_usd=hourly_usd, found=found, identifiers=item.identifiers())
    if item.type == "custom_model_deployment":
        cost, _ = _hosting_left(item.type, 0.0)
        return Left(item.type, what, cost, found=found, identifiers=item.identifiers())
    if item.type == "customization_job":
        if item.status not in RUNNING_JOB_STATUSES:
            return None
        return Left(
            item.type, what, f"{item.status}: its training bills by the tokens it trains on", found=found, identifiers=item.identifiers()
        )
    if item.type == "custom_model":
        cost, monthly = _custom_model_left(prices, str(item.details.get("base_model", "")))
        return Left(item.type, what, cost, monthly_usd=monthly, found=found, identifiers=item.identifiers())
    if item.type == "knowledge_base":
        own = vector_store or VectorStorePrice()
        return Left(item.type, what, own.describe(), monthly_usd=own.usd_per_month or 0.0, found=found, identifiers=item.identifiers())
    if item.type == "data_source":
        what = f"data source {item.id} of knowledge base {item.details.get('knowledge_base_id')}"
        return Left(item.type, what, "no charge of its own (deleted with its Knowledge Base)", found=found, identifiers=item.identifiers())
    if item.type == "ingestion_job":
        what = f"ingestion job {item.id} of knowledge base {item.details.get('knowledge_base_id')}"
        return Left(item.type, what, f"{item.status}: it embeds the corpus once (counted when it started) and ends by itself")
    return None


def left_lines(left: list[Left], inventory: Inventory | None, study: str, cleanup: str, why: str = "") -> list[str]:
    """The lines a user reads: each thing left with its cost, the totals and the command that
    deletes them; "nothing is left" only when the account was asked about every kind."""
    asked = "asked of the account and the state file" if inventory is not None else "from the state file alone"
    unasked = [] if inventory is None else inventory.unasked
    if inventory is None and why:
        asked += f" (the account could not be asked: {why})"
    if not left:
        if inventory is not None and not unasked:
            return [f"nothing is left in the account for study {study!r} ({asked})"]
        lines = [f"the state file lists nothing left for study {study!r}, but the account was not asked about everything:"]
        lines += [f"  not asked: {line}" for line in unasked]
        return lines + [f"  ask again with {cleanup}"]
    lines = [f"left in the account for study {study!r} ({asked}):"]
    lines += [f"  {item.line()}" for item in left]
    lines += [f"  not asked: {line}" for line in unasked]
    hourly, monthly = sum(item.hourly_usd for item in left), sum(item.monthly_usd for item in left)
    lines.append(f"  in all: {_money(hourly)} an hour and {_money(monthly)} a month while they are kept")
    lines.append(f"  delete them with {cleanup} (it lists them and asks first)")
    return lines

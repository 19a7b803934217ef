"""Prices and cost estimates for the Bedrock path.

Prices live in a dated file (prices/bedrock.yaml), each with its source and the day it was
read. `estimate_costs` turns token counts into a table per step (answers per arm and model,
judges, Knowledge Base embeddings, training, storage) and puts the two ways to host the
fine-tuned models side by side: on-demand (per token) and provisioned throughput (per model
unit hour). Every billable line names the config key of the model it prices, so a model the
price file lacks stops the estimate in one line naming that key (`check_every_cost_priced`);
the budget and the live guard are in budget.py. `spend_from_usage` reads what a run really
spent from the token counts Bedrock returned. Plain Python: no boto3, no model code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from localnova.config import FT_ARMS, BedrockConfig, ModelConfig, StudyConfig
from localnova.errors import UserError
from localnova.prices import VECTOR_STORE_KEYS, VECTOR_STORE_NOTE, PriceBook, VectorStorePrice, load_prices, price_key, route_of_id

# the price file's reader and the vector store's price live in localnova.prices
__all__ = ["VECTOR_STORE_KEYS", "PriceBook", "VectorStorePrice", "load_prices", "price_key"]

CHARS_PER_TOKEN = 4.0
HOSTING_CHOICES = ("on_demand", "provisioned")

# Provisioned throughput bills every started hour from creation to deletion. We assume it
# takes about half an hour to become ready and that a Bedrock call to a small Nova model
# takes about 2 s (the post's Nova Micro/Lite latencies were around 1 s); both are estimates.
PROVISIONED_SETUP_HOURS = 0.5
SECONDS_PER_REQUEST_ESTIMATE = 2.0
STORAGE_MONTHS = 1  # a study is short; custom model storage bills by the month, prorated


def count_tokens_estimate(text: str) -> int:
    """An estimate of the tokens in English text: about 4 characters a token. Not a tokenizer:
    real counts differ by model, by some tens of percent; the dry run labels its figures as
    estimates, and a real run reads the true counts back from Bedrock's `usage`.
    The one such estimate in the package: the simulated backend counts with it too."""
    # Empty text is 0 tokens, not 1: callers add up the fields of a request or a file (a
    # missing system prompt, an empty answer) and fixed per-message overheads separately, so
    # a floor of 1 would bill tokens for text that is not there. Any non-empty text is at
    # least 1 token, as a tokenizer would give it.
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


@dataclass
class Usage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, input_tokens: int, output_tokens: int, requests: int = 1) -> None:
        self.requests += requests
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens


@dataclass
class TokenCounts:
    """What the study will send and receive, per step (estimates in a dry run)."""

    answers: dict[tuple[str, str], Usage] = field(default_factory=dict)  # (model name, arm)
    # the latency probe's calls (model name, arm): the arm's own requests again, one at a time,
    # and the untimed warm-up of the backend that answers the arm (counted in `probe_warm_ups`)
    probe: dict[tuple[str, str], Usage] = field(default_factory=dict)
    probe_warm_ups: dict[tuple[str, str], int] = field(default_factory=dict)
    judges: dict[str, Usage] = field(default_factory=dict)  # judge name
    corpus_tokens: int = 0  # embedded once when the Knowledge Base ingests the corpus
    retrieval_query_tokens: int = 0  # every retrieve call embeds its query
    training_tokens: int = 0  # one pass over the training file


@dataclass
class CostLine:
    step: str
    item: str
    quantity: float
    unit: str
    unit_price_usd: float | None
    cost_usd: float | None  # None: no price known (the total says so)
    hosting: str | None = None  # None: paid whichever way the ft models are hosted
    verified: bool = True
    note: str = ""
    config_key: str = ""  # the key that names the priced model (or setting), for a missing price
    model_id: str = ""
    how_to_price: str = ""  # what a missing price's refusal tells the user to do, when not bedrock.prices


@dataclass
class CostTable:
    lines: list[CostLine]
    prices_read_on: str
    assumptions: list[str] = field(default_factory=list)

    def total(self, hosting: str) -> float:
        return float(round(sum((line.cost_usd or 0.0 for line in self.lines if line.hosting in (None, hosting)), 0.0), 4))

    def complete(self) -> bool:
        return all(line.cost_usd is not None for line in self.lines)

    def totals(self) -> dict[str, float]:
        return {choice: self.total(choice) for choice in HOSTING_CHOICES}

    def unpriced(self, hosting: str) -> list[CostLine]:
        """The lines the chosen hosting pays that have no price."""
        return [line for line in self.lines if line.cost_usd is None and line.hosting in (None, hosting)]


def prices_for(config: StudyConfig, prices: PriceBook | None = None) -> PriceBook:
    """The price file with the config's own prices (bedrock.prices) laid over it."""
    book = prices or load_prices()
    return book.with_prices(dict(config.bedrock.prices)) if config.bedrock else book


def check_every_cost_priced(costs: CostTable, hosting: str) -> None:
    """One UserError naming the first billable model that has no price, and its config key:
    neither the estimate nor the budget guard could count what it costs."""
    missing = costs.unpriced(hosting)
    if not missing:
        return
    line = missing[0]
    more = f" (and {len(missing) - 1} more unpriced line(s))" if len(missing) > 1 else ""
    if line.how_to_price:
        raise UserError(
            f"{line.config_key}: {line.model_id} has no price ({line.note}), so neither the estimate nor the budget guard can "
            f"count what it costs; {line.how_to_price}{more}"
        )
    raise UserError(
        f"{line.config_key}: {line.model_id} has no price ({line.note}), so neither the estimate nor the budget guard can count "
        f"what it costs; add it to bedrock.prices ({line.model_id}: {{input_per_1k: ..., output_per_1k: ...}}) to run it at a "
        f"price you set{more}"
    )


def vector_store_line(config: StudyConfig, price: VectorStorePrice) -> CostLine:
    """The vector store of a Knowledge Base the study creates: STORAGE_MONTHS at the config's
    price, 0 when billed elsewhere, and no price (the estimate refuses) otherwise."""
    storage = config.bedrock.knowledge_base.get("storage", {}) if config.bedrock else {}
    kind = str(storage.get("type", "the vector store")) if isinstance(storage, dict) else "the vector store"
    if price.billed_elsewhere:
        return CostLine("knowledge base", f"vector store ({kind}): billed elsewhere, as the config says", 0, "-", None, 0.0, None, True)
    cost = None if price.usd_per_month is None else round(STORAGE_MONTHS * price.usd_per_month, 6)
    key, fix = "bedrock.knowledge_base.vector_store_usd_per_month", "or vector_store_billed_elsewhere: true when another bill counts it"
    item = f"vector store ({kind}), {STORAGE_MONTHS} month at the config's price"
    how, store = f"set {key} to what it bills a month, {fix}", f"the vector store ({kind})"
    return CostLine(
        "knowledge base", item, STORAGE_MONTHS, "months", price.usd_per_month, cost, None, False, VECTOR_STORE_NOTE, key, store, how
    )


def _token_line(
    step: str, item: str, model_id: str, usage: Usage, prices: PriceBook, config_key: str, hosting: str | None = None
) -> list[CostLine]:
    entry = prices.token_prices(model_id)
    if entry is None:
        return [
            CostLine(
                step,
                f"{item}: {usage.input_tokens + usage.output_tokens:,} tokens",
                usage.requests,
                "requests",
                None,
                None,
                hosting,
                False,
                f"no price for {price_key(model_id)} in {prices.path}",
                config_key,
                model_id,
            )
        ]
    cost = usage.input_tokens / 1000 * entry["input_per_1k"] + usage.output_tokens / 1000 * entry["output_per_1k"]
    route = f", {route_of_id(model_id)} price" if entry.get("route") else ""
    own = ", price from bedrock.prices" if entry.get("source", "").startswith("bedrock.prices") else ""
    label = f"{item} ({usage.requests:,} calls, {usage.input_tokens:,} in / {usage.output_tokens:,} out tokens{route}{own})"
    return [
        CostLine(
            step,
            label,
            usage.requests,
            "requests",
            None,
            round(cost, 6),
            hosting,
            bool(entry.get("verified", False)),
            entry.get("note", ""),
            config_key,
            model_id,
        )
    ]


def _local_line(step: str, item: str, backend: str, usage: Usage) -> CostLine:
    """A model that does not run on Bedrock: no AWS bill (its own hardware is not priced here)."""
    label = f"{item} ({usage.requests:,} calls on the {backend} backend)"
    return CostLine(step, label, usage.requests, "requests", 0.0, 0.0, note="not billed by AWS")


def provisioned_hours(requests: int, concurrency: int, one_at_a_time: int = 0) -> int:
    """Whole hours one provisioned model is held (each started hour bills): `requests` at
    `concurrency` (its ft answers), then `one_at_a_time` requests in turn (the latency probe,
    which runs inside the same hosting window, every arm's calls among them)."""
    answer_hours = (requests / max(1, concurrency) + one_at_a_time) * SECONDS_PER_REQUEST_ESTIMATE / 3600.0
    return max(1, math.ceil(answer_hours + PROVISIONED_SETUP_HOURS))


def _arm_lines(step: str, item: str, model: ModelConfig, arm: str, usage: Usage, prices: PriceBook, index: int) -> list[CostLine]:
    """The cost of one arm's calls to one answer model (`index` in config.models)."""
    if model.backend != "bedrock":
        return [_local_line(step, item, model.backend, usage)]
    if arm in FT_ARMS:
        base_id = model.customization_model or model.model
        key = f"models[{index}].{'customization_model' if model.customization_model else 'model'}"
        # on-demand deployments bill per token at the base model's price
        return _token_line(step, f"{item} (custom model, on-demand)", base_id, usage, prices, key, "on_demand")
    return _token_line(step, item, model.model, usage, prices, f"models[{index}].model")


def estimate_costs(config: StudyConfig, token_counts: TokenCounts, prices: PriceBook | None = None) -> CostTable:
    """The cost of each step of the study and, for the fine-tuned models, of both hosting choices."""
    prices = prices_for(config, prices)
    bedrock = config.bedrock or BedrockConfig()
    concurrency = bedrock.max_concurrency
    units = bedrock.provisioned_model_units
    models = {model.name: model for model in config.models}
    index_of = {model.name: index for index, model in enumerate(config.models)}
    lines: list[CostLine] = []

    for (model_name, arm), usage in sorted(token_counts.answers.items()):
        lines += _arm_lines("answers", f"{model_name} / {arm}", models[model_name], arm, usage, prices, index_of[model_name])
    for (model_name, arm), usage in sorted(token_counts.probe.items()):
        warm_ups = token_counts.probe_warm_ups.get((model_name, arm), 0)
        item = f"{model_name} / {arm}" + (f" + {warm_ups} untimed warm-up" if warm_ups else "")
        lines += _arm_lines("latency probe", item, models[model_name], arm, usage, prices, index_of[model_name])

    for index, judge in enumerate(config.judges):
        if judge.kind == "llm" and judge.model is not None and judge.name in token_counts.judges:
            usage = token_counts.judges[judge.name]
            if judge.model.backend != "bedrock":
                lines.append(_local_line("judges", judge.name, judge.model.backend, usage))
                continue
            lines += _token_line("judges", judge.name, judge.model.model, usage, prices, f"judges[{index}].model.model")

    uses_rag = config.retrieves
    kb_settings = bedrock.knowledge_base
    existing_kb = config.retrieval.knowledge_base_id or kb_settings.get("id")
    if uses_rag:
        embed_id = str(kb_settings.get("embedding_model", prices.embedding_model)).split("/")[-1]
        embed = prices.token_prices(embed_id)
        embed_price = embed["input_per_1k"] if embed else None
        verified = bool(embed and embed.get("verified"))
        if not existing_kb:
            cost = None if embed_price is None else round(token_counts.corpus_tokens / 1000 * embed_price, 6)
            lines.append(
                CostLine(
                    "knowledge base",
                    f"embed the corpus at ingestion ({embed_id})",
                    token_counts.corpus_tokens / 1000,
                    "1k tokens",
                    embed_price,
                    cost,
                    None,
                    verified,
                    f"no price for {price_key(embed_id)} in {prices.path}" if embed is None else "",
                    "bedrock.knowledge_base.embedding_model",
                    embed_id,
                )
            )
        cost = None if embed_price is None else round(token_counts.retrieval_query_tokens / 1000 * embed_price, 6)
        lines.append(
            CostLine(
                "knowledge base",
                f"embed retrieve queries ({embed_id})",
                token_counts.retrieval_query_tokens / 1000,
                "1k tokens",
                embed_price,
                cost,
                None,
                verified,
                f"no price for {price_key(embed_id)} in {prices.path}" if embed is None else "",
                "bedrock.knowledge_base.embedding_model",
                embed_id,
            )
        )
        if not existing_kb:
            lines.append(vector_store_line(config, VectorStorePrice.from_settings(kb_settings)))

    if any(arm in FT_ARMS for arm in config.arms):
        epochs = config.finetune.epochs
        for model in config.models:
            if model.backend != "bedrock":
                continue  # trained locally: no AWS bill
            base_id = model.customization_model or model.model
            base_key = f"models[{index_of[model.name]}].{'customization_model' if model.customization_model else 'model'}"
            entry = prices.customization(base_id)
            train_1k = token_counts.training_tokens * epochs / 1000
            if entry is None:
                lines.append(
                    CostLine(
                        "training",
                        f"{model.name}: customization job",
                        train_1k,
                        "1k tokens",
                        None,
                        None,
                        None,
                        False,
                        f"no customization price for {price_key(base_id)} in {prices.path}",
                        base_key,
                        base_id,
                    )
                )
                continue
            verified = bool(entry.get("verified", False))
            lines.append(
                CostLine(
                    "training",
                    f"{model.name}: {token_counts.training_tokens:,} tokens x {epochs} epochs",
                    train_1k,
                    "1k tokens",
                    entry["train_per_1k"],
                    round(train_1k * entry["train_per_1k"], 6),
                    None,
                    verified,
                    entry.get("note", ""),
                )
            )
            lines.append(
                CostLine(
                    "storage",
                    f"{model.name}: custom model storage",
                    STORAGE_MONTHS,
                    "months",
                    entry["storage_per_month"],
                    round(STORAGE_MONTHS * entry["storage_per_month"], 6),
                    None,
                    verified,
                )
            )
            ft_requests = sum(u.requests for (name, arm), u in token_counts.answers.items() if name == model.name and arm in FT_ARMS)
            probed = {arm: u.requests for (name, arm), u in token_counts.probe.items() if name == model.name}
            ft_probed = sum(requests for arm, requests in probed.items() if arm in FT_ARMS)
            hours = provisioned_hours(ft_requests, concurrency, sum(probed.values()))
            pt = prices.provisioned(base_id)
            if pt is None:
                lines.append(
                    CostLine(
                        "hosting",
                        f"{model.name}: provisioned throughput",
                        hours * units,
                        "unit-hours",
                        None,
                        None,
                        "provisioned",
                        False,
                        f"no provisioned price for {price_key(base_id)} in {prices.path}",
                        base_key,
                        base_id,
                    )
                )
            else:
                rate = pt["no_commitment"]
                lines.append(
                    CostLine(
                        "hosting",
                        f"{model.name}: provisioned throughput, {units} unit(s) x {hours} h, no commitment",
                        hours * units,
                        "unit-hours",
                        rate,
                        round(hours * units * rate, 4),
                        "provisioned",
                        bool(pt.get("verified", False)),
                        pt.get("note", ""),
                    )
                )
            lines.append(
                CostLine(
                    "hosting",
                    f"{model.name}: on-demand deployment (no hourly charge; tokens under answers and latency probe)",
                    0,
                    "-",
                    None,
                    0.0,
                    "on_demand",
                    True,
                )
            )
            # with provisioned throughput the ft answers' tokens are covered by the hourly charge
            probe_calls = f" + {ft_probed} latency probe calls" if ft_probed else ""
            lines.append(
                CostLine(
                    "answers",
                    f"{model.name} / ft arms{probe_calls} on provisioned throughput (tokens in the hourly charge)",
                    ft_requests + ft_probed,
                    "requests",
                    0.0,
                    0.0,
                    "provisioned",
                    True,
                )
            )

    assumptions = [
        f"token counts of prompts are estimates at {CHARS_PER_TOKEN:g} characters a token; "
        "answers are counted at their max_new_tokens (an upper bound)",
        f"provisioned throughput: each started hour bills; setup about {PROVISIONED_SETUP_HOURS:g} h, "
        f"about {SECONDS_PER_REQUEST_ESTIMATE:g} s a call at concurrency {concurrency} (the latency probe's one at a time)",
        f"custom model storage counted for {STORAGE_MONTHS} month; delete the models (localnova bedrock cleanup) to stop it",
    ]
    return CostTable(lines, prices.read_on, assumptions)


def format_cost_table(table: CostTable) -> str:
    """A plain-text table with both hosting totals; figures marked * are unverified."""
    header = f"{'step':<16}{'item':<104}{'USD':>12}  hosting"
    rows = [header, "-" * len(header)]
    for line in table.lines:
        cost = "n/a" if line.cost_usd is None else f"{line.cost_usd:,.4f}"
        mark = "" if line.verified else " *"
        rows.append(f"{line.step:<16}{line.item[:102]:<104}{cost:>12}{mark:<2}{line.hosting or 'both'}")
    rows.append("-" * len(header))
    for choice in HOSTING_CHOICES:
        rows.append(f"{'TOTAL':<16}{'with the fine-tuned models hosted ' + choice.replace('_', '-'):<104}{table.total(choice):>12,.2f}")
    if not table.complete():
        rows.append("some lines have no price (n/a): the totals leave them out")
    rows.append(f"* price not verified on a primary page; prices read on {table.prices_read_on} (localnova/prices/bedrock.yaml)")
    rows += [f"assumes: {text}" for text in table.assumptions]
    return "\n".join(rows)


def spend_from_usage(usage: Iterable[tuple[str, int, int]], prices: PriceBook | None = None) -> tuple[float, list[str]]:
    """Real token spending: (model id, input tokens, output tokens) per call, as Bedrock counted
    them, times the price file. Returns the total and the model ids that have no price."""
    prices = prices or load_prices()
    total, unpriced = 0.0, set()
    for model_id, input_tokens, output_tokens in usage:
        entry = prices.token_prices(model_id)
        if entry is None:
            unpriced.add(model_id)
            continue
        total += input_tokens / 1000 * entry["input_per_1k"] + output_tokens / 1000 * entry["output_per_1k"]
    return round(total, 6), sorted(unpriced)

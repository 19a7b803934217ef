"""Prices and cost estimates for the Bedrock path.

Prices live in a dated file (prices/bedrock.yaml), each with its source and the day it was
read. `estimate_costs` turns token counts into a table per step (answers per arm and model,
judges, Knowledge Base embeddings, training, storage) and puts the two ways to host the
fine-tuned models side by side: on-demand (per token) and provisioned throughput (per model
unit hour). `check_budget` and `SpendGuard` stop a run before it spends more than budget_usd;
`spend_from_usage` reads what a run really spent from the token counts Bedrock returned.
Plain Python: no boto3, no model code.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from localnova.config import FT_ARMS, RAG_ARMS, BedrockConfig, StudyConfig
from localnova.errors import UserError
from localnova.prices import PriceBook, load_prices, price_key

__all__ = ["PriceBook", "load_prices", "price_key"]  # the price file's reader lives in localnova.prices

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


def _token_line(step: str, item: str, model_id: str, usage: Usage, prices: PriceBook, hosting: str | None = None) -> list[CostLine]:
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
            )
        ]
    cost = usage.input_tokens / 1000 * entry["input_per_1k"] + usage.output_tokens / 1000 * entry["output_per_1k"]
    label = f"{item} ({usage.requests:,} calls, {usage.input_tokens:,} in / {usage.output_tokens:,} out tokens)"
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
        )
    ]


def provisioned_hours(requests: int, concurrency: int) -> int:
    """Whole hours one provisioned model is held to answer `requests` (each started hour bills)."""
    answer_hours = requests * SECONDS_PER_REQUEST_ESTIMATE / max(1, concurrency) / 3600.0
    return max(1, math.ceil(answer_hours + PROVISIONED_SETUP_HOURS))


def estimate_costs(config: StudyConfig, token_counts: TokenCounts, prices: PriceBook | None = None) -> CostTable:
    """The cost of each step of the study and, for the fine-tuned models, of both hosting choices."""
    prices = prices or load_prices()
    bedrock = config.bedrock or BedrockConfig()
    concurrency = bedrock.max_concurrency
    units = bedrock.provisioned_model_units
    models = {model.name: model for model in config.models}
    lines: list[CostLine] = []

    for (model_name, arm), usage in sorted(token_counts.answers.items()):
        model = models[model_name]
        if arm in FT_ARMS:
            base_id = model.customization_model or model.model
            # on-demand deployments bill per token at the base model's price
            lines += _token_line("answers", f"{model_name} / {arm} (custom model, on-demand)", base_id, usage, prices, "on_demand")
        else:
            lines += _token_line("answers", f"{model_name} / {arm}", model.model, usage, prices)

    for judge in config.judges:
        if judge.kind == "llm" and judge.model is not None and judge.name in token_counts.judges:
            lines += _token_line("judges", judge.name, judge.model.model, token_counts.judges[judge.name], prices)

    uses_rag = any(arm in RAG_ARMS for arm in config.arms)
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
            )
        )
        lines.append(
            CostLine(
                "knowledge base",
                "vector store (billed by the store you named)",
                0,
                "-",
                None,
                0.0,
                None,
                False,
                "not estimated: OpenSearch Serverless bills per OCU-hour even when idle; S3 Vectors per GB and query",
            )
        )

    if any(arm in FT_ARMS for arm in config.arms):
        epochs = config.finetune.epochs
        for model in config.models:
            base_id = model.customization_model or model.model
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
                        f"no customization price for {price_key(base_id)}",
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
            hours = provisioned_hours(ft_requests, concurrency)
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
                        f"no provisioned price for {price_key(base_id)}",
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
                    f"{model.name}: on-demand deployment (no hourly charge; tokens under answers)",
                    0,
                    "-",
                    None,
                    0.0,
                    "on_demand",
                    True,
                )
            )
            # with provisioned throughput the ft answers' tokens are covered by the hourly charge
            lines.append(
                CostLine(
                    "answers",
                    f"{model.name} / ft arms on provisioned throughput (tokens included in the hourly charge)",
                    ft_requests,
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
        f"about {SECONDS_PER_REQUEST_ESTIMATE:g} s a call at concurrency {concurrency}",
        f"custom model storage counted for {STORAGE_MONTHS} month; delete the models (localnova bedrock cleanup) to stop it",
    ]
    return CostTable(lines, prices.read_on, assumptions)


def format_cost_table(table: CostTable) -> str:
    """A plain-text table with both hosting totals; figures marked * are unverified."""
    header = f"{'step':<16}{'item':<92}{'USD':>12}  hosting"
    rows = [header, "-" * len(header)]
    for line in table.lines:
        cost = "n/a" if line.cost_usd is None else f"{line.cost_usd:,.4f}"
        mark = "" if line.verified else " *"
        rows.append(f"{line.step:<16}{line.item[:90]:<92}{cost:>12}{mark:<2}{line.hosting or 'both'}")
    rows.append("-" * len(header))
    for choice in HOSTING_CHOICES:
        rows.append(f"{'TOTAL':<16}{'with the fine-tuned models hosted ' + choice.replace('_', '-'):<92}{table.total(choice):>12,.2f}")
    if not table.complete():
        rows.append("some lines have no price (n/a): the totals leave them out")
    rows.append(f"* price not verified on a primary page; prices read on {table.prices_read_on} (localnova/prices/bedrock.yaml)")
    rows += [f"assumes: {text}" for text in table.assumptions]
    return "\n".join(rows)


def check_budget(estimate: CostTable | float, budget_usd: float, hosting: str = "on_demand") -> None:
    """A UserError when the estimate for the chosen hosting exceeds the budget."""
    total = estimate.total(hosting) if isinstance(estimate, CostTable) else float(estimate)
    if total > budget_usd:
        raise UserError(
            f"bedrock.budget_usd: the estimate ${total:,.2f} (hosting {hosting}) exceeds the budget ${budget_usd:,.2f}; "
            "raise the budget or shrink the study"
        )


class BudgetExceeded(UserError):
    """The next paid step would take the run past bedrock.budget_usd."""


class SpendGuard:
    """The run's spending so far, kept live: token costs added per call (answers and judges
    alike), resource costs (training, storage, hosting hours) set whenever a resource changes.
    `before` stops a step that would cross the budget. Thread-safe: every converse thread
    reports to it. `active_spend_guard()` is the guard of the run in progress, if any."""

    def __init__(self, budget_usd: float, spent_usd: float = 0.0, prices: PriceBook | None = None):
        self.budget_usd = budget_usd
        self.token_usd = spent_usd
        self.resource_usd = 0.0
        self.prices = prices
        self.price_ids: dict[str, str | None] = {}  # model id -> price id; None: paid by the hour
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        return self.token_usd + self.resource_usd

    def before(self, step: str, estimated_cost_usd: float) -> None:
        with self._lock:
            spent = self.spent_usd
        if spent + estimated_cost_usd > self.budget_usd:
            raise BudgetExceeded(
                f"bedrock.budget_usd: stopping before {step}: ${spent:,.2f} spent + ${estimated_cost_usd:,.2f} estimated "
                f"exceeds the budget ${self.budget_usd:,.2f}; a rerun with a larger budget resumes where this stopped"
            )

    def add(self, cost_usd: float) -> None:
        with self._lock:
            self.token_usd += cost_usd

    def set_resource_spend(self, cost_usd: float) -> None:
        with self._lock:
            self.resource_usd = cost_usd

    def token_cost(self, model_id: str, input_tokens: int, output_tokens: int) -> float:
        """What one call costs at the price file's rate (0 for a model paid by the hour)."""
        price_id = self.price_ids.get(model_id, model_id)
        if price_id is None:
            return 0.0
        self.prices = self.prices or load_prices()
        entry = self.prices.token_prices(price_id)
        if entry is None:
            return 0.0
        return input_tokens / 1000 * entry["input_per_1k"] + output_tokens / 1000 * entry["output_per_1k"]


_ACTIVE_GUARD: list[SpendGuard] = []


def active_spend_guard() -> SpendGuard | None:
    return _ACTIVE_GUARD[-1] if _ACTIVE_GUARD else None


@contextmanager
def spend_guarded(guard: SpendGuard) -> Iterator[SpendGuard]:
    """Make `guard` the active one while the block runs (the paid backends report to it)."""
    _ACTIVE_GUARD.append(guard)
    try:
        yield guard
    finally:
        _ACTIVE_GUARD.remove(guard)


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

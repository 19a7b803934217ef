"""The study on Bedrock, above the local study: the cloud steps, then the shared pipeline.

Every check that can fail on the user's input runs first, then the plan and cost estimate are
shown and confirmed, and only then is anything created: Knowledge Base, customization jobs,
hosting. The answers and judges then run through the local study's pipeline with the Bedrock
backend, a Knowledge Base retriever and the custom models' ARNs, so a Bedrock run writes the
same store and report as a local run. The dry run takes the same road with every model
answered by the simulated backend.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localnova.bedrock.aws import AwsClients
from localnova.bedrock.customization import prepare_customization, run_customization
from localnova.bedrock.dry_run import actual_answer_requests, dry_run, simulated_study
from localnova.bedrock.hosting import check_hosting, host_custom_model
from localnova.bedrock.knowledge_base import KnowledgeBaseRetriever, corpus_prefix, ensure_knowledge_base
from localnova.bedrock.state import BedrockState
from localnova.config import BedrockConfig, ModelConfig, StudyConfig
from localnova.costs import CostTable, check_budget, spend_from_usage
from localnova.errors import UserError
from localnova.finetune.stage import training_file
from localnova.pipeline import run_study
from localnova.store import Store

# Stand-ins for the custom models' ARNs in a dry run: the simulated backend only records them.
SIMULATED_ADAPTER = "simulated-adapter"


def confirm_on_terminal(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("this run would spend money on AWS; rerun with --yes to confirm without a terminal")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def with_bedrock_settings(config: StudyConfig) -> StudyConfig:
    """Every Bedrock model of the study calls the study's region with its concurrency, unless
    the model's own options say otherwise: `bedrock.region` and `bedrock.max_concurrency` are
    the one place a user sets them."""
    bedrock = config.bedrock or BedrockConfig()

    def settle(model: ModelConfig) -> ModelConfig:
        if model.backend != "bedrock":
            return model
        options = {"region": bedrock.region, "max_concurrency": bedrock.max_concurrency, **model.options}
        return model.model_copy(update={"options": options})

    judges = [judge.model_copy(update={"model": settle(judge.model)}) if judge.model else judge for judge in config.judges]
    return config.model_copy(update={"models": [settle(model) for model in config.models], "judges": judges})


def run_bedrock_study(
    config: StudyConfig,
    dry_run_only: bool,
    allow_spend: bool,
    assume_yes: bool,
    clients: AwsClients | None = None,
    confirm: Callable[[str], bool] = confirm_on_terminal,
) -> tuple[Path, str]:
    """Plan, estimate, confirm, create what the study needs, then run it; returns the study
    folder and run id. A dry run prints the plan and estimate and runs the whole study on the
    simulated backend, offline, in a folder of its own."""
    if config.bedrock is None:
        raise UserError("bedrock: a study with Bedrock models needs a bedrock section (region, role_arn, s3_bucket, ...)")
    config = with_bedrock_settings(config)
    if dry_run_only:
        plan = dry_run(config, answer_requests=actual_answer_requests(config))
        simulated = simulated_study(config)
        adapters = {model.name: SIMULATED_ADAPTER for model in simulated.models} if config.fine_tunes else {}
        return run_study(
            simulated,
            adapters=adapters,
            artifacts={"cost_estimate": cost_artifact(plan.costs)},
            artifacts_from_store=lambda store: {"cost_actual_simulated": actual_spend(store, config)},
        )

    clients = clients or AwsClients(config.bedrock.region)
    clients.get("bedrock")  # no credentials: one clear line now, before anything else
    ft_models = [model for model in config.models if model.backend == "bedrock"] if config.fine_tunes else []
    train_path = training_file(config) if ft_models else None
    for model in ft_models:
        prepare_customization(config, model, train_path)
        check_hosting(config, model, allow_spend, estimate_shown=True)
    plan = dry_run(config, answer_requests=actual_answer_requests(config))
    check_budget(plan.costs, config.bedrock.budget_usd, config.bedrock.hosting)
    if not assume_yes and not confirm(f"Start the study on AWS (estimate above, hosting {config.bedrock.hosting})?"):
        raise UserError("stopped before the first billable call: not confirmed")

    state = BedrockState.load(config.study_dir)
    retriever = None
    if config.retrieves:
        knowledge_base_id = config.retrieval.knowledge_base_id or ensure_knowledge_base(config, state, clients)
        retriever = KnowledgeBaseRetriever(knowledge_base_id, corpus_prefix(config), config.bedrock.region, client=clients.agent_runtime)
    adapters = {}
    for model in ft_models:
        result = run_customization(config, model, train_path, state, clients)
        adapters[model.name] = host_custom_model(config, model, result.custom_model_arn, state, clients, allow_spend, estimate_shown=True)
    return run_study(
        config,
        adapters=adapters,
        retriever=retriever,
        artifacts={"cost_estimate": cost_artifact(plan.costs)},
        artifacts_from_store=lambda store: {"cost_actual": actual_spend(store, config)},
    )


def cost_artifact(costs: CostTable) -> dict[str, Any]:
    """The estimate as the report shows it: each line, and the total for each hosting choice."""
    return {
        "lines": [
            {
                "step": line.step,
                "item": line.item,
                "hosting": line.hosting or "either",
                "cost_usd": line.cost_usd,
                "verified": line.verified,
            }
            for line in costs.lines
        ],
        "totals_usd": costs.totals(),
        "prices_read_on": costs.prices_read_on,
    }


def actual_spend(store: Store, config: StudyConfig) -> dict[str, Any]:
    """Spending read back from the usage the Bedrock API reported for this run's calls."""
    price_ids = {m.name: (m.customization_model or m.model) for m in config.models}
    usage = [(price_ids.get(a.model, a.model), a.result.input_tokens, a.result.output_tokens) for a in store.answers()]
    usd, unpriced = spend_from_usage(usage)
    return {"answers_usd": round(usd, 4), "unpriced_models": unpriced, "source": "usage.inputTokens/outputTokens x prices/bedrock.yaml"}

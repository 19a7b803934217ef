"""The Bedrock steps of a study, in the order a real run takes them.

Every check that can fail on the user's input runs first, then the plan and cost estimate are
shown and confirmed, and only then is anything created: Knowledge Base, customization jobs,
hosting. The answers and judges then run through the shared pipeline with the Bedrock
backend, so a Bedrock run writes the same store and report as a local run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from localnova.config import FT_ARMS, RAG_ARMS, StudyConfig
from localnova.errors import UserError


@dataclass
class BedrockRun:
    """What the pipeline needs from the Bedrock steps."""

    config: StudyConfig  # with retrieval.knowledge_base_id filled in for the rag arms
    adapters: dict[str, str] = field(default_factory=dict)  # model name -> ARN the ft arms answer through
    artifacts: dict[str, Any] = field(default_factory=dict)  # cost estimate, for the report


def actual_answer_requests(config: StudyConfig, arms: list[str]) -> dict:
    """The answer prompts the study will send, per (model, arm), so the estimate counts their
    real length. Before a Knowledge Base exists, the rag prompts are built from the local
    index over the same corpus, with the same chunking: the closest stand-in we have."""
    from localnova.evaluate.arms import build_request
    from localnova.pipeline import generation_params, prepare_inputs

    inputs = prepare_inputs(config, arms, None, simulate=True)
    requests = {}
    for model in config.models:
        params = generation_params(model, config.seed)
        for arm in arms:
            contexts = inputs.retrieved if arm in RAG_ARMS else [None] * len(inputs.items)
            requests[(model.name, arm)] = [build_request(item, context, params) for item, context in zip(inputs.items, contexts)]
    return requests


def confirm_on_terminal(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("this run would spend money on AWS; rerun with --yes to confirm without a terminal")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def prepare_bedrock_run(
    config: StudyConfig,
    dry_run: bool,
    allow_spend: bool,
    assume_yes: bool,
    arms: list[str] | None = None,
    clients: Any = None,
    confirm: Callable[[str], bool] = confirm_on_terminal,
) -> BedrockRun:
    """Plan, estimate, confirm, then create what the study needs. A dry run stops after the
    plan and estimate: the pipeline then answers through the simulated backend."""
    from localnova.bedrock.dry_run import dry_run as print_plan
    from localnova.costs import check_budget
    from localnova.data.eval_set import load_eval_set
    from localnova.finetune.stage import training_file

    if config.bedrock is None:
        raise UserError("bedrock: a study with Bedrock models needs a bedrock section (region, role_arn, s3_bucket, ...)")
    arms = arms or list(config.arms)
    wants_ft = any(arm in FT_ARMS for arm in arms)
    items = load_eval_set(config.eval.path, config.eval.limit)
    if dry_run:
        plan = print_plan(config, answer_requests=actual_answer_requests(config, arms), eval_items=items)
        return BedrockRun(config, artifacts={"cost_estimate": cost_artifact(plan.costs)})

    from localnova.bedrock.aws import AwsClients
    from localnova.bedrock.customization import prepare_customization, run_customization
    from localnova.bedrock.hosting import check_hosting, host_custom_model
    from localnova.bedrock.knowledge_base import ensure_knowledge_base
    from localnova.bedrock.state import BedrockState

    clients = clients or AwsClients(config.bedrock.region)
    clients.get("bedrock")  # no credentials: one clear line now, before anything else
    ft_models = [m for m in config.models if m.backend == "bedrock"] if wants_ft else []
    train_path = training_file(config) if ft_models else None
    for model in ft_models:
        prepare_customization(config, model, train_path)
        check_hosting(config, model, allow_spend, estimate_shown=True)
    plan = print_plan(config, answer_requests=actual_answer_requests(config, arms), eval_items=items)
    check_budget(plan.costs, config.bedrock.budget_usd, config.bedrock.hosting)
    if not assume_yes and not confirm(f"Start the study on AWS (estimate above, hosting {config.bedrock.hosting})?"):
        raise UserError("stopped before the first billable call: not confirmed")

    state = BedrockState.load(config.study_dir)
    if any(arm in RAG_ARMS for arm in arms) and not config.retrieval.knowledge_base_id:
        kb_id = ensure_knowledge_base(config, state, clients)
        config = config.model_copy(update={"retrieval": config.retrieval.model_copy(update={"knowledge_base_id": kb_id})})
    adapters = {}
    for model in ft_models:
        result = run_customization(config, model, train_path, state, clients)
        adapters[model.name] = host_custom_model(config, model, result.custom_model_arn, state, clients, allow_spend, estimate_shown=True)
    return BedrockRun(config, adapters, {"cost_estimate": cost_artifact(plan.costs)})


def cost_artifact(costs) -> dict[str, Any]:
    """The estimate as the report shows it: each line, and the total for each hosting choice."""
    return {
        "lines": [
            {"step": line.step, "item": line.item, "hosting": line.hosting or "either", "cost_usd": line.cost_usd, "verified": line.verified}
            for line in costs.lines
        ],
        "totals_usd": costs.totals(),
        "prices_read_on": costs.prices_read_on,
    }


def actual_spend(store, config: StudyConfig) -> dict[str, Any]:
    """Spending read back from the usage the Bedrock API reported for this run's calls."""
    from localnova.costs import spend_from_usage

    price_ids = {m.name: (m.customization_model or m.model) for m in config.models}
    usage = [(price_ids.get(a.model, a.model), a.result.input_tokens, a.result.output_tokens) for a in store.answers()]
    usd, unpriced = spend_from_usage(usage)
    return {"answers_usd": round(usd, 4), "unpriced_models": unpriced, "source": "usage.inputTokens/outputTokens x prices/bedrock.yaml"}

"""The study on Bedrock, above the local study: the cloud steps, then the shared pipeline.

Every check that can fail on the user's input runs first (the free preflight included), then
the plan, hosting schedule and cost estimate are shown and confirmed, and only then is anything
created: the Knowledge Base, then every customization job (all started before any hosting
exists), then, model by model, hosting created just before its ft arms and deleted right after.
The answers and judges run through the local study's pipeline with the Bedrock backend, a
Knowledge Base retriever and the custom models, so a Bedrock run writes the same store and
report as a local run. The dry run takes the same road on the simulated backend.

A live SpendGuard holds what the run has spent (stored tokens of any earlier run, training,
storage, hosting hours so far, and each call as it returns); a step that would cross
bedrock.budget_usd stops the run in one line, hosting deleted (unless keep_hosting), state and
answers saved, so a rerun with a larger budget resumes without paying twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localnova.aws.clients import AwsClients
from localnova.aws.state import BedrockState
from localnova.backends.bedrock_backend import host_on_first_call, route_of
from localnova.bedrock.customization import prepare_customization, start_customization, wait_for_customization
from localnova.bedrock.hosting import check_hosting, host_custom_model, release_all_hosting, release_hosting
from localnova.bedrock.knowledge_base import KnowledgeBaseRetriever, corpus_prefix, ensure_knowledge_base
from localnova.bedrock.preflight import preflight
from localnova.bedrock.spend import price_ids, resource_spend, token_spend
from localnova.bedrock_study.dry_run import actual_answer_requests, dry_run, simulated_study
from localnova.config import FT_ARMS, BedrockConfig, ModelConfig, StudyConfig
from localnova.costs import BudgetExceeded, CostTable, SpendGuard, check_budget, spend_guarded
from localnova.data.eval_set import load_eval_set
from localnova.data.formats import write_chat_jsonl
from localnova.data.qa_filters import decontaminate_training_file
from localnova.embedder import Embedder
from localnova.errors import UserError
from localnova.files import write_text_atomic
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
    keep_hosting: bool = False,
) -> tuple[Path, str]:
    """Preflight, plan, estimate, confirm, create what the study needs, then run it; returns
    the study folder and run id. A dry run prints the plan and estimate and runs the whole
    study on the simulated backend, offline, in a folder of its own."""
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
            artifacts={"cost_estimate": cost_artifact(plan.costs), "bedrock_routing": routing(config, {})},
            artifacts_from_store=lambda store: {"cost_actual_simulated": actual_spend(store, config, {})},
        )

    clients = clients or AwsClients(config.bedrock.region)
    clients.get("bedrock")  # no credentials: one clear line now, before anything else
    checked = preflight(config, clients)
    if checked.failures:
        raise UserError("preflight found problems (nothing was created):\n" + "\n".join(checked.failures))
    ft_models = [model for model in config.models if model.backend == "bedrock"] if config.fine_tunes else []
    train_path, decontamination = bedrock_training_file(config) if ft_models else (None, {})
    prepared = [prepare_customization(config, model, train_path) for model in ft_models]
    for model in ft_models:
        check_hosting(config, model, allow_spend, estimate_shown=True)
    plan = dry_run(config, answer_requests=actual_answer_requests(config))
    check_budget(plan.costs, config.bedrock.budget_usd, config.bedrock.hosting)
    if not assume_yes and not confirm(f"Start the study on AWS (estimate above, hosting {config.bedrock.hosting})?"):
        raise UserError("stopped before the first billable call: not confirmed")

    state = BedrockState.load(config.study_dir)
    guard = SpendGuard(config.bedrock.budget_usd)

    def refresh() -> None:
        guard.set_resource_spend(sum(resource_spend(state, config).values()))

    with spend_guarded(guard):
        try:
            refresh()
            guard.add(_stored_token_spend(config, {}))
            retriever = None
            if config.retrieves:
                knowledge_base_id = config.retrieval.knowledge_base_id or ensure_knowledge_base(config, state, clients)
                refresh()
                retriever = KnowledgeBaseRetriever(
                    knowledge_base_id, corpus_prefix(config), config.bedrock.region, client=clients.agent_runtime
                )
            # every job is started before any waiting, so no hosting bills while another model trains
            jobs = []
            for step in prepared:
                guard.before(f"customization of {step.model_name}", _line_cost(plan.costs, "training", step.model_name))
                jobs.append(start_customization(config, step, state, clients))
                refresh()
            custom_models = {}
            for step, job in zip(prepared, jobs):
                custom_models[step.model_name] = wait_for_customization(config, job, state, clients).custom_model_arn
                refresh()
            guard.price_ids = price_ids(config, custom_models)
            guard.token_usd = _stored_token_spend(config, custom_models)
            first_hour = {
                line.item.split(":", 1)[0]: line.cost_usd or 0.0
                for line in plan.costs.lines
                if line.step == "hosting" and line.hosting == config.bedrock.hosting
            }
            hosting = _hosting_while_used(config, state, clients, guard, refresh, allow_spend, keep_hosting, first_hour)
            return run_study(
                config,
                adapters=custom_models,
                retriever=retriever,
                artifacts={
                    "cost_estimate": cost_artifact(plan.costs),
                    "bedrock_routing": routing(config, custom_models),
                    "training_decontamination": decontamination,
                },
                artifacts_from_store=lambda store: {"cost_actual": actual_spend(store, config, custom_models, state)},
                hosting=hosting,
            )
        except BudgetExceeded:
            if not keep_hosting:
                release_all_hosting(state, clients)
            raise


def bedrock_training_file(config: StudyConfig) -> tuple[Path, dict[str, Any]]:
    """The file the customization jobs train on, and what was done to it. Pairs gen-qa wrote
    were decontaminated when generated; a user's own train_path goes through the same
    near-duplicate and eval-set decontamination, unless finetune.decontaminate_train_path is
    false, which the run records."""
    path = training_file(config)
    if config.finetune.train_path is None:
        return path, {"source": "gen-qa", "decontaminated": True}
    if not config.finetune.decontaminate_train_path:
        return path, {"source": str(path), "decontaminated": False, "why": "finetune.decontaminate_train_path: false"}
    eval_items = load_eval_set(config.eval.path)
    pairs, report = decontaminate_training_file(path, eval_items, Embedder(config.retrieval.embedding_model), config.gen_qa)
    work_dir = config.study_dir / "bedrock"
    work_dir.mkdir(parents=True, exist_ok=True)
    cleaned = work_dir / "train.decontaminated.jsonl"
    write_chat_jsonl([pair.to_record() for pair in pairs], cleaned)
    summary = {"source": str(path), "decontaminated": True, "file": str(cleaned), "report": report.to_dict()}
    write_text_atomic(work_dir / "train.decontamination.json", json.dumps(summary, indent=2))
    return cleaned, summary


def _stored_token_spend(config: StudyConfig, custom_models: dict[str, str]) -> float:
    """What the calls already in the study's store cost (earlier runs included)."""
    store = Store(config.study_dir)
    try:
        return token_spend(store.generation_usage(), price_ids(config, custom_models))
    finally:
        store.close()


def _line_cost(costs: CostTable, step: str, model_name: str) -> float:
    return sum(line.cost_usd or 0.0 for line in costs.lines if line.step == step and line.item.startswith(f"{model_name}:"))


def _hosting_while_used(
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    guard: SpendGuard,
    refresh: Callable[[], None],
    allow_spend: bool,
    keep_hosting: bool,
    hosting_cost_usd: dict[str, float],
):
    """The pipeline's hosting hook: around one model's ft arms, host its custom model on the
    first call that the store cannot answer, and delete that hosting when the arms are done."""
    models = {model.name: model for model in config.models}

    @contextmanager
    def host_while_used(model_name: str, custom_model_arn: str | None) -> Iterator[str | None]:
        if custom_model_arn is None:
            yield None
            return
        hosted: list[str] = []

        def host() -> str:
            guard.before(f"hosting {model_name}", hosting_cost_usd.get(model_name, 0.0))
            arn = host_custom_model(config, models[model_name], custom_model_arn, state, clients, allow_spend, estimate_shown=True)
            hosted.append(arn)
            refresh()
            return arn

        host_on_first_call(custom_model_arn, host)
        failed = False
        try:
            yield custom_model_arn
        except BaseException:
            failed = True
            raise
        finally:
            host_on_first_call(custom_model_arn, None)
            if hosted and not (failed and keep_hosting):
                release_hosting(state, hosted[0], clients)
                refresh()

    return host_while_used


def routing(config: StudyConfig, custom_models: dict[str, str]) -> dict[str, str]:
    """How each arm and judge reaches its model, shown beside its latency: base arms often
    through a cross-region profile, ft arms through a one-region deployment or throughput."""
    hosting = config.bedrock.hosting if config.bedrock else "on_demand"
    routes = {}
    for model in config.models:
        for arm in config.arms:
            if arm in FT_ARMS:
                routes[f"{model.name}/{arm}"] = route_of(":custom-model/", hosting)  # hosted as bedrock.hosting says
            else:
                routes[f"{model.name}/{arm}"] = route_of(model.model)
    for judge in config.judges:
        if judge.model is not None and judge.model.backend == "bedrock":
            routes[f"judge {judge.name}"] = route_of(judge.model.model)
    return routes


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


def actual_spend(store: Store, config: StudyConfig, custom_models: dict[str, str], state: BedrockState | None = None) -> dict[str, Any]:
    """Spending read back from the usage Bedrock reported for every stored call (answers and
    judges) and, on a real run, from the resources the state file lists."""
    tokens_usd = token_spend(store.generation_usage(), price_ids(config, custom_models))
    resources = resource_spend(state, config) if state is not None else {}
    return {
        "tokens_usd": round(tokens_usd, 4),
        **{f"{kind}_usd": round(usd, 4) for kind, usd in resources.items()},
        "total_usd": round(tokens_usd + sum(resources.values()), 4),
        "source": "usage.inputTokens/outputTokens, the state file's resources x prices/bedrock.yaml",
    }

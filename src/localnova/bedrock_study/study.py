"""The study on Bedrock, above the local study: the cloud steps, then the shared pipeline.

Every check that can fail on the user's input runs first: each request the study will send
against the service's own rules (bedrock/requests.py), a price for every billable model, and
the free preflight, which blocks on anything it could not check unless told to skip it. Then
the state file is squared with the account (bedrock/reconcile.py), the plan, hosting schedule
and cost estimate are shown and confirmed, and only then is anything created: the Knowledge
Base, then every customization job (all started before any hosting exists), then, model by
model, hosting created just before its ft arms and deleted right after them and the latency
probe, which times every arm inside that window (a rerun says first which models it hosts
again, for the probe alone too: bedrock_study/resume.py). The answers and judges run through
the local study's pipeline with the Bedrock backend, a Knowledge Base retriever and the custom
models, so a Bedrock run writes the same store and report as a local run. The dry run takes
the same road on the simulated backend.

A live SpendGuard (budget.py) sees every cost; a step that would cross bedrock.budget_usd stops
the run in one line. On every way out (an error, a failed or never-ready hosting, Ctrl-C,
SIGTERM, SIGHUP when the terminal or the SSH session goes, SIGQUIT, a budget stop) the hosting
is deleted, unless --keep-hosting, and then the last line names it, its cost per hour and the
cleanup command; a deletion refused or not confirmed ends the run with that line too. Ctrl-C, a
signal or a budget stop also stops a customization job still training (StopModelCustomizationJob;
a rerun starts a new attempt), unless --keep-customization-jobs. Every start and every end asks
the account what the study holds (bedrock/inventory.py) and prints it with what each thing costs
an hour or a month and the cleanup command (bedrock/leftovers.py), so what a killed run left
(SIGKILL, a power cut) is named at the next start. State and answers are saved as they happen,
so a rerun resumes without paying twice.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localnova.aws.clients import AwsClients
from localnova.aws.state import BedrockState
from localnova.backends.bedrock_backend import host_on_first_call, route_of
from localnova.bedrock.customization import prepare_customization, start_customization, wait_for_customization
from localnova.bedrock.hosting import (
    check_hosting,
    cleanup_command,
    host_custom_model,
    hourly_usd,
    release_hosting,
)
from localnova.bedrock.knowledge_base import DEFAULT_EMBEDDING_MODEL, KnowledgeBaseRetriever, corpus_prefix, ensure_knowledge_base
from localnova.bedrock.placeholders import check_no_placeholders
from localnova.bedrock.preflight import require_preflight
from localnova.bedrock.reconcile import reconcile
from localnova.bedrock.requests import check_requests
from localnova.bedrock.spend import price_ids, resource_spend, token_spend
from localnova.bedrock_study.dry_run import actual_answer_requests, dry_run, simulated_study
from localnova.bedrock_study.resume import hosting_on_rerun
from localnova.bedrock_study.stopping import after_stop, reason, say_at_start, say_what_is_left, signals_as_interrupt, tell_on_stderr
from localnova.budget import SpendGuard, check_budget, spend_guarded
from localnova.config import FT_ARMS, BedrockConfig, ModelConfig, StudyConfig
from localnova.costs import STORAGE_MONTHS, CostTable, PriceBook, prices_for
from localnova.data.eval_set import load_study_eval_set
from localnova.data.formats import is_conversation_file, read_training_pairs, write_chat_jsonl
from localnova.data.qa_filters import decontaminate_training_file
from localnova.embedder import Embedder
from localnova.errors import UserError
from localnova.files import write_text_atomic
from localnova.finetune.stage import sample_training_pairs, training_file
from localnova.pipeline import run_study
from localnova.store import Store

log = logging.getLogger(__name__)

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
    skip_checks: tuple[str, ...] | list[str] = (),
    keep_jobs: bool = False,
    report_left: Callable[[str], None] | None = None,
    retry_failed: bool = False,
) -> tuple[Path, str]:
    """Check, plan, estimate, confirm, create what the study needs, then run it; returns the
    study folder and run id. A dry run prints the plan and estimate and runs the whole study on
    the simulated backend, offline, in a folder of its own. A real run hands `report_left` (by
    default: stderr) what the account holds for the study as it starts (when anything) and as it
    ends, every way it ends; `keep_jobs` keeps a customization job training when it stops early."""
    if config.bedrock is None:
        raise UserError("bedrock: a study with Bedrock models needs a bedrock section (region, role_arn, s3_bucket, ...)")
    config = with_bedrock_settings(config)
    check_requests(config)  # what the service would refuse, named by its key, before anything
    if dry_run_only:
        plan = dry_run(config, answer_requests=actual_answer_requests(config))
        simulated = simulated_study(config)
        adapters = {model.name: SIMULATED_ADAPTER for model in simulated.models} if config.fine_tunes else {}
        return run_study(
            simulated,
            adapters=adapters,
            artifacts={"cost_estimate": cost_artifact(plan.costs), "bedrock_routing": routing(config, {})},
            artifacts_from_store=lambda store: {"cost_actual_simulated": actual_spend(store, config, {})},
            retry_failed=retry_failed,
        )

    check_no_placeholders(config)  # a role, bucket or index the user has not named yet: one line, before anything
    report = report_left or tell_on_stderr
    clients = clients or AwsClients(config.bedrock.region)
    clients.get("bedrock")  # no credentials: one clear line now, before anything else
    require_preflight(config, clients, skip_checks)
    state = BedrockState.load(config.study_dir)
    found = reconcile(state, clients)  # what a lost answer left behind is found (or not) by name
    if found.unresolved:
        raise UserError(
            "the state file lists resources whose creation may have happened and that the account could not be asked about: "
            + "; ".join(found.unresolved)
            + f"; nothing new was created: run the same command again, or {cleanup_command(config.study_dir)}"
        )
    say_at_start(config, state, clients, report)
    ft_models = [model for model in config.models if model.backend == "bedrock"] if config.fine_tunes else []
    train_path, validation_path, training_record = bedrock_training_files(config) if ft_models else (None, None, {})
    prepared = [prepare_customization(config, model, train_path, validation_path) for model in ft_models]
    for model in ft_models:
        check_hosting(config, model, allow_spend, estimate_shown=True)
    plan = dry_run(
        config, answer_requests=actual_answer_requests(config), uploaded_training_tokens=prepared[0].training_tokens if prepared else None
    )
    check_budget(plan.costs, config.bedrock.budget_usd, config.bedrock.hosting)
    for line in hosting_on_rerun(config):  # a model hosted again for the latency probe alone is said before it is
        print(f"rerun: {line}")
    if not assume_yes and not confirm(f"Start the study on AWS (estimate above, hosting {config.bedrock.hosting})?"):
        raise UserError("stopped before the first billable call: not confirmed")

    prices = prices_for(config)
    guard = SpendGuard(
        config.bedrock.budget_usd,
        prices=prices,
        resource_spend=lambda: sum(resource_spend(state, config, prices).values()),
        on_unstored=state.record_paid_call,
    )
    guard.price_ids = price_ids(config, {}, state)
    guard.add(_stored_token_spend(config, {}, prices, state))
    with spend_guarded(guard), signals_as_interrupt():
        try:
            result = _create_and_run(config, state, clients, guard, prices, prepared, plan, allow_spend, training_record, retry_failed)
        except BaseException as error:
            stopped = after_stop(error, config, state, clients, keep_hosting, keep_jobs, report)
            say_what_is_left(config, state, clients, report, f"the run stopped: {reason(error)}")
            if stopped is error:
                raise
            raise stopped from error
        interrupted = say_what_is_left(config, state, clients, report, f"study {config.name!r} complete on Bedrock")
        if interrupted is not None:
            raise interrupted
        return result


def _create_and_run(
    config: StudyConfig,
    state: BedrockState,
    clients: AwsClients,
    guard: SpendGuard,
    prices: PriceBook,
    prepared: list,
    plan: Any,
    allow_spend: bool,
    training_record: dict[str, Any],
    retry_failed: bool = False,
) -> tuple[Path, str]:
    assert config.bedrock is not None
    retriever = None
    if config.retrieves:
        knowledge_base_id = config.retrieval.knowledge_base_id or ensure_knowledge_base(config, state, clients)
        embed = prices.token_prices(str(config.bedrock.knowledge_base.get("embedding_model", DEFAULT_EMBEDDING_MODEL)).rsplit("/", 1)[-1])
        retriever = KnowledgeBaseRetriever(
            knowledge_base_id,
            corpus_prefix(config),
            config.bedrock.region,
            client=clients.agent_runtime,
            embed_price_per_1k=embed["input_per_1k"] if embed else 0.0,
        )
    # every job is started before any waiting, so no hosting bills while another model trains
    jobs = []
    for step in prepared:
        entry = prices.customization(step.base_model_id)
        cost = (
            (step.training_tokens * config.finetune.epochs / 1000 * entry["train_per_1k"] + STORAGE_MONTHS * entry["storage_per_month"])
            if entry
            else 0.0
        )
        guard.before(f"customization of {step.model_name} ({step.training_tokens:,} tokens x {config.finetune.epochs} epochs)", cost)
        jobs.append(start_customization(config, step, state, clients))
    custom_models = {}
    for step, job in zip(prepared, jobs, strict=True):
        custom_models[step.model_name] = wait_for_customization(config, job, state, clients).custom_model_arn
    guard.price_ids = price_ids(config, custom_models, state)
    guard.token_usd = _stored_token_spend(config, custom_models, prices, state)
    hosting = _hosting_while_used(config, state, clients, guard, allow_spend)
    return run_study(
        config,
        adapters=custom_models,
        retriever=retriever,
        artifacts={
            "cost_estimate": cost_artifact(plan.costs),
            "bedrock_routing": routing(config, custom_models),
            "training_decontamination": training_record,
        },
        artifacts_from_store=lambda store: {"cost_actual": actual_spend(store, config, custom_models, state)},
        hosting=hosting,
        retry_failed=retry_failed,
    )


def bedrock_training_files(config: StudyConfig) -> tuple[Path, Path | None, dict[str, Any]]:
    """The files the customization jobs train and validate on, and what was done to them. Pairs
    gen-qa wrote were decontaminated when generated; a user's own train_path goes through the
    same near-duplicate and eval-set decontamination, unless finetune.decontaminate_train_path is
    false, which the run records; finetune.max_train_pairs then samples the pairs as the local
    path does."""
    path = training_file(config)
    validation = Path(config.finetune.validation_path) if config.finetune.validation_path else None
    if validation is not None and not validation.is_file():
        raise UserError(f"finetune.validation_path: {validation} not found")
    work_dir = config.study_dir / "bedrock"
    if config.finetune.train_path is None:
        record: dict[str, Any] = {"source": "gen-qa", "decontaminated": True}
        pairs = None
    elif not config.finetune.decontaminate_train_path:
        record = {"source": str(path), "decontaminated": False, "why": "finetune.decontaminate_train_path: false"}
        pairs = None
    else:
        eval_items = load_study_eval_set(config.eval)
        embedder = Embedder(config.retrieval.embedding_model)
        finetune = config.finetune
        pairs, report = decontaminate_training_file(
            path, eval_items, embedder, config.gen_qa, fields=finetune.train_fields, split=finetune.train_split
        )
        record = {"source": str(path), "decontaminated": True, "report": report.to_dict()}
    limit = config.finetune.max_train_pairs
    if pairs is None and not is_conversation_file(path):
        # question/answer rows (CSV, Parquet, a dataset): the jobs take chat records
        pairs = read_training_pairs(path, config.finetune.train_fields, config.finetune.train_split)
    if limit is not None:
        pairs = pairs if pairs is not None else read_training_pairs(path)
        pairs, sampled = sample_training_pairs(pairs, limit, config.seed)
        if sampled:
            record["sampled"] = sampled
    if pairs is None:
        return path, validation, record
    work_dir.mkdir(parents=True, exist_ok=True)
    cleaned = work_dir / "train.prepared.jsonl"
    write_chat_jsonl([pair.to_record() for pair in pairs], cleaned)
    record["file"] = str(cleaned)
    write_text_atomic(work_dir / "train.decontamination.json", json.dumps(record, indent=2))
    return cleaned, validation, record


def _stored_token_spend(config: StudyConfig, custom_models: dict[str, str], prices: PriceBook, state: BedrockState) -> float:
    """What the calls already in the study's store cost (earlier runs included)."""
    store = Store(config.study_dir)
    try:
        return token_spend(store.generation_usage(), price_ids(config, custom_models, state), prices)
    finally:
        store.close()


def _hosting_while_used(config: StudyConfig, state: BedrockState, clients: AwsClients, guard: SpendGuard, allow_spend: bool):
    """The pipeline's hosting hook: around one model's ft arms, host its custom model on the
    first call that the store cannot answer, and delete that hosting (every entry the state
    lists for the model, those whose create answer was lost included) when the arms are done.
    When they end by an exception, run_bedrock_study's _after_stop deletes it (or keeps it)."""
    models = {model.name: model for model in config.models}

    @contextmanager
    def host_while_used(model_name: str, custom_model_arn: str | None) -> Iterator[str | None]:
        if custom_model_arn is None:
            yield None
            return
        model = models[model_name]

        def host() -> str:
            guard.before(f"hosting {model_name}", hourly_usd(config, model))
            return host_custom_model(config, model, custom_model_arn, state, clients, allow_spend, estimate_shown=True)

        host_on_first_call(custom_model_arn, host)
        try:
            yield custom_model_arn
        finally:
            host_on_first_call(custom_model_arn, None)
        # the ft arms are done: delete the hosting now. A way out by an exception goes through
        # _after_stop instead, the one place that deletes (or keeps) hosting when a run stops.
        release_hosting(state, clients, model_arn=custom_model_arn)

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
    prices = prices_for(config)
    tokens_usd = token_spend(store.generation_usage(), price_ids(config, custom_models, state), prices)
    resources = resource_spend(state, config, prices) if state is not None else {}
    return {
        "tokens_usd": round(tokens_usd, 4),
        **{f"{kind}_usd": round(usd, 4) for kind, usd in resources.items()},
        "total_usd": round(tokens_usd + sum(resources.values()), 4),
        "source": "usage.inputTokens/outputTokens, the state file's resources x prices/bedrock.yaml (+ bedrock.prices)",
    }

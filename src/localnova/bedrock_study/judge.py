"""`localnova judge` with judges on Bedrock: the checks of a paid run before its first call.

Putting a Bedrock panel on stored runs spends money as a study's judges do, so it takes the
same road, narrowed to judging: each judge's request checked against the service's rules, a
price for every billable judge, the free preflight of the judges' model ids and routes (no
answer model, bucket or role: nothing else is called), the estimate of every judgment's first
attempt checked against bedrock.budget_usd and shown, a confirmation (or --yes), and then the
live spend guard, seeded with what the runs' stores already paid, that stops a call which
would cross the budget. A judgment already stored costs nothing: the estimate is an upper
bound.
"""

from __future__ import annotations

from collections.abc import Callable

from localnova.aws.clients import AwsClients
from localnova.bedrock.preflight import require_preflight
from localnova.bedrock.requests import check_requests
from localnova.bedrock.spend import price_ids, token_spend
from localnova.bedrock_study.dry_run import MESSAGE_OVERHEAD_TOKENS
from localnova.bedrock_study.study import confirm_on_terminal, with_bedrock_settings
from localnova.budget import SpendGuard, check_budget, spend_guarded
from localnova.config import ModelConfig, StudyConfig
from localnova.costs import (
    CostTable,
    PriceBook,
    TokenCounts,
    Usage,
    check_every_cost_priced,
    count_tokens_estimate,
    estimate_costs,
    prices_for,
)
from localnova.errors import UserError
from localnova.evaluate.judges import LLMJudge, build_panel
from localnova.judge_runs import JudgedRun, RunTarget, check_judge_models, judge_runs, stored_inputs
from localnova.store import Store

# Stands in for the answer models in the judging view: it is never called (the answers are
# stored), and a simulated model is one the preflight and the estimate pass over.
STORED_ANSWERS = ModelConfig(name="stored-answers", backend="simulated", model="stored-answers")


def uses_bedrock_judges(config: StudyConfig) -> bool:
    return any(judge.model is not None and judge.model.backend == "bedrock" for judge in config.judges)


def judging_view(config: StudyConfig) -> StudyConfig:
    """The config as far as judging stored answers goes: its judges, and nothing that answers,
    retrieves, trains or is stored in S3, so the checks and the estimate see only the judges."""
    assert config.bedrock is not None
    bedrock = config.bedrock.model_copy(update={"role_arn": None, "s3_bucket": None})
    return config.model_copy(
        update={
            "models": [STORED_ANSWERS],
            "arms": ["base"],
            "bedrock": bedrock,
            "gen_qa": config.gen_qa.model_copy(update={"generator": None}),
        }
    )


def judge_estimate(config: StudyConfig, targets: list[RunTarget]) -> CostTable:
    """The cost of every judgment's first attempt by every Bedrock judge, over every run (the
    runs' questions checked on the way)."""
    counts = TokenCounts()
    inputs = [item for target in targets for item in stored_inputs(config, target)]
    for judge in build_panel(config):
        if not isinstance(judge, LLMJudge) or judge.model.backend != "bedrock":
            continue
        usage = Usage()
        for item in inputs:
            request = judge.request(item, 0)
            usage.add(
                sum(count_tokens_estimate(content) + MESSAGE_OVERHEAD_TOKENS for _, content in request.messages),
                request.params.max_new_tokens,
            )
        counts.judges[judge.name] = usage
    return estimate_costs(judging_view(config), counts)


def estimate_text(costs: CostTable, n_runs: int, budget_usd: float, hosting: str) -> str:
    """The estimate as the command shows it: each judge's calls, tokens and cost, and the total."""
    lines = [
        f"Estimated cost of the Bedrock judges over {n_runs} run(s), USD: every judgment's first attempt, its reply counted at "
        "max_new_tokens (an upper bound; a judgment the run already holds costs nothing):"
    ]
    lines += [f"  {line.item}: ${line.cost_usd or 0.0:,.4f}{'' if line.verified else ' *'}" for line in costs.lines]
    lines.append(f"  total ${costs.total(hosting):,.2f}; budget_usd {budget_usd:,.2f}")
    if not all(line.verified for line in costs.lines):
        lines.append(f"  * price not verified on a primary page (prices read on {costs.prices_read_on})")
    return "\n".join(lines)


def _stored_spend(config: StudyConfig, targets: list[RunTarget], prices: PriceBook) -> float:
    """What the Bedrock calls already in the runs' stores cost (each store once)."""
    total = 0.0
    for folder in dict.fromkeys(target.study_dir for target in targets):
        store = Store(folder)
        try:
            total += token_spend(store.generation_usage(), price_ids(config, {}), prices)
        finally:
            store.close()
    return total


def judge_runs_on_bedrock(
    config: StudyConfig,
    targets: list[RunTarget],
    assume_yes: bool,
    skip_checks: tuple[str, ...] | list[str] = (),
    clients: AwsClients | None = None,
    confirm: Callable[[str], bool] = confirm_on_terminal,
    estimate_only: bool = False,
    out: Callable[[str], None] = print,
) -> list[JudgedRun]:
    """Check, estimate, confirm, then judge every run under the spend guard (see the module's
    docstring); with `estimate_only`, stop after printing the estimate."""
    if config.bedrock is None:
        raise UserError("bedrock: judges on Bedrock need a bedrock section (region, budget_usd)")
    config = with_bedrock_settings(config)
    view = judging_view(config)
    check_requests(view)
    check_judge_models(config)
    costs = judge_estimate(config, targets)
    hosting = config.bedrock.hosting
    check_every_cost_priced(costs, hosting)
    out(estimate_text(costs, len(targets), config.bedrock.budget_usd, hosting))
    if estimate_only:
        return []
    clients = clients or AwsClients(config.bedrock.region)
    clients.get("bedrock")  # no credentials: one clear line now
    require_preflight(view, clients, skip_checks)
    check_budget(costs, config.bedrock.budget_usd, hosting)
    if not assume_yes and not confirm(f"Judge {len(targets)} run(s) on AWS (estimate above)?"):
        raise UserError("stopped before the first billable call: not confirmed")
    prices = prices_for(config)
    guard = SpendGuard(config.bedrock.budget_usd, prices=prices)
    guard.price_ids = price_ids(config, {})
    guard.add(_stored_spend(config, targets, prices))
    with spend_guarded(guard):
        return judge_runs(config, targets)

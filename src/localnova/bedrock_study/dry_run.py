"""The Bedrock dry run: every AWS call the study would make, and what it would cost.

Offline and without credentials: the plan comes from the config, token counts from the
actual prompts when the pipeline passes them (else from the eval set and the prompt template's
size), answers counted at their max_new_tokens. The pipeline then runs the study through the
simulated backend (`simulated_bedrock_model`) and marks the report as simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localnova.bedrock.knowledge_base import corpus_files
from localnova.bedrock.placeholders import placeholder_lines
from localnova.bedrock.plan import PlannedCall, plan_calls
from localnova.config import FT_ARMS, ModelConfig, StudyConfig
from localnova.costs import (
    CostTable,
    PriceBook,
    TokenCounts,
    Usage,
    check_every_cost_priced,
    count_tokens_estimate,
    estimate_costs,
    format_cost_table,
)
from localnova.data.eval_set import load_study_eval_set
from localnova.data.formats import read_training_file
from localnova.errors import UserError
from localnova.evaluate.arms import arm_top_k, generation_params
from localnova.evaluate.latency_probe import sample_questions
from localnova.pipeline import prepare_inputs
from localnova.types import ChatRequest, EvalItem

# Sizes of the parts of a prompt we do not have in hand, in tokens (estimates): the answer
# instruction around a question, and the judge's rubric around question, truth and answer.
ANSWER_TEMPLATE_TOKENS = 60
JUDGE_TEMPLATE_TOKENS = 250
JUDGE_CONTROLS_PER_QUESTION = 3  # ground truth, an empty answer, another question's answer
MESSAGE_OVERHEAD_TOKENS = 4  # role markers per message

# Typical output speed on Bedrock (ms per output token), to give simulated latencies a
# plausible size; simulated figures are never reported as measurements.
SIMULATED_MS_PER_TOKEN = {"nova-micro": 5.0, "nova-lite": 7.0, "claude-sonnet-4-5": 18.0, "claude-3-5-sonnet": 18.0, "llama3-1-70b": 20.0}


def simulated_bedrock_model(model: ModelConfig) -> ModelConfig:
    """The same model (name, id, generation settings) answered by the simulated backend."""
    speed = next((ms for key, ms in SIMULATED_MS_PER_TOKEN.items() if key in model.model), 15.0)
    options = {**model.options, "latency_ms_per_token": speed, "simulates": "bedrock"}
    return model.model_copy(update={"backend": "simulated", "options": options})


@dataclass
class DryRunResult:
    plan: list[PlannedCall]
    token_counts: TokenCounts
    costs: CostTable
    n_questions: int
    text: str


def actual_answer_requests(config: StudyConfig) -> dict[tuple[str, str], list[ChatRequest]]:
    """The answer prompts the study will send, per (model, arm), so the estimate counts their
    real length. Before a Knowledge Base exists, the rag prompts are built from the local
    index over the same corpus, with the same chunking: the closest stand-in we have."""
    inputs = prepare_inputs(config)
    requests = {}
    for model in config.models:
        params = generation_params(model, config.seed)
        for arm in config.arms:
            requests[(model.name, arm)] = inputs.arms[arm].requests(inputs.items, params)
    return requests


def _request_tokens(request: ChatRequest) -> int:
    return sum(count_tokens_estimate(content) + MESSAGE_OVERHEAD_TOKENS for _, content in request.messages)


def corpus_tokens(path: Path) -> tuple[int, int]:
    """(estimated tokens, number of files) of the corpus Bedrock would ingest."""
    files = corpus_files(path)
    return sum(count_tokens_estimate(p.read_text(encoding="utf-8", errors="ignore")) for p in files), len(files)


def training_tokens(config: StudyConfig, eval_items: list[EvalItem]) -> int:
    """Tokens in one pass over the training file: its messages counted when it exists (the
    real run counts the file it uploads, after decontamination and sampling), else
    target_pairs pairs the size of an average eval question and answer."""
    if config.finetune.train_path and Path(config.finetune.train_path).is_file():
        records = read_training_file(config.finetune.train_path)
        return sum(count_tokens_estimate(message["content"]) for record in records for message in record.messages)
    per_pair = sum(count_tokens_estimate(i.question) + count_tokens_estimate(i.answer) for i in eval_items) / max(1, len(eval_items))
    return int(config.gen_qa.target_pairs * (per_pair + 2 * MESSAGE_OVERHEAD_TOKENS))


def estimate_token_counts(
    config: StudyConfig,
    eval_items: list[EvalItem],
    answer_requests: dict[tuple[str, str], list[ChatRequest]] | None = None,
    judge_requests: dict[str, list[ChatRequest]] | None = None,
) -> TokenCounts:
    counts = TokenCounts()
    chunking = config.corpus.chunking
    context_tokens = chunking.parent_tokens if chunking.strategy == "hierarchical" else chunking.chunk_tokens
    for model in config.models:
        per_question: dict[str, list[tuple[int, int]]] = {}  # arm -> (input, largest output) tokens of each question's request
        for arm in config.arms:
            requests = (answer_requests or {}).get((model.name, arm))
            if requests is not None:
                per_question[arm] = [(_request_tokens(request), request.params.max_new_tokens) for request in requests]
            else:
                rag_tokens = arm_top_k(config, config.arm_config(arm)) * context_tokens if config.uses_retrieval(arm) else 0
                per_question[arm] = [
                    (ANSWER_TEMPLATE_TOKENS + count_tokens_estimate(item.question) + rag_tokens, model.generation.max_new_tokens)
                    for item in eval_items
                ]
            usage = Usage()
            for tokens_in, tokens_out in per_question[arm]:
                usage.add(tokens_in, tokens_out)
            counts.answers[(model.name, arm)] = usage
        add_probe_counts(counts, config, model.name, [item.question_id for item in eval_items], per_question)
    answers_per_question = len(config.models) * len(config.arms)
    for judge in config.judges:
        if judge.kind != "llm" or judge.model is None:
            continue
        usage = Usage()
        requests = (judge_requests or {}).get(judge.name)
        if requests is not None:
            for request in requests:
                usage.add(_request_tokens(request), request.params.max_new_tokens)
        else:
            # every answer is judged, plus the control answers of each question
            controls = JUDGE_CONTROLS_PER_QUESTION if config.eval.controls else 0
            answer_tokens = sum(m.generation.max_new_tokens for m in config.models) / len(config.models)
            for item in eval_items:
                tokens = (
                    JUDGE_TEMPLATE_TOKENS + count_tokens_estimate(item.question) + count_tokens_estimate(item.answer) + int(answer_tokens)
                )
                for _ in range(answers_per_question + controls):
                    usage.add(tokens, judge.model.generation.max_new_tokens)
        counts.judges[judge.name] = usage
    if config.retrieves:
        counts.corpus_tokens = corpus_tokens(config.corpus.path)[0]
        counts.retrieval_query_tokens = sum(count_tokens_estimate(i.question) for i in eval_items)
    if config.fine_tunes:
        counts.training_tokens = training_tokens(config, eval_items)
    return counts


def add_probe_counts(
    counts: TokenCounts, config: StudyConfig, model_name: str, question_ids: list[str], per_question: dict[str, list[tuple[int, int]]]
) -> None:
    """The latency probe's calls of one model (evaluate/latency_probe.py), into `counts`: per
    probed arm, its own request for each sampled question (min(questions, eval.latency_probe.
    questions)), once per round, at most eval.latency_probe.max_new_tokens out where set; and
    for each backend (the base model's arms, the adapter's), one untimed call of the first
    arm's request for the first sampled question, one token out."""
    arms = config.probed_arms
    if not arms or not question_ids:
        return
    probe = config.eval.latency_probe
    # the run samples by question id; an eval set stretched to n questions repeats its ids, so
    # there each position counts as a question of its own
    ids = question_ids if len(set(question_ids)) == len(question_ids) else [str(i) for i in range(len(question_ids))]
    sampled = set(sample_questions(ids, probe.questions, config.seed))
    positions = [position for position, question_id in enumerate(ids) if question_id in sampled]
    for arm in arms:
        usage = Usage()
        for position in positions:
            tokens_in, tokens_out = per_question[arm][position]
            cap = tokens_out if probe.max_new_tokens is None else min(tokens_out, probe.max_new_tokens)
            usage.add(tokens_in * probe.repeats, cap * probe.repeats, probe.repeats)
        counts.probe[(model_name, arm)] = usage
    first_of_backend: dict[bool, str] = {}  # answered by the adapter? -> the first arm that backend answers
    for arm in arms:
        first_of_backend.setdefault(arm in FT_ARMS, arm)
    warm_up_in = per_question[arms[0]][positions[0]][0]
    for arm in first_of_backend.values():
        counts.probe[(model_name, arm)].add(warm_up_in, 1)
        counts.probe_warm_ups[(model_name, arm)] = 1


def hosting_schedule(config: StudyConfig, counts: TokenCounts, costs: CostTable) -> list[str]:
    """The order in which the real run creates and deletes hosting, and what each window costs
    under both hosting choices: hosting exists only while its own model's ft arms run."""
    if not config.fine_tunes:
        return []
    names = [model.name for model in config.models]
    provisioned = {
        line.item.split(":", 1)[0]: line
        for line in costs.lines
        if line.step == "hosting" and line.hosting == "provisioned" and line.cost_usd is not None
    }
    lines = ["Hosting schedule (hosting lives only while its model's ft arms and latency probe run; hours from create to delete):"]
    lines.append(f"  1. customization jobs for {', '.join(names)}, all started before any hosting exists")
    for step, name in enumerate(names, 2):
        requests = sum(u.requests for (model, arm), u in counts.answers.items() if model == name and arm in FT_ARMS)
        probed = {arm: u.requests for (model, arm), u in counts.probe.items() if model == name}
        line = provisioned.get(name)
        pt = f"provisioned {line.quantity:g} unit-hour(s) ${line.cost_usd:,.2f}" if line else "provisioned: no price"
        probe = ""
        if probed:
            on_custom = sum(calls for arm, calls in probed.items() if arm in FT_ARMS)
            probe = f", then the latency probe ({sum(probed.values())} calls one at a time, {on_custom} on the custom model)"
        lines.append(f"  {step}. {name}: create hosting -> {requests} ft calls{probe} -> delete; {pt}; on-demand $0.00 an hour")
    lines.append(f"  {len(names) + 2}. judges: no hosting is live")
    if config.probed_arms:
        lines.append(
            "  a rerun hosts a model again while any of its ft answers or latency probe rounds is missing from the store, "
            "for the probe alone too (eval.latency_probe.enabled: false turns the probe off)"
        )
    pt_total = sum(line.cost_usd or 0.0 for line in provisioned.values())
    lines.append(f"  hosting total: provisioned ${pt_total:,.2f}; on-demand $0.00 (its ft tokens are under answers and latency probe)")
    return lines


def dry_run(
    config: StudyConfig,
    answer_requests: dict[tuple[str, str], list[ChatRequest]] | None = None,
    judge_requests: dict[str, list[ChatRequest]] | None = None,
    eval_items: list[EvalItem] | None = None,
    n_questions: int | None = None,
    prices: PriceBook | None = None,
    out: Callable[[str], None] | None = print,
    uploaded_training_tokens: int | None = None,
) -> DryRunResult:
    """Print (via `out`) the AWS calls the study would make and the cost table with both
    hosting totals. `n_questions` repeats/trims the eval set to that many questions (e.g. the
    post's 10); `uploaded_training_tokens` is the count of the file the real run uploads. A billable
    model without a price is one UserError naming its key. No credentials, no network, no boto3."""
    if config.bedrock is None:
        raise UserError("bedrock: a dry run of the Bedrock path needs a bedrock section")
    items = list(eval_items) if eval_items is not None else load_study_eval_set(config.eval)
    if config.eval.limit:
        items = items[: config.eval.limit]
    if n_questions is not None:
        if not items:
            raise UserError("eval.path: the eval set is empty")
        items = [items[i % len(items)] for i in range(n_questions)]
    counts = estimate_token_counts(config, items, answer_requests, judge_requests)
    if uploaded_training_tokens is not None and config.fine_tunes:
        counts.training_tokens = uploaded_training_tokens
    _, n_files = corpus_tokens(config.corpus.path) if config.retrieves else (0, 0)
    judge_calls = max((u.requests for u in counts.judges.values()), default=0)
    timed = {key: usage.requests - counts.probe_warm_ups.get(key, 0) for key, usage in counts.probe.items()}
    plan = plan_calls(config, len(items), n_files, judge_calls, timed, counts.probe_warm_ups)
    costs = estimate_costs(config, counts, prices)
    check_every_cost_priced(costs, config.bedrock.hosting)
    text = "\n".join(
        [
            f"DRY RUN of study {config.name!r} on Bedrock ({config.bedrock.region}): no AWS call is made",
            f"{len(items)} eval questions; calls in order:",
        ]
        + ["  " + call.format() for call in plan]
        + [""]
        + hosting_schedule(config, counts, costs)
        + [
            "",
            "Estimated cost (USD):",
            format_cost_table(costs),
            f"budget_usd: {config.bedrock.budget_usd:,.2f}; hosting chosen: {config.bedrock.hosting}",
        ]
        + placeholder_lines(config)
    )
    if out is not None:
        out(text)
    return DryRunResult(plan, counts, costs, len(items), text)


def simulated_study(config: StudyConfig) -> StudyConfig:
    """The dry run's study: every Bedrock model and judge answered by the simulated backend
    at Bedrock-like speeds, in a folder of its own so it never mixes with a real run."""
    judges = [j.model_copy(update={"model": simulated_bedrock_model(j.model)}) if j.model else j for j in config.judges]
    return config.model_copy(
        update={
            "name": f"{config.name}-dry-run",
            "models": [simulated_bedrock_model(m) for m in config.models],
            "judges": judges,
        }
    )

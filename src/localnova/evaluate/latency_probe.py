"""The latency probe: arms timed side by side, so that a busy machine cannot pass for an effect.

The study answers each arm in batches, one arm after another. Their times say how fast a
batch went through (throughput), but compared between arms they also compare whatever else
the machine, or the service, was doing while each arm ran: on a shared 2-core machine the
demo once showed fine-tuning 79% faster than base because base ran in a busier minute.

So, on a seeded sample of questions, every arm of a model answers the question's own request
on its own (one request, nothing else of the study running), the arms in a random order drawn
per question and round, and the rounds repeated. A slow minute then falls on every arm alike,
on average, and the comparison is paired: per question, each arm's mean time over the rounds
against the base arm's, as a % change of the means with the paired t interval over questions
that every change against base gets (`statistics.pct_change_vs_base`).

Each request's timing goes into the store as soon as it answers (`Store.save_probe_timing`),
with a line in the ledger of the probe's paid calls, as an answer does on Bedrock: a paid call
is never lost. A run cut short mid-round resumes that round with the arms it had not timed
yet (in the round's own order), rather than paying again for those it had; a round whose
stored timings no longer match what is timed now (another model, another prompt) is measured
again whole. Like answers and judgments, a round some other run of the study measured whole,
for exactly the same requests (`generation_key`: backend identity and request), is this run's
too, at no call. Each backend answers one untimed warm-up request per sitting that times it.

Every probe call says what it is (`probe_tags`: Bedrock sends them as Converse's
requestMetadata): in the account's invocation logs a probe call is told from an answer, its
run, model, arm, question and round named, although its request is the answer's own.
"""

from __future__ import annotations

import dataclasses
import random
import statistics as stats
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from localnova.backends.base import Backend
from localnova.config import BASE_ARM, LatencyProbeConfig, ModelConfig, StudyConfig
from localnova.console import progress, stage
from localnova.evaluate.arms import ArmInputs, generation_params
from localnova.evaluate.statistics import ordered_arms, pct_change_vs_base
from localnova.store import PROBE_WARM_UP, ProbeCall, ProbeTiming, Store, generation_key
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, EvalItem, GenerationResult, stable_hash

# How the report names where the latency comparison comes from.
PROBE_METHOD = (
    "interleaved probe: one request at a time, the arms in a random order per question and round, "
    "% change of the per-question means paired by question, paired t interval over questions"
)


# What a probe call's log tags say it is (`probe_tags`, `warm_up_tags`).
PROBE_CALL_TAG = "latency-probe"
WARM_UP_CALL_TAG = "latency-probe-warm-up"


@dataclass(frozen=True)
class ProbeArm:
    """What the probe needs of one arm: the backend that answers it, and its request for each
    sampled question (as the study sends it, with the probe's token cap applied)."""

    backend: Backend
    requests: dict[str, ChatRequest]


def sample_questions(question_ids: list[str], size: int, seed: int) -> list[str]:
    """`size` of the question ids (all when fewer), drawn with `seed`, in study order."""
    if size >= len(question_ids):
        return list(question_ids)
    chosen = set(random.Random(stable_hash(["latency probe", seed], 16)).sample(question_ids, size))
    return [question_id for question_id in question_ids if question_id in chosen]


def round_order(arms: list[str], model: str, question_id: str, round_index: int, seed: int) -> list[str]:
    """The order in which the arms answer one question in one round: a random permutation,
    its own for every (model, question, round), the same on every rerun."""
    order = sorted(arms)
    random.Random(stable_hash(["latency probe order", seed, model, question_id, round_index], 16)).shuffle(order)
    return order


def capped(request: ChatRequest, max_new_tokens: int | None) -> ChatRequest:
    """The request with at most `max_new_tokens` new tokens (unchanged without a cap)."""
    if max_new_tokens is None or request.params.max_new_tokens <= max_new_tokens:
        return request
    return dataclasses.replace(request, params=dataclasses.replace(request.params, max_new_tokens=max_new_tokens))


def probe_model(
    config: StudyConfig,
    store: Store,
    model: ModelConfig,
    items: list[EvalItem],
    arm_inputs: dict[str, ArmInputs],
    backends: dict[str, Backend],
    timings: dict[str, float],
) -> None:
    """The probe of one model's arms (`backends` maps each to what answers it), as the study
    config sets it, when it is on and there are two arms to compare; its seconds go to
    `timings["latency probe <model>"]`."""
    probe = config.eval.latency_probe
    if not probe.enabled or len(backends) < 2:
        return
    params = generation_params(model, config.seed)
    sample = set(sample_questions([item.question_id for item in items], probe.questions, config.seed))
    arms = {}
    for arm, backend in backends.items():
        requests = {
            item.question_id: capped(request, probe.max_new_tokens)
            for item, request in zip(items, arm_inputs[arm].requests(items, params), strict=True)
            if item.question_id in sample
        }
        arms[arm] = ProbeArm(backend, requests)
    with stage(f"latency probe {model.name}", timings):
        run_probe(store, model.name, arms, probe, config.seed)


def probe_tags(run_id: str, model: str, arm: str, question_id: str, round_index: int) -> tuple[tuple[str, str], ...]:
    """The log tags of one timed probe request: what it is, and which timing it is."""
    return (
        ("localnova-call", PROBE_CALL_TAG),
        ("localnova-run", run_id),
        ("model", model),
        ("arm", arm),
        ("question", question_id),
        ("round", str(round_index)),
    )


def warm_up_tags(run_id: str, model: str, sitting: int) -> tuple[tuple[str, str], ...]:
    """The log tags of a backend's untimed warm-up call: its run's n-th for that backend."""
    return (("localnova-call", WARM_UP_CALL_TAG), ("localnova-run", run_id), ("model", model), ("sitting", str(sitting)))


def run_probe(
    store: Store,
    model: str,
    arms: dict[str, ProbeArm],
    config: LatencyProbeConfig,
    seed: int,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """Time every arm of `model` on the sampled questions, `config.repeats` rounds each,
    storing each request as it answers; what the store already holds for what is timed now is
    kept (see the module's docstring). Each backend that has something to time first answers
    one untimed request (loading it, warming its caches and connections), so no arm pays for a
    first call. Returns how many rounds were measured, or finished, now."""
    question_ids = [
        question_id for question_id in next(iter(arms.values())).requests if all(question_id in a.requests for a in arms.values())
    ]
    keys = {
        arm: {q: generation_key(probe_arm.backend.identity, request) for q, request in probe_arm.requests.items()}
        for arm, probe_arm in arms.items()
    }
    identities = {arm: probe_arm.backend.identity for arm, probe_arm in arms.items()}
    own, others = _stored_rounds(store, model, keys)
    todo: list[tuple[str, int, list[tuple[int, str]]]] = []  # (question, round, [(position, arm) still to time])
    for question_id in question_ids:
        for round_index in range(config.repeats):
            done = own.get((question_id, round_index), {})
            if len(done) == len(arms):
                continue
            if (question_id, round_index) in others:
                # timed whole in another run, of exactly these requests: this run's too, at no
                # call (what this run timed of it stays in the ledger of paid calls)
                store.save_probe_round(others[(question_id, round_index)], identities)
                continue
            order = round_order(list(arms), model, question_id, round_index, seed)
            todo.append((question_id, round_index, [(position, arm) for position, arm in enumerate(order) if arm not in done]))
    if not todo:
        return 0
    run_id = str(store.run_id)
    called = {id(arms[arm].backend): arms[arm].backend for _, _, missing in todo for _, arm in missing}
    first = next(iter(arms))
    warm_up = capped(arms[first].requests[todo[0][0]], 1)
    made = store.probe_calls()
    for backend in called.values():
        backend.load()
        sitting = sum(1 for call in made if call.kind == PROBE_WARM_UP and call.model == model and call.backend == backend.identity)
        (result,) = backend.generate([dataclasses.replace(warm_up, log_tags=warm_up_tags(run_id, model, sitting))])
        key = generation_key(backend.identity, warm_up)
        call = ProbeCall(
            model, PROBE_WARM_UP, "", todo[0][0], None, sitting, backend.identity, key, result.input_tokens, result.output_tokens
        )
        store.save_probe_warm_up(call)  # untimed, but paid where the backend bills
    with progress(len(todo), f"latency probe {model}", unit="round") as bar:
        for question_id, round_index, missing in todo:
            for position, arm in missing:
                request = arms[arm].requests[question_id]
                tagged = dataclasses.replace(request, log_tags=probe_tags(run_id, model, arm, question_id, round_index))
                started = clock()
                (result,) = arms[arm].backend.generate([tagged])
                latency_ms = request_time_ms(result, (clock() - started) * 1000.0)
                timing = ProbeTiming(
                    model,
                    arm,
                    question_id,
                    round_index,
                    position,
                    keys[arm][question_id],
                    latency_ms,
                    result.input_tokens,
                    result.output_tokens,
                )
                store.save_probe_timing(timing, identities[arm])
            bar.update(1)
    return len(todo)


def request_time_ms(result: GenerationResult, wall_ms: float) -> float:
    """The time of one probe request: what the backend measured where it times each request
    on its own (a server's or an API's attempt that answered, without the waits between
    retries that would charge a throttled minute to one arm; the simulated backend's
    simulated time), else the probe's own clock around the call."""
    if result.batch_size == 1 and result.latency_method.startswith(LATENCY_PER_REQUEST):
        return float(result.latency_ms)
    return wall_ms


def _stored_rounds(
    store: Store, model: str, keys: dict[str, dict[str, str]]
) -> tuple[dict[tuple[str, int], dict[str, ProbeTiming]], dict[tuple[str, int], list[ProbeTiming]]]:
    """What the store holds of this probe: (question, round) -> this run's timings by arm, for
    the rounds whose every stored timing is of what is timed now (a round with a stale one is
    left out: it is timed again whole); and (question, round) -> the timings of a round some
    other run stored whole for what is timed now: every arm, each with the key it has now."""
    own: dict[tuple[str, int], dict[str, ProbeTiming]] = {}
    stale: set[tuple[str, int]] = set()
    rounds: dict[tuple[str, str, int], list[ProbeTiming]] = {}
    for run_id, timing in store.probe_timings_of_model(model):
        pair = (timing.question_id, timing.round)
        current = keys.get(timing.arm, {}).get(timing.question_id) == timing.generation_key
        if run_id == store.run_id:
            if current:
                own.setdefault(pair, {})[timing.arm] = timing
            else:
                stale.add(pair)
        elif current:
            rounds.setdefault((run_id, timing.question_id, timing.round), []).append(timing)
    others: dict[tuple[str, int], list[ProbeTiming]] = {}
    for (_, question_id, round_index), timings in sorted(rounds.items()):
        if {timing.arm for timing in timings} == set(keys):
            others.setdefault((question_id, round_index), timings)
    return {pair: timings for pair, timings in own.items() if pair not in stale}, others


@dataclass(frozen=True)
class ProbeCell:
    """One model x arm in the probe: its times, and its % change against the base arm, paired
    by question (NaN for the base arm, or without one)."""

    model: str
    arm: str
    n_questions: int
    n_requests: int
    median_ms: float
    p90_ms: float  # numpy's linear-interpolation percentile, as the batched table's
    mean_ms: float
    pct_vs_base: float
    pct_vs_base_low: float
    pct_vs_base_high: float


def probe_summary(timings: Iterable[ProbeTiming], confidence: float = 0.95, base_arm: str = BASE_ARM) -> list[ProbeCell]:
    """Per model x arm: median, p90 and mean of its probe times, and the % change of its mean
    per-question time against the base arm's over the questions both were timed on, with the
    paired t interval every change against base gets (`statistics.paired_change`: questions
    are the unit, the pairing kept)."""
    per_question: dict[tuple[str, str], dict[str, list[float]]] = {}
    for timing in timings:
        per_question.setdefault((timing.model, timing.arm), {}).setdefault(timing.question_id, []).append(timing.latency_ms)
    cells = []
    for model in dict.fromkeys(model for model, _ in per_question):
        base = per_question.get((model, base_arm))
        base_means = {q: stats.fmean(times) for q, times in base.items()} if base else None
        for arm in ordered_arms((a for m, a in per_question if m == model), base_arm):
            by_question = per_question[(model, arm)]
            every = [time_ms for times in by_question.values() for time_ms in times]
            pct = (float("nan"),) * 3
            if base_means is not None and arm != base_arm:
                means = {q: stats.fmean(times) for q, times in by_question.items()}
                pct = pct_change_vs_base(base_means, means, confidence)
            p90 = float(np.percentile(every, 90))
            cells.append(ProbeCell(model, arm, len(by_question), len(every), stats.median(every), p90, stats.fmean(every), *pct))
    return cells

"""The latency probe: a machine that gets busier during the run cannot pass for an arm's effect,
its rounds are resumable, and its % change is the paired one, checked by hand."""

from __future__ import annotations

import math

import pytest

from localnova.backends.base import Backend
from localnova.config import LatencyProbeConfig
from localnova.evaluate.arms import DEFAULT_PROMPT, ArmInputs
from localnova.evaluate.latency_probe import ProbeArm, capped, probe_summary, round_order, run_probe, sample_questions
from localnova.evaluate.runner import answer_arm
from localnova.evaluate.statistics import GenerationRow
from localnova.evaluate.summary import latency_token_summary
from localnova.store import ProbeTiming, Store
from localnova.types import LATENCY_PER_REQUEST, ChatRequest, EvalItem, GenerationParams, GenerationResult


class Clock:
    """Simulated wall time, in seconds: the fake backends advance it as they work."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BusierMachine(Backend):
    """Every arm the same model, on a machine that gets busier as the run goes on: a request
    takes 100 ms, plus `growth` of that for every second that has passed."""

    def __init__(self, clock: Clock, name: str, growth: float = 0.1) -> None:
        self.clock, self.identity, self.loads, self.growth = clock, {"backend": "busier", "model": name}, 0, growth
        self.sent: list[ChatRequest] = []  # every request answered, log tags included

    def load(self) -> None:
        self.loads += 1

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            self.sent.append(request)
            latency_ms = 100.0 * (1.0 + self.growth * self.clock.now)
            self.clock.now += latency_ms / 1000.0
            results.append(
                GenerationResult(text="a", input_tokens=3, output_tokens=2, latency_ms=latency_ms, latency_method=LATENCY_PER_REQUEST)
            )
        return results


ITEMS = [EvalItem(f"q{i:02d}", f"Question {i}?", f"Answer {i}.") for i in range(40)]
ARMS = ("base", "rag", "ft", "ft_rag")


def _requests(arm: str) -> dict[str, ChatRequest]:
    # each arm its own prompt, as retrieval and the adapter make them; the same work to answer
    return {item.question_id: ChatRequest((("user", f"{arm}: {item.question}"),), GenerationParams(max_new_tokens=8)) for item in ITEMS}


def test_a_machine_that_gets_busier_mid_run_is_no_arm_effect(tmp_path):
    clock = Clock()
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    # The batched study: every arm in turn, all its questions at once. The later an arm runs,
    # the busier the machine: ft_rag, last, looks far slower than base although nothing differs.
    backends = {arm: BusierMachine(clock, arm) for arm in ARMS}
    for arm in ARMS:
        answer_arm(
            store, backends[arm], "m", arm, ITEMS, ArmInputs(DEFAULT_PROMPT, [[]] * len(ITEMS)), GenerationParams(max_new_tokens=8), 8
        )
    rows = [GenerationRow(a.model, a.arm, a.question_id, a.result.latency_ms, 1, 1) for a in store.answers()]
    batched = {cell.arm: cell.pct_vs_base["latency_ms_median"] for cell in latency_token_summary(rows) if cell.arm != "base"}
    assert batched["rag"] > 10 and batched["ft"] > 20 and batched["ft_rag"] > 30
    # The probe, on the same machine still getting busier: arms interleaved per question.
    arms = {arm: ProbeArm(backends[arm], _requests(arm)) for arm in ARMS}
    assert run_probe(store, "m", arms, LatencyProbeConfig(questions=40, repeats=2), seed=0, clock=clock) == 80
    cells = {cell.arm: cell for cell in probe_summary(store.probe_timings())}
    for arm in ("rag", "ft", "ft_rag"):
        cell = cells[arm]
        # no effect, and the interval says so: it holds 0, and is far from the batched figure
        assert cell.pct_vs_base_low < 0 < cell.pct_vs_base_high and abs(cell.pct_vs_base) < 2
        assert cell.pct_vs_base_high < batched[arm]
        assert cell.n_questions == 40 and cell.n_requests == 80


def test_a_real_effect_is_still_found_on_a_busier_machine(tmp_path):
    class SlowerArm(BusierMachine):
        def generate(self, requests):
            results = super().generate(requests)
            self.clock.now += 0.05 * len(requests)  # 50 ms more per request, whatever the load
            return [GenerationResult(**{**r.to_dict(), "latency_ms": r.latency_ms + 50.0}) for r in results]

    clock = Clock()
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    base, ft = BusierMachine(clock, "base", growth=0.001), SlowerArm(clock, "ft", growth=0.001)
    arms = {"base": ProbeArm(base, _requests("base")), "ft": ProbeArm(ft, _requests("ft"))}
    run_probe(store, "m", arms, LatencyProbeConfig(questions=40, repeats=2), seed=0, clock=clock)
    (ft,) = [cell for cell in probe_summary(store.probe_timings()) if cell.arm == "ft"]
    # 50 ms on a base that grows from 100 ms to about 102 ms over the probe's ~20 s: near +49%
    assert 40 < ft.pct_vs_base_low < ft.pct_vs_base < ft.pct_vs_base_high < 50


def test_rounds_are_stored_as_they_end_and_a_rerun_measures_only_what_is_missing(tmp_path):
    clock = Clock()
    store = Store(tmp_path)
    store.start_run("s", {}, {})
    backends = {arm: BusierMachine(clock, arm) for arm in ("base", "rag")}
    arms = {arm: ProbeArm(backends[arm], dict(list(_requests(arm).items())[:3])) for arm in backends}
    config = LatencyProbeConfig(questions=3, repeats=2)
    assert run_probe(store, "m", arms, config, seed=0, clock=clock) == 6
    assert len(store.probe_timings()) == 12 and all(backend.loads == 1 for backend in backends.values())
    # all stored: nothing is loaded, nothing asked
    assert run_probe(store, "m", arms, config, seed=0, clock=clock) == 0 and all(b.loads == 1 for b in backends.values())
    # a round left without one arm's timing is finished: that arm alone is asked again
    store.connection.execute("DELETE FROM latency_probe WHERE question_id='q01' AND round=1 AND arm='rag'")
    asked = {arm: len(backend.sent) for arm, backend in backends.items()}
    assert run_probe(store, "m", arms, config, seed=0, clock=clock) == 1
    assert {arm: len(backend.sent) - asked[arm] for arm, backend in backends.items()} == {"base": 0, "rag": 1 + 1}  # warm-up, request
    # another backend identity for one arm: what was timed changed, so every round is timed again
    backends["rag"].identity = {"backend": "busier", "model": "rag-2"}
    assert run_probe(store, "m", arms, config, seed=0, clock=clock) == 6
    # a probe's calls count in what a paid backend was paid for, warm-ups included
    usage = store.generation_usage()
    assert sum(1 for identity, _, _ in usage if identity == {"backend": "busier", "model": "rag-2"}) == 6 + 1


def test_another_run_of_the_same_requests_reuses_the_rounds_and_pays_nothing_twice(tmp_path):
    clock = Clock()
    store = Store(tmp_path)
    first_run = store.start_run("s", {"budget": 1}, {})
    backends = {arm: BusierMachine(clock, arm) for arm in ("base", "ft")}
    arms = {arm: ProbeArm(backends[arm], dict(list(_requests(arm).items())[:3])) for arm in backends}
    config = LatencyProbeConfig(questions=3, repeats=2)
    run_probe(store, "m", arms, config, seed=0, clock=clock)
    paid = len(store.generation_usage())
    # a run with another config (a larger budget, say) asks the same requests: no new call
    second_run = store.start_run("s", {"budget": 2}, {})
    assert second_run != first_run and run_probe(store, "m", arms, config, seed=0, clock=clock) == 0
    reused = store.probe_timings(second_run)
    assert len(reused) == 12 and {t.measured_in_run for t in reused} == {first_run}
    assert [t.latency_ms for t in reused] == [t.latency_ms for t in store.probe_timings(first_run)]
    assert len(store.generation_usage()) == paid and all(b.loads == 1 for b in backends.values())


class CutShort(BusierMachine):
    """A backend whose `cut_at`-th request (counted over every instance) is cut off by Ctrl-C
    before it is answered: nothing is paid for it."""

    count = [0]
    cut_at: int | None = None

    def generate(self, requests):
        CutShort.count[0] += 1
        if CutShort.count[0] == CutShort.cut_at:
            raise KeyboardInterrupt
        return super().generate(requests)


def test_a_run_cut_short_mid_round_resumes_it_and_pays_for_no_request_twice(tmp_path):
    clock = Clock()
    store = Store(tmp_path)
    run_id = store.start_run("s", {}, {})
    backends = {arm: CutShort(clock, arm) for arm in ("base", "ft")}
    arms = {arm: ProbeArm(backends[arm], dict(list(_requests(arm).items())[:3])) for arm in backends}
    config = LatencyProbeConfig(questions=3, repeats=2)
    # two warm-ups, then round 0 of q00 (two requests), then the first arm of its round 1; Ctrl-C at the next
    CutShort.count[0], CutShort.cut_at = 0, 2 + 2 + 2
    with pytest.raises(KeyboardInterrupt):
        run_probe(store, "m", arms, config, seed=0, clock=clock)
    assert len(store.probe_timings()) == 3  # each answered request was stored as it answered
    CutShort.cut_at = None
    assert run_probe(store, "m", arms, config, seed=0, clock=clock) == 6 - 1  # q00's round 1 finished, 4 rounds whole
    sent = [request for backend in backends.values() for request in backend.sent]
    timed = [dict(request.log_tags) for request in sent if dict(request.log_tags)["localnova-call"] == "latency-probe"]
    wanted = [(arm, f"q0{q}", str(r)) for arm in ("base", "ft") for q in range(3) for r in range(2)]
    assert sorted((tags["arm"], tags["question"], tags["round"]) for tags in timed) == sorted(wanted)  # each once
    assert {(tags["localnova-run"], tags["model"]) for tags in timed} == {(run_id, "m")}
    warm_ups = [dict(request.log_tags) for request in sent if dict(request.log_tags)["localnova-call"] == "latency-probe-warm-up"]
    assert sorted(tags["sitting"] for tags in warm_ups) == ["0", "0", "1", "1"]  # one per backend per sitting
    # every call answered is in the ledger once: what the run paid for is what it counts
    calls = store.probe_calls()
    assert len(calls) == len(sent) == 12 + 4 and sum(call.kind == "warm-up" for call in calls) == 4
    assert len(store.generation_usage()) == 12 + 4 and len(store.probe_timings()) == 12
    # the round timed over two sittings keeps each arm's place in the round's own order
    order = round_order(["base", "ft"], "m", "q00", 1, seed=0)
    assert [t.arm for t in store.probe_timings() if (t.question_id, t.round) == ("q00", 1)] == order


def test_the_order_of_arms_is_a_random_permutation_per_question_and_round():
    orders = {tuple(round_order(list(ARMS), "m", f"q{i}", r, seed=0)) for i in range(20) for r in range(2)}
    assert all(sorted(order) == sorted(ARMS) for order in orders) and len(orders) > 10
    assert round_order(list(ARMS), "m", "q1", 0, seed=0) == round_order(list(reversed(ARMS)), "m", "q1", 0, seed=0)
    # each arm comes first about as often as any other, over many questions
    firsts = [round_order(list(ARMS), "m", f"q{i}", 0, seed=0)[0] for i in range(400)]
    assert all(70 < firsts.count(arm) < 130 for arm in ARMS)


def test_the_sample_is_seeded_and_in_study_order():
    ids = [item.question_id for item in ITEMS]
    sample = sample_questions(ids, 5, seed=0)
    assert len(sample) == 5 and sample == sorted(sample) and sample == sample_questions(ids, 5, seed=0)
    assert sample_questions(ids, 5, seed=1) != sample and sample_questions(ids, 99, seed=0) == ids


def test_a_cap_shortens_only_longer_answers():
    request = ChatRequest((("user", "q"),), GenerationParams(max_new_tokens=48, seed=3))
    assert capped(request, 16).params == GenerationParams(max_new_tokens=16, seed=3)
    assert capped(request, 64) is request and capped(request, None) is request


def test_the_percent_change_is_the_paired_one_by_hand():
    timings = [
        # base: q1 at 100 and 300 (mean 200), q2 at 100; rag: q1 at 250, q2 at 150 and 150
        ProbeTiming("m", "base", "q1", 0, 0, "k", 100.0, 1, 1),
        ProbeTiming("m", "base", "q1", 1, 1, "k", 300.0, 1, 1),
        ProbeTiming("m", "base", "q2", 0, 0, "k", 100.0, 1, 1),
        ProbeTiming("m", "rag", "q1", 0, 1, "k", 250.0, 1, 1),
        ProbeTiming("m", "rag", "q2", 0, 1, "k", 150.0, 1, 1),
        ProbeTiming("m", "rag", "q2", 1, 0, "k", 150.0, 1, 1),
        ProbeTiming("m", "rag", "q3", 0, 0, "k", 999.0, 1, 1),  # no base time for q3: not paired
    ]
    base, rag = probe_summary(timings)
    assert (base.arm, base.n_questions, base.n_requests, base.median_ms) == ("base", 2, 3, 100.0) and math.isnan(base.pct_vs_base)
    # per-question means: base {q1: 200, q2: 100}, rag {q1: 250, q2: 150}: (200 - 150) / 150
    assert rag.pct_vs_base == pytest.approx(100 * (200 - 150) / 150)
    assert (rag.n_questions, rag.n_requests, rag.median_ms) == (3, 4, 200.0)
    # the paired t interval on the ratio r = 200/150, by hand: residuals arm - r * base are
    # -50/3 and +50/3, SD 23.570 (n - 1 = 1), SE of r 23.570 / (150 * sqrt 2) = 0.11111, and
    # t(0.975, 1 df) = 12.7062 from the table: +33.33% +/- 141.18 points
    half = 100 * 12.7062 * (50 / 3 * math.sqrt(2)) / (150 * math.sqrt(2))
    assert (rag.pct_vs_base_low, rag.pct_vs_base_high) == pytest.approx((100 / 3 - half, 100 / 3 + half), abs=0.01)

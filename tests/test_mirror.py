"""Local beside cloud: a judge hosted twice is one scale only when its hosts agree, and each
finding's change in two runs is compared as a difference of effects paired by question, with
the verdict the difference calls for. Two stores built with known effects go through
`localnova report`; the expected figures are computed here by hand from how they were built."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from localnova.cli import main
from localnova.evaluate.mirror import AGREES, CANNOT_TELL, DISAGREES, compare_effects, host_agreement
from localnova.evaluate.reproduction import RunValues
from localnova.findings import Comparison
from localnova.report.collect import collect_run
from localnova.report.crossrun import cross_run_blocks
from localnova.report.crossrun_judges import HOSTED_TWICE, RENAMED, shared_panel
from localnova.report.summarize import summarize_run
from localnova.report.tables import Paragraph, Table
from localnova.store import JudgmentRecord, Store
from localnova.types import ChatRequest, GenerationParams, GenerationResult

QUESTIONS = [f"q{i:02d}" for i in range(12)]
ARMS = ["base", "rag", "ft", "ft_rag"]
SIGN = {q: (-1) ** i for i, q in enumerate(QUESTIONS)}  # +1, -1, +1, ...: 12 questions, balanced


def test_host_agreement_by_hand():
    first = {i: 0.5 * i for i in range(14)}  # 0, 0.5, ..., 6.5
    offset = {i: first[i] + 0.5 + 0.1 * (-1) ** i for i in range(14)}  # the same order, half a point up
    found = host_agreement(first, offset)
    # differences 0.6, 0.4, ...: mean 0.5, SD 0.1038 (n-1), t(13) 2.1604: half-width 0.0599
    assert found.n == 14 and found.spearman == pytest.approx(1.0) and found.one_scale
    assert (found.mean_diff, found.diff_low, found.diff_high) == pytest.approx((0.5, 0.4401, 0.5599), abs=1e-4)
    reversed_ = {i: 6.5 - first[i] for i in range(14)}
    assert not host_agreement(first, reversed_).one_scale and "rank correlation -1.00" in host_agreement(first, reversed_).reason
    shifted = {i: first[i] + 2.0 for i in range(14)}
    assert "not inside +/-1 point" in host_agreement(first, shifted).reason
    few = host_agreement({i: first[i] for i in range(5)}, {i: first[i] for i in range(5)})
    assert not few.one_scale and "fewer than 10" in few.reason


def _values(effects: dict[str, float], measure: str = "panel_score") -> RunValues:
    base = {q: 5.0 for q in effects} if measure == "panel_score" else {q: 100.0 for q in effects}
    arm = {q: base[q] + e if measure == "panel_score" else base[q] * math.exp(e) for q, e in effects.items()}
    return RunValues(["m"], {"panel_score": {}, "latency": {}, "total_tokens": {}} | {measure: {("m", "base"): base, ("m", "rag"): arm}})


RAG = Comparison(measure="panel_score", model="larger", arm="rag", direction="up")


@pytest.mark.parametrize(
    "first, second, verdict",
    [
        # differences 3 + 0.5 s: mean 3, half-width 2.201 x 0.5222 / sqrt(12) = 0.332, excludes 0
        ({q: 3.0 + 0.25 * SIGN[q] for q in QUESTIONS}, {q: -0.25 * SIGN[q] for q in QUESTIONS}, DISAGREES),
        # differences 0.5 s: mean 0, half-width 0.332, inside +/-1
        ({q: 4.0 + 0.25 * SIGN[q] for q in QUESTIONS}, {q: 4.0 - 0.25 * SIGN[q] for q in QUESTIONS}, AGREES),
        # differences 6 s: mean 0, half-width 2.201 x 6.267 / sqrt(12) = 3.98, wider than the margin
        ({q: 1.0 + 3.0 * SIGN[q] for q in QUESTIONS}, {q: 1.0 - 3.0 * SIGN[q] for q in QUESTIONS}, CANNOT_TELL),
    ],
)
def test_the_verdict_follows_the_interval_of_the_difference(first, second, verdict):
    found = compare_effects(RAG, ("m",), ("m",), _values(first), _values(second))
    assert found.verdict == verdict and found.n == 12
    differences = [first[q] - second[q] for q in QUESTIONS]
    assert found.diff[0] == pytest.approx(sum(differences) / 12)
    if verdict == CANNOT_TELL:
        # (1.96 x 6.267 / 1)^2 = 150.9: the questions that would bound it within 1 point
        assert found.questions_needed == 151 and "about 151 questions" in found.reason


def test_a_ratio_measure_compares_the_ratio_of_ratios():
    tokens = Comparison(measure="total_tokens", model="each", arm="rag", direction="up")
    first = {q: math.log(2.0) for q in QUESTIONS}  # rag doubles every answer's tokens
    second = {q: math.log(2.5) for q in QUESTIONS}  # and multiplies them by 2.5
    found = compare_effects(tokens, ("m",), ("m",), _values(first, "total_tokens"), _values(second, "total_tokens"))
    # 2 / 2.5 = 0.8: 20% fewer, every question alike, so the interval has no width and excludes 0
    assert found.ratio and found.first[0] == pytest.approx(100.0) and found.second[0] == pytest.approx(150.0)
    assert found.diff[0] == pytest.approx(-20.0) and found.verdict == DISAGREES


class Answers:
    """Stands in for an answer model when a store is built by hand: each answer's tokens are
    whatever the test asks of (model, arm, question)."""

    def __init__(self, model: str, tokens):
        self.identity = {"backend": "test", "model": model}
        self.tokens = tokens

    def generate(self, requests):
        results = []
        for request in requests:
            model, arm, question = request.messages[-1][1].split()
            results.append(
                GenerationResult(
                    text=f"{arm} answer to {question}", input_tokens=self.tokens(arm, question), output_tokens=10, latency_ms=1.0
                )
            )
        return results

    def requests_per_call(self, batch_size):
        return batch_size


JUDGE = {"name": "token-f1", "kind": "token_f1"}


def build_run(folder: Path, name: str, models: list[str], backend: str, effects: dict[str, dict[str, float]], tokens) -> Path:
    """A finished run whose larger model's panel score (the one judge's) is `base` plus
    effects[arm][question] in each arm; the smaller model's is flat; every judge control is
    passed (the truth 10, an empty answer 0, another truth 1)."""
    store = Store(folder)
    config = {
        "name": name,
        "seed": 0,
        "eval": {"path": "eval.jsonl"},
        "models": [{"name": model, "backend": backend, "model": model} for model in models],
        "arms": ARMS,
        "judges": [JUDGE],
    }
    store.start_run(name, {"config": config, "arms": ARMS, "limit": None, "simulated": False}, {})
    store.save_artifact("eval_items", [{"question_id": q, "question": f"What is {q}?", "answer": f"{q} is a part."} for q in QUESTIONS])
    store.save_artifact("judge_identity:token-f1", {"judge": "token-f1", "kind": "token_f1"})
    judgments = []
    for model in models:
        for arm in ARMS:
            requests = [
                ChatRequest.from_messages([{"role": "user", "content": f"{model} {arm} {q}"}], GenerationParams()) for q in QUESTIONS
            ]
            keys, _ = store.generate_cached(Answers(model, tokens), requests, 16)
            store.save_answers(model, arm, QUESTIONS, keys, [[] for _ in QUESTIONS])
            for q, key in zip(QUESTIONS, keys, strict=True):
                score = 3.0 + (effects[arm][q] if model == models[-1] else 0.0)
                judgments.append(JudgmentRecord("token-f1", model, arm, q, "answer", key, score, "token_f1", None, None, 1))
    for q in QUESTIONS:
        for subject, score in (("control_ground_truth", 10.0), ("control_empty", 0.0), ("control_other", 1.0)):
            judgments.append(JudgmentRecord("token-f1", "", "", q, subject, f"{q}-{subject}", score, "token_f1", None, None, 1))
    store.save_judgments(judgments)
    store.finish_run(True)
    store.close()
    return folder


FINDINGS = {
    "study": "two runs built with known effects",
    "source": "tests/test_mirror.py",
    "checked_against_page": True,
    "findings": [
        {"id": "rag", "claim": "Retrieval helps.", "post_figure": "+3 points", "where": "by construction",
         "comparisons": [{"measure": "panel_score", "model": "larger", "arm": "rag", "direction": "up"}]},
        {"id": "ft-rag", "claim": "Both help.", "post_figure": "+4 points", "where": "by construction",
         "comparisons": [{"measure": "panel_score", "model": "larger", "arm": "ft_rag", "direction": "up"}]},
        {"id": "ft", "claim": "Fine-tuning helps.", "post_figure": "+1 point", "where": "by construction",
         "comparisons": [{"measure": "panel_score", "model": "larger", "arm": "ft", "direction": "up"}]},
        {"id": "tokens", "claim": "Retrieval doubles the tokens.", "post_figure": "x2", "where": "by construction",
         "comparisons": [{"measure": "total_tokens", "model": "each", "arm": "rag", "direction": "up"}]},
    ],
}  # fmt: skip


def test_two_stores_with_known_effects_get_the_verdicts_their_difference_calls_for(tmp_path):
    """Local: rag +3, ft_rag +4, ft +1 +/- 3; cloud: rag +0, ft_rag +4, ft +1 -/+ 3 (larger
    model, points of the shared token-F1 judge, +/- alternating by question); retrieval
    doubles each answer's tokens (10 in and 10 out, 30 in with the passages) in both runs."""

    def tokens(arm: str, question: str) -> int:
        return 30 if "rag" in arm else 10

    local_effects = {
        "base": dict.fromkeys(QUESTIONS, 0.0),
        "rag": {q: 3.0 + 0.25 * SIGN[q] for q in QUESTIONS},
        "ft_rag": {q: 4.0 + 0.25 * SIGN[q] for q in QUESTIONS},
        "ft": {q: 1.0 + 3.0 * SIGN[q] for q in QUESTIONS},
    }
    cloud_effects = {
        "base": dict.fromkeys(QUESTIONS, 0.0),
        "rag": {q: -0.25 * SIGN[q] for q in QUESTIONS},
        "ft_rag": {q: 4.0 - 0.25 * SIGN[q] for q in QUESTIONS},
        "ft": {q: 1.0 - 3.0 * SIGN[q] for q in QUESTIONS},
    }
    # the cloud run is given first: the section still reads local minus cloud
    cloud = build_run(tmp_path / "cloud", "cloud", ["nova-micro", "nova-lite"], "bedrock", cloud_effects, tokens)
    local = build_run(tmp_path / "local", "local", ["small", "large"], "vllm", local_effects, tokens)
    findings = tmp_path / "findings.yaml"
    findings.write_text(yaml.safe_dump(FINDINGS, sort_keys=False))
    assert main(["report", str(cloud), str(local), "--findings", str(findings), "--out", str(tmp_path / "out")]) == 0
    section = (tmp_path / "out" / "report.md").read_text().split("## Across runs, paired by question", 1)[1].split("\n## ", 1)[0]
    assert "Each finding, local local-" in section and "beside cloud cloud-" in section
    by_finding: dict[str, list[list[str]]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if len(cells) == 7 and cells[0][:2] in ("1.", "2.", "3.", "4."):
            by_finding.setdefault(cells[0][:2], []).append(cells)
    (rag,) = by_finding["1."]
    assert rag[2] == "12" and rag[3].startswith("+3.00 pts") and rag[4].startswith("+0.00 pts")
    assert rag[5].startswith("+3.00 pts \\[+2.67, +3.33\\]") and rag[6].startswith(DISAGREES)
    (ft_rag,) = by_finding["2."]
    assert ft_rag[5].startswith("+0.00 pts \\[-0.33, +0.33\\]") and ft_rag[6] == AGREES
    (ft,) = by_finding["3."]
    assert ft[5].startswith("+0.00 pts \\[-3.98, +3.98\\]") and ft[6].startswith(CANNOT_TELL)
    # tokens, on each model paired from the largest down: x2 in both runs, a ratio of ratios of 1
    tokens_rows = by_finding["4."]
    assert [row[1] for row in tokens_rows] == ["rag vs base, small \\| nova-micro", "rag vs base, large \\| nova-lite"]
    assert all(row[3].startswith("+100.0%") and row[5].startswith("+0.0%") and row[6] == AGREES for row in tokens_rows)
    verdicts = [line for line in section.splitlines() if line.startswith("| ") and line.count(" | ") == 2 and line[2].isdigit()]
    assert [line.rsplit(" | ", 1)[1].rstrip(" |") for line in verdicts] == [DISAGREES, AGREES, CANNOT_TELL, AGREES]


def _host_run(folder: Path, name: str, backend: dict, copy: tuple[str, dict, float] | None, order=1.0) -> Path:
    """A run judged by `llama` on `backend` (its stored identity's host), and, with `copy`, by a
    judge stored as copy[0] with identity copy[1] whose scores are llama's times `order` plus copy[2]."""
    store = Store(folder)
    judges = [{"name": "llama", "kind": "llm", "model": {"name": "llama", "backend": backend["backend"], "model": backend["model"]}}]
    config = {
        "name": name,
        "seed": 0,
        "eval": {"path": "eval.jsonl"},
        "models": [{"name": "m", "backend": "vllm", "model": "m"}],
        "arms": ["base", "rag"],
        "judges": judges,
    }
    store.start_run(name, {"config": config, "arms": ["base", "rag"], "limit": None, "simulated": False}, {})
    store.save_artifact("eval_items", [{"question_id": q, "question": f"What is {q}?", "answer": f"{q} is a part."} for q in QUESTIONS])
    settings = {"kind": "llm", "prompt": "p", "scoring": "parsed", "seed": 0}
    identities = {"llama": {"judge": "llama", **settings, "backend": backend}}
    if copy:
        identities[copy[0]] = {"judge": copy[0], **settings, "backend": copy[1]}
    for judge, identity in identities.items():
        store.save_artifact(f"judge_identity:{judge}", identity)
    judgments = []
    for arm in ("base", "rag"):
        requests = [ChatRequest.from_messages([{"role": "user", "content": f"m {arm} {q}"}], GenerationParams()) for q in QUESTIONS]
        keys, _ = store.generate_cached(Answers("m", lambda arm, q: 10), requests, 16)
        store.save_answers("m", arm, QUESTIONS, keys, [[] for _ in QUESTIONS])
        for i, (q, key) in enumerate(zip(QUESTIONS, keys, strict=True)):
            score = 2.0 + (i % 6) + (2.0 if arm == "rag" else 0.0)
            judgments.append(JudgmentRecord("llama", "m", arm, q, "answer", key, score, "parsed", None, None, 1))
            if copy:
                copied = (score if order > 0 else 12.0 - score) + copy[2]
                judgments.append(JudgmentRecord(copy[0], "m", arm, q, "answer", key + "c", copied, "parsed", None, None, 1))
    store.save_judgments(judgments)
    store.finish_run(True)
    store.close()
    return folder


VLLM = {"backend": "vllm", "model": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "weights": "w1"}
BEDROCK = {"backend": "bedrock", "model": "us.meta.llama3-1-70b-instruct-v1:0", "region": "us-east-1"}


def _panel(local: Path, cloud: Path, keep_copy_in_headline: bool = True):
    runs = [collect_run(local), collect_run(cloud)]
    summaries = [summarize_run(run) for run in runs]
    if not keep_copy_in_headline:
        kept = [j for j in summaries[0].settings["headline_judges"] if "@" not in j]
        summaries[0] = replace(summaries[0], settings=summaries[0].settings | {"headline_judges": kept})
    return runs, summaries, shared_panel(runs[0], summaries[0], runs[1], summaries[1])


def test_one_judge_on_two_hosts_is_measured_on_the_answers_both_scored(tmp_path):
    cloud = _host_run(tmp_path / "cloud", "cloud", BEDROCK, None)
    # the local run holds its own Llama (vLLM) and, put there by `localnova judge`, the Bedrock one
    agreeing = _host_run(tmp_path / "agree", "local", VLLM, ("llama@bedrock-nova", BEDROCK, 0.3))
    runs, summaries, panel = _panel(agreeing, cloud)
    # the same-host copy is preferred: the local run's Bedrock Llama against the cloud's
    assert [(p.reference, p.other, p.how) for p in panel.pairs] == [("llama@bedrock-nova", "llama", RENAMED)]
    (check,) = panel.host_checks
    assert check.agreement.n == 24 and check.agreement.spearman == pytest.approx(1.0) and check.agreement.one_scale
    # the Bedrock host scored each answer 0.3 above: the other run's host minus the reference's
    assert check.agreement.mean_diff == pytest.approx(0.3) and "compared on the same host's scores instead" in check.note
    # without that copy in the headline, the two hosts, shown to agree, are paired as one scale
    runs, summaries, panel = _panel(agreeing, cloud, keep_copy_in_headline=False)
    assert [(p.reference, p.other, p.how) for p in panel.pairs] == [("llama", "llama", HOSTED_TWICE)]
    blocks = cross_run_blocks(runs, summaries)
    assert any(isinstance(b, Table) and b.headers[0] == "run" for b in blocks)

    disagreeing = _host_run(tmp_path / "disagree", "local", VLLM, ("llama@bedrock-nova", BEDROCK, 0.0), order=-1.0)
    runs, summaries, panel = _panel(disagreeing, cloud, keep_copy_in_headline=False)
    (check,) = panel.host_checks
    assert not check.paired and panel.pairs == [] and "rank correlation -1.00" in check.note and "kept apart" in check.note
    text = [b.text for b in cross_run_blocks(runs, summaries) if isinstance(b, Paragraph)]
    assert any("no cross-run delta" in t for t in text)

"""The Reproduction section: each of the post's findings set against a run built here by hand,
through the store's own API, where every verdict must come out; figures computed by hand."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t

from localnova.backends.base import Backend
from localnova.config import DEFAULT_FINDINGS
from localnova.evaluate.power import questions_needed
from localnova.evaluate.reproduction import (
    CONTRADICTED,
    INCONCLUSIVE,
    NEEDS_TWO_MODELS,
    NO_PROBE,
    NOT_TESTED,
    REPRODUCED,
    RULED_OUT,
    RunValues,
    reproduce,
)
from localnova.findings import load_findings, parse_findings
from localnova.report.collect import collect_run
from localnova.report.render import markdown_cell, report_runs, write_report
from localnova.store import JudgmentRecord, ProbeTiming, Store
from localnova.types import ChatRequest, GenerationParams, GenerationResult

QUESTIONS = [f"q{i}" for i in range(1, 9)]
ARMS = ("base", "rag", "ft", "ft_rag")
# The larger model's panel score per question and arm (both judges give the same score):
# ft is 2 points above base on every question, give or take one (reproduced); rag 1.5 below
# (contradicted: the post says up); ft_rag swings around base (inconclusive).
BASE = [3, 4, 5, 3, 4, 5, 3, 4]
FT_GAIN = [2, 1, 3, 2, 1, 3, 2, 2]
RAG_LOSS = [1, 2, 1, 2, 1, 2, 1, 2]
FT_RAG_SWING = [4, -3, 4, -3, 3, -3, 2, -4]
LARGE = {
    "base": BASE,
    "ft": [b + g for b, g in zip(BASE, FT_GAIN, strict=True)],
    "rag": [b - loss for b, loss in zip(BASE, RAG_LOSS, strict=True)],
    "ft_rag": [b + s for b, s in zip(BASE, FT_RAG_SWING, strict=True)],
}
# The smaller model: one point below the larger in every arm but ft_rag, where it catches up:
# the gap falls by exactly 1 on every question (finding 4 reproduced).
SMALL = {arm: [s - 1 for s in scores] if arm != "ft_rag" else list(scores) for arm, scores in LARGE.items()}
# Tokens per answer, the same for both models: base 150 + 10 q; ft swings +-20-30 around base
# (inconclusive: the post says below -60%); rag reads three times the input (reproduced: up).
FT_TOKEN_SWING = [30, -30, 20, -20, 30, -30, 20, -20]


def _tokens(arm: str, number: int) -> tuple[int, int]:
    input_tokens = (100 + 10 * number) * (3 if arm in ("rag", "ft_rag") else 1)
    output = 50 + (FT_TOKEN_SWING[number - 1] if arm == "ft" else 0)
    return input_tokens, output


# The probe, one round: ft takes half of base's time, rag 70% (finding 5 reproduced).
PROBE_FACTOR = {"base": 1.0, "ft": 0.5, "rag": 0.7, "ft_rag": 0.6}


class TokenBackend(Backend):
    def __init__(self, model: str, arm: str):
        self.identity = {"backend": "hand-made", "model": model, "arm": arm}
        self.arm = arm

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            number = int(request.messages[-1][1].rsplit("q", 1)[1])
            input_tokens, output_tokens = _tokens(self.arm, number)
            results.append(GenerationResult(f"answer {number}", input_tokens, output_tokens, 100.0))
        return results


def build_study(study_dir: Path, name: str, models: dict[str, dict[str, list[float]]], simulated: bool = False, probed: int = 8) -> str:
    """A study of `models` (in size order, smallest first: {model: {arm: scores per question}})
    x four arms x eight questions, judged alike by two judges that pass their controls; the
    latency probe timed the first `probed` questions once."""
    store = Store(study_dir)
    config = {"name": name, "seed": 0, "eval": {"bootstrap_samples": 200}, "arms": list(ARMS), "models": [{"name": m} for m in models]}
    run_id = store.start_run(name, config, {"python": "3.x"})
    judgments = []
    for model, by_arm in models.items():
        for arm in ARMS:
            requests = [ChatRequest.from_messages([{"role": "user", "content": f"{arm} {q}"}], GenerationParams()) for q in QUESTIONS]
            keys, _ = store.generate_cached(TokenBackend(model, arm), requests, batch_size=8)
            store.save_answers(model, arm, QUESTIONS, keys, [[] for _ in QUESTIONS])
            for judge in ("judge-a", "judge-b"):
                for q, score in zip(QUESTIONS, by_arm[arm], strict=True):
                    judgments.append(
                        JudgmentRecord(judge, model, arm, q, "answer", f"{judge}{model}{arm}{q}", float(score), "parsed", "", "", 1)
                    )
            for number, q in enumerate(QUESTIONS[:probed], start=1):
                timing = ProbeTiming(model, arm, q, 0, 0, "k", (1000.0 + 100 * number) * PROBE_FACTOR[arm], 1, 1)
                store.save_probe_timing(timing, {"backend": "hand-made"})
    for judge in ("judge-a", "judge-b"):
        for q in QUESTIONS:
            for subject, score in (("control_ground_truth", 9.0), ("control_empty", 0.5), ("control_other", 1.5)):
                judgments.append(JudgmentRecord(judge, "", "", q, subject, f"{judge}{subject}{q}", score, "parsed", "", "", 1))
    store.save_judgments(judgments)
    if simulated:
        store.save_artifact("simulated", True)
    store.finish_run(complete=True)
    store.close()
    return run_id


def paired_t(reference: list[float], arm: list[float]) -> tuple[float, float, float]:
    """The paired t interval, computed here: mean difference +- t(0.975, n - 1) SD / sqrt(n)."""
    differences = np.array(arm, dtype=float) - np.array(reference, dtype=float)
    half = t.ppf(0.975, differences.size - 1) * differences.std(ddof=1) / math.sqrt(differences.size)
    return differences.mean(), differences.mean() - half, differences.mean() + half


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reproduction") / "study"
    build_study(folder, "hand-made", {"small": SMALL, "large": LARGE})
    return folder


def _results(folder: Path):
    from localnova.report.reproduction import report_findings, run_results
    from localnova.report.summarize import summarize_run

    run = collect_run(folder)
    findings, _ = report_findings([run])
    return run_results(run, summarize_run(run), findings)


def test_each_verdict_comes_out_of_a_store_built_for_it(study):
    reproduction = _results(study)
    assert reproduction.models == ["small", "large"]
    verdicts = [result.verdict for result in reproduction.results]
    assert verdicts == [REPRODUCED, CONTRADICTED, INCONCLUSIVE, REPRODUCED, REPRODUCED, RULED_OUT]
    ft, rag, best, gap, latency, tokens = reproduction.results

    # 1: ft vs base on the larger model, by hand: differences FT_GAIN, base mean 31 / 8
    (change,) = ft.comparisons
    mean, low, high = paired_t(LARGE["base"], LARGE["ft"])
    assert (change.label, change.n) == ("ft vs base, large", 8)
    assert (change.diff, change.diff_low, change.diff_high) == pytest.approx((mean, low, high)) and mean == 2.0 and low > 0
    assert change.pct == pytest.approx(100 * 2.0 / (31 / 8))
    # 2: rag went down by 1.5 where the post says up: contradicted, and the row says which
    (change,) = rag.comparisons
    assert (change.diff, change.diff_high) == pytest.approx((-1.5, paired_t(LARGE["base"], LARGE["rag"])[2]))
    assert change.diff_high < 0 and rag.reason == "rag vs base, large went the other way"
    # 3: ft_rag's swing around base: 0 on average; the questions that would detect the post's
    # +83% of this base at the swing's spread (no question alike); the others have no size
    above_base, above_rag, above_ft = best.comparisons
    assert above_base.diff == 0.0 and [c.verdict for c in best.comparisons] == [INCONCLUSIVE] * 3
    expected = questions_needed(float(np.std(FT_RAG_SWING, ddof=1)), 0.83 * 31 / 8, 1, 0.0)
    assert above_base.questions_needed == expected and expected > 8
    assert above_base.reason == f"{expected} questions would detect the post's +83% with 80% power at this run's spread (this run: 8)"
    assert above_rag.reason == above_ft.reason == "the post gives no size to plan for"
    # ... and the swing's interval (symmetric about 0, since the swing averages 0) leaves the
    # post's +83% out
    assert above_base.pct_low == pytest.approx(-above_base.pct_high) and above_base.pct_high < 83
    # (not ruled out: 8 questions had no 80% power for it)
    assert best.questions_needed is None and best.reason == (
        f"ft_rag vs base, large: {above_base.reason}; ft_rag vs rag, large and ft_rag vs ft, large: the post gives no size to plan for"
        f"; ft_rag vs base, large: the post's +83% is outside this run's interval [{above_base.pct_low:+.1f}, {above_base.pct_high:+.1f}]"
        ", but this run had no 80% power for that size"
    )
    # 4: the gap larger - smaller falls from 1 to 0 on every question
    (change,) = gap.comparisons
    assert (change.label, change.diff, change.diff_low, change.diff_high) == ("ft_rag vs base, large minus small", -1.0, -1.0, -1.0)
    assert math.isnan(change.pct)  # a gap between models has no % of a reference
    # 5: the probe, on each model: ft -50% and rag -30% of base's time, question by question
    assert [(c.label, round(c.pct, 6)) for c in latency.comparisons] == [
        ("ft vs base, small", -50.0),
        ("ft vs base, large", -50.0),
        ("rag vs base, small", -30.0),
        ("rag vs base, large", -30.0),
    ]
    assert all(c.n == 8 and c.unit == "ms" for c in latency.comparisons)
    # 6: rag's tokens up (reproduced), ft's swing open in direction although 8 questions had the
    # power for the post's -60%: a sign-flip test on k differing questions cannot go below
    # 2 / 2**k, so 6 are needed before 5% can be reached at all, and at 6 the power is ~1
    # (a 117-token change against differences of SD 27); its interval stops short of -60%, so
    # with that power the post's size is ruled out
    ft_small, ft_large, rag_small, rag_large = tokens.comparisons
    assert (ft_small.verdict, rag_small.verdict, rag_large.verdict) == (RULED_OUT, REPRODUCED, REPRODUCED)
    base_tokens = [150 + 10 * n for n in range(1, 9)]
    assert ft_large.diff == 0 and rag_large.diff == pytest.approx(np.mean([200 + 20 * n for n in range(1, 9)]))
    assert ft_large.pct == 0 and rag_large.pct == pytest.approx(100 * np.mean([200 + 20 * n for n in range(1, 9)]) / np.mean(base_tokens))
    assert ft_large.questions_needed == 6 and tokens.questions_needed is None  # a size ruled out needs no more questions
    # ft's token swing averages 0: its interval is symmetric about 0 and stops short of -60%
    assert ft_large.pct_low == pytest.approx(-ft_large.pct_high) and ft_large.pct_low > -60
    short = f"this run's interval [{ft_large.pct_low:+.1f}, {ft_large.pct_high:+.1f}] stops short of the post's -60%"
    assert tokens.reason == f"ft vs base, small: {short}; ft vs base, large: {short}, each with 80% power for its size"


def test_the_report_shows_the_section_right_after_the_summary_with_a_row_per_finding(study, tmp_path):
    md_path, html_path = write_report([collect_run(study)], tmp_path / "out")
    markdown = md_path.read_text(encoding="utf-8")
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert titles[:4] == ["Findings", "Runs", "Summary", "Reproduction"]
    section = markdown.split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == "| " + " | ".join(
        markdown_cell(h) for h in ("finding", "the post's figure")
    ) + " | this run's change \\[95% CI\\] |" + (" detectable change (80% power at 5%) | verdict |")
    verdicts = [row.rsplit(" | ", 1)[1].split(":", 1)[0].rstrip(" |") for row in rows[1:]]
    assert verdicts == ["reproduced", "contradicted", "inconclusive", "reproduced", "reproduced", "the post's size is ruled out"]
    assert (
        "| 1. Fine-tuning raised the mean judge score over the base model. | about +30% on Nova Lite | ft vs base, large: +51.6%" in section
    )
    assert "the smaller model is small and the larger large (the order of models in its config" in section
    assert "checked_against_page: false in nova_case_study" in section and "simulated" not in section
    html = html_path.read_text(encoding="utf-8")
    assert html.index('<section id="summary">') < html.index('<section id="reproduction">') < html.index('<section id="arm-comparisons">')


def test_one_model_stands_for_the_larger_and_the_size_finding_says_it_needs_two(tmp_path):
    build_study(tmp_path / "one", "one-model", {"large": LARGE})
    reproduction = _results(tmp_path / "one")
    assert reproduction.results[0].comparisons[0].label == "ft vs base, large"
    assert reproduction.results[0].verdict == REPRODUCED
    gap = reproduction.results[3]
    assert (
        (gap.verdict, gap.reason) == (NOT_TESTED, NEEDS_TWO_MODELS) == (NOT_TESTED, "needs two models of different size; this run has one")
    )
    assert len(reproduction.results[4].comparisons) == 2  # "each" model is the one model
    # tokens: rag settled, ft open in direction with its size ruled out: the sentence names the
    # comparison it is about (ft's token swing averages 0, so its interval is symmetric and
    # stops short of "more than -60%", with 8 questions' power for that size)
    tokens = reproduction.results[5]
    ft_tokens = tokens.comparisons[0]
    assert ft_tokens.pct_low == pytest.approx(-ft_tokens.pct_high) and ft_tokens.pct_low > -60
    assert [c.verdict for c in tokens.comparisons] == [RULED_OUT, REPRODUCED] and tokens.reason == (
        f"ft vs base, large: this run's interval [{ft_tokens.pct_low:+.1f}, {ft_tokens.pct_high:+.1f}] stops short of the post's -60%"
        ", with 80% power for that size"
    )
    md_path, _ = write_report([collect_run(tmp_path / "one")], tmp_path / "out")
    section = md_path.read_text(encoding="utf-8").split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    assert "| not tested: needs two models of different size; this run has one |" in section
    assert "one model, large, stands for the larger model" in section


def test_without_a_probe_the_latency_finding_is_not_tested_and_says_why(tmp_path):
    build_study(tmp_path / "noprobe", "no-probe", {"small": SMALL, "large": LARGE}, probed=0)
    latency = _results(tmp_path / "noprobe").results[4]
    assert latency.verdict == NOT_TESTED and latency.reason == NO_PROBE


def test_four_probed_questions_cannot_settle_latency_whatever_the_t_interval_says(tmp_path):
    """Every question 50% faster: the t interval excludes 0, but no sign pattern of 4 questions
    is rarer than 2 / 2**4 = 0.125, so the test the power code models cannot agree, and the
    power code says so too (nothing detectable). The first number of questions whose smallest
    p, 2 / 2**k, is below 5% is 6; there, changes this far above their spread are certain."""
    build_study(tmp_path / "four", "four", {"small": SMALL, "large": LARGE}, probed=4)
    latency = _results(tmp_path / "four").results[4]
    assert latency.verdict == INCONCLUSIVE and [c.verdict for c in latency.comparisons] == [INCONCLUSIVE] * 4
    ft_small = latency.comparisons[0]
    assert ft_small.diff_high < 0 and ft_small.detectable_diff == math.inf and ft_small.questions_needed == 6
    assert ft_small.reason == (
        "its interval excludes 0, but the paired sign-flip test does not agree (p = 0.125 on 4 questions); "
        "6 questions would detect the post's -50% with 80% power at this run's spread (this run: 4)"
    )
    assert latency.questions_needed == 6


def test_combining_comparisons_contradicted_wins_then_all_reproduced_then_not_tested():
    """Hand-made values: one finding per rule of the combination."""

    def finding(name: str, *comparisons: str) -> str:
        listed = ", ".join("{" + c + "}" for c in comparisons)
        return f"  - {{id: {name}, claim: c, post_figure: f, where: w, comparisons: [{listed}]}}"

    text = "\n".join(
        [
            "study: s",
            "source: x",
            "checked_against_page: true",
            "findings:",
            finding(
                "a",
                "measure: panel_score, model: larger, arm: ft, direction: up",
                "measure: panel_score, model: larger, arm: rag, direction: up",
            ),
            finding(
                "b",
                "measure: panel_score, model: larger, arm: ft, direction: up",
                "measure: latency, model: larger, arm: ft, direction: down",
            ),
            finding("c", "measure: panel_score, model: larger, arm: ft_rag, direction: up, post_pct: 50"),
        ]
    )
    findings = parse_findings(text, "test", "test").content
    # seven questions: a sign-flip test's smallest p is 2 / 2**7 = 0.016, which Holm's doubling
    # over finding a's two comparisons keeps below 5%
    base = [4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 5.0]
    ft = [5.0, 6.5, 7.0, 5.0, 6.0, 7.5, 6.0]  # +1, +1.5, +1, +1, +1, +1.5, +1: up
    rag = [3.0, 4.0, 4.5, 3.0, 4.0, 5.0, 4.0]  # -1, -1, -1.5, -1, -1, -1, -1: down
    by_question = {
        arm: dict(zip(QUESTIONS[:7], scores, strict=True)) for arm, scores in (("base", base), ("ft", ft), ("rag", rag), ("ft_rag", base))
    }
    values = {"panel_score": {("m", arm): scores for arm, scores in by_question.items()}, "latency": {}, "total_tokens": {}}
    a, b, c = reproduce(findings, RunValues(["m"], values, {"latency": NO_PROBE}))
    assert [r.verdict for r in a.comparisons] == [REPRODUCED, CONTRADICTED] and a.verdict == CONTRADICTED
    # on six questions the smallest p, 2 / 2**6 = 0.031, settles one comparison alone, but
    # not a contradiction among two (0.0625 after Holm): a finding keeps its 5%
    six = {"panel_score": {cell: {q: v for q, v in by_q.items() if q != QUESTIONS[6]} for cell, by_q in values["panel_score"].items()}}
    a6, *_ = reproduce(findings, RunValues(["m"], {**values, **six}, {"latency": NO_PROBE}))
    assert [r.verdict for r in a6.comparisons] == [REPRODUCED, INCONCLUSIVE] and a6.verdict == INCONCLUSIVE
    assert a6.comparisons[1].reason == (
        "it went the other way (p = 0.0312), but not at 5% once Holm adjusts over the finding's 2 comparisons (p = 0.0625)"
    )
    assert [r.verdict for r in b.comparisons] == [REPRODUCED, NOT_TESTED] and (b.verdict, b.reason) == (NOT_TESTED, NO_PROBE)
    assert c.verdict == INCONCLUSIVE and c.questions_needed is None  # ft_rag answered every question as base did
    assert c.reason == "every question measured the same in both arms, so this run's spread says nothing of what more would show"
    mean, low, high = paired_t(base, ft)
    assert (a.comparisons[0].diff, a.comparisons[0].diff_low, a.comparisons[0].diff_high) == pytest.approx((mean, low, high))
    assert a.comparisons[0].diff == pytest.approx(8 / 7)
    # a run without the arm (--arms base,rag,ft) says so
    del values["panel_score"][("m", "ft_rag")]
    *_, c = reproduce(findings, RunValues(["m"], values, {"latency": NO_PROBE}))
    assert (c.verdict, c.reason) == (NOT_TESTED, "m has no ft_rag arm in this run")


def test_two_runs_side_by_side_with_their_agreement(study, tmp_path):
    """A second run where rag goes up (as the post says) and ft_rag too: findings 2 and 3 come
    out otherwise than in the first, the rest alike."""
    up = {arm: list(scores) for arm, scores in LARGE.items()}
    up["rag"] = [b + g for b, g in zip(BASE, FT_GAIN, strict=True)]
    up["ft_rag"] = [b + 2 * g for b, g in zip(BASE, FT_GAIN, strict=True)]
    small = {arm: [s - 1 for s in scores] if arm != "ft_rag" else list(scores) for arm, scores in up.items()}
    other_id = build_study(tmp_path / "cloud", "cloud", {"small": small, "large": up}, simulated=True)
    first = collect_run(study).run_id
    md_path, html_path = report_runs([str(study), str(tmp_path / "cloud")], tmp_path / "both")
    section = md_path.read_text(encoding="utf-8").split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    tables = [block for block in section.split("\n\n") if block.startswith("| ")]
    detail, side = tables
    header, _, *rows = side.splitlines()
    assert header == "| finding | the post's figure | " + f"verdict: {first} | verdict: {other_id} | agree |".replace("_", "\\_")
    cells = [row.split(" | ")[2:] for row in rows]
    assert cells == [
        ["reproduced", "reproduced (simulated)", "yes |"],
        ["contradicted", "reproduced (simulated)", "no |"],
        ["inconclusive", "reproduced (simulated)", "no |"],
        ["reproduced", "reproduced (simulated)", "yes |"],
        ["reproduced", "reproduced (simulated)", "yes |"],
        ["the post's size is ruled out", "the post's size is ruled out (simulated)", "yes |"],
    ]
    detail_rows = detail.splitlines()[2:]
    assert len(detail_rows) == 12 and all(row.endswith("(simulated) |") == (other_id in row) for row in detail_rows)
    assert "verdict: " in html_path.read_text(encoding="utf-8")


def test_the_report_is_written_again_when_the_findings_file_changes(study, tmp_path):
    ours = tmp_path / "ours.yaml"
    ours.write_text(load_findings(DEFAULT_FINDINGS).text, encoding="utf-8")
    run = collect_run(study)
    run = dataclasses.replace(run, info={**run.info, "config": {**run.info["config"], "eval": {"findings": str(ours)}}})
    out = tmp_path / "out"
    md_path, _ = write_report([run], out)
    md_path.write_text("left as it was", encoding="utf-8")
    write_report([run], out)
    assert md_path.read_text(encoding="utf-8") == "left as it was"  # nothing it shows changed
    ours.write_text(ours.read_text(encoding="utf-8").replace("about +30% on Nova Lite", "about +31% on Nova Lite", 1), encoding="utf-8")
    write_report([run], out)
    assert "about +31% on Nova Lite" in md_path.read_text(encoding="utf-8")


def test_findings_off_leaves_the_section_out(study, tmp_path):
    md_path, _ = write_report([collect_run(study)], tmp_path / "out", findings="none")
    assert "## Reproduction" not in md_path.read_text(encoding="utf-8")


def test_a_bad_findings_file_is_one_line_and_exit_2(study, tmp_path, capsys):
    from localnova.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(load_findings(DEFAULT_FINDINGS).text.replace("direction: up", "direction: upward", 1), encoding="utf-8")
    assert main(["report", str(study), "--findings", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad} (--findings): findings.0.comparisons.0.direction" in err[0]
    assert not (tmp_path / "out" / "report.md").exists()
    # a study config naming a missing file stops `run` before anything runs
    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert main(["run", str(config), "--plan", "--set", f"eval.findings={tmp_path / 'missing.yaml'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        f"eval.findings: {tmp_path / 'missing.yaml'}: no such findings file, nor a bundled set (nova_case_study); "
        "'none' turns the comparison with published findings off"
    )


def test_readme_prints_the_sections_rows(study, capsys):
    from localnova.cli import main

    assert main(["report", str(study), "--readme"]) == 0
    printed = capsys.readouterr().out
    reproduction = printed.split("Set against the findings of", 1)[1]
    header, rule, *rows = [line for line in reproduction.splitlines() if line.startswith("|")]
    assert header.startswith("| finding | the post's figure |") and len(rows) == 6
    assert [row.split(" | ")[-1].split(":")[0].rstrip(" |") for row in rows][:2] == ["reproduced", "contradicted"]


def test_readme_carries_the_reproduction_rows():
    from localnova.report.reproduction import HEADERS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- generated by `localnova report runs/demo --readme`", 1)[1].split("Set against the findings of", 1)[1]
    lines = block.split("\n\n", 2)[1].splitlines()
    assert lines[0] == "| " + " | ".join(markdown_cell(h) for h in HEADERS) + " |"
    verdicts = [row.split(" | ")[-1].split(":")[0].rstrip(" |") for row in lines[2:]]
    assert len(verdicts) == 6 and set(verdicts) <= {REPRODUCED, CONTRADICTED, RULED_OUT, INCONCLUSIVE, NOT_TESTED}


def test_free_text_of_a_findings_file_is_escaped_in_both_formats(study, tmp_path):
    from localnova.evaluate.reproduction import agreement

    hostile = tmp_path / "hostile.yaml"
    text = load_findings(DEFAULT_FINDINGS).text
    text = text.replace("claim: Fine-tuning raised the mean judge score over the base model.", 'claim: "<b>bold</b> | cell\\n# heading"', 1)
    text = text.replace(
        "    definition: no model is named", "    definition: |-\n      # a heading\n      <script>x</script>\n      no model is named", 1
    )
    hostile.write_text(text, encoding="utf-8")
    md_path, html_path = write_report([collect_run(study)], tmp_path / "out", findings=str(hostile))
    section = md_path.read_text(encoding="utf-8").split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    assert "| 1. &lt;b&gt;bold&lt;/b&gt; \\| cell # heading |" in section
    assert "\n# " not in section and "<script>" not in section and "&lt;script&gt;x&lt;/script&gt;" in section
    html = html_path.read_text(encoding="utf-8")
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "<script>x" not in html
    # and the agreement of several runs, by hand
    assert agreement([REPRODUCED, REPRODUCED]) == "yes" and agreement([REPRODUCED, CONTRADICTED]) == "no"
    assert agreement([INCONCLUSIVE] * 3) == "yes (all inconclusive)" and agreement([REPRODUCED, NOT_TESTED]).startswith("cannot tell")


def test_a_verdict_says_when_the_interval_leaves_the_posts_size_out():
    """Hand-made values on six questions: ft is +25% over base on average (+15% to +30% per
    question), so its interval, some points either side of +25%, leaves out a post's +200%
    (reproduced in direction only) and holds a post's +25% (nothing to add); as a bound, "more
    than +50%" is out of its reach and "more than +5%" is not. ft_rag swings +-1 point around
    base, so its interval holds 0 and leaves out a post's +300%, which 6 questions had the power
    to see: that size is ruled out."""

    def finding(name: str, arm: str, size: str) -> str:
        return (
            f"  - {{id: {name}, claim: c, post_figure: f, where: w, comparisons: [{{measure: panel_score, model: larger,"
            f" arm: {arm}, direction: up, {size}}}]}}"
        )

    text = "\n".join(
        [
            "study: s",
            "source: x",
            "checked_against_page: true",
            "findings:",
            finding("far", "ft", "post_pct: 200"),
            finding("near", "ft", "post_pct: 25"),
            finding("beyond-reach", "ft", "post_pct: 50, post_size: beyond"),
            finding("beyond-met", "ft", "post_pct: 5, post_size: beyond"),
            finding("open", "ft_rag", "post_pct: 300"),
        ]
    )
    findings = parse_findings(text, "test", "test").content
    base = [4.0, 4.0, 4.0, 8.0, 8.0, 8.0]
    ft = [5.2, 4.8, 5.0, 10.4, 9.6, 10.0]  # +1.5 points on a base of 6 on average: +25%
    ft_rag = [5.0, 3.0, 5.0, 7.0, 9.0, 7.0]  # +1, -1, +1, -1, +1, -1
    scores = {"base": base, "ft": ft, "ft_rag": ft_rag}
    values = {"panel_score": {("m", arm): dict(zip(QUESTIONS[:6], s, strict=True)) for arm, s in scores.items()}}
    far, near, beyond_reach, beyond_met, open_ = reproduce(
        findings, RunValues(["m"], values, {"latency": NO_PROBE, "total_tokens": NO_PROBE})
    )
    (change,) = far.comparisons
    assert change.pct == pytest.approx(25.0) and 5 < change.pct_low < 25 < change.pct_high < 50
    interval = f"[{change.pct_low:+.1f}, {change.pct_high:+.1f}]"
    assert [r.verdict for r in (far, near, beyond_reach, beyond_met)] == [REPRODUCED] * 4
    assert far.reason == f"in direction; the post's +200% is outside this run's interval {interval}"
    assert beyond_reach.reason == f"in direction; this run's interval {interval} stops short of the post's +50%"
    assert near.reason == beyond_met.reason == ""
    (swing,) = open_.comparisons
    assert open_.verdict == RULED_OUT and swing.pct_low < 0 < swing.pct_high < 300
    interval = f"[{swing.pct_low:+.1f}, {swing.pct_high:+.1f}]"
    assert open_.reason == f"the post's +300% is outside this run's interval {interval}, with 80% power for that size"


def _gap_values(larger_base: list[float], smaller_base: list[float], smaller_gain: list[float]) -> RunValues:
    questions = QUESTIONS[: len(larger_base)]
    large = {"base": larger_base, "ft_rag": larger_base}
    small = {"base": smaller_base, "ft_rag": [s + g for s, g in zip(smaller_base, smaller_gain, strict=True)]}
    panel = {
        (model, arm): dict(zip(questions, scores, strict=True))
        for model, arms in (("small", small), ("large", large))
        for arm, scores in arms.items()
    }
    return RunValues(["small", "large"], {"panel_score": panel, "latency": {}, "total_tokens": {}}, {"latency": NO_PROBE})


def test_finding_4_needs_the_larger_model_ahead_at_base():
    """The issue's case: the smaller model already ahead at base, and further ahead with ft_rag.
    The gap larger - smaller falls (from -1 to -3 here), but the smaller model did not come
    close to the larger: it pulled away. The reading's premise fails, and the finding says so
    instead of calling it reproduced."""
    findings = load_findings(DEFAULT_FINDINGS).content
    larger = [4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 5.0, 4.0]
    ahead = _gap_values(larger, [v + 1 for v in larger], [2.0, 2.5, 2.0, 1.5, 2.0, 2.0, 2.5, 1.5])
    gap = reproduce(findings, ahead)[3]
    (change,) = gap.comparisons
    assert change.verdict == NOT_TESTED and gap.verdict == NOT_TESTED
    assert gap.reason == (
        "its premise does not hold: the post's reading has large ahead of small at base, and in this run small was ahead "
        "(-1.00 [-1.00, -1.00] points)"
    )
    # the larger model ahead at base, the smaller catching up: reproduced, as before
    behind = _gap_values(larger, [v - 1 for v in larger], [1.0, 1.5, 1.0, 0.5, 1.0, 1.0, 1.5, 0.5])
    assert reproduce(findings, behind)[3].verdict == REPRODUCED


def test_questions_from_one_document_count_once_in_the_reproduction_rows():
    """Eight questions in four documents, each pair answered alike: the comparison rests on four
    documents, so the sign-flip test's smallest p is 2 / 2**4 = 0.125 and nothing is settled,
    where eight independent questions would have settled it."""
    findings = load_findings(DEFAULT_FINDINGS).content
    base = [3.0, 3.0, 5.0, 5.0, 4.0, 4.0, 6.0, 6.0]
    ft = [5.0, 5.0, 6.0, 6.0, 6.0, 6.0, 7.0, 7.0]
    panel = {("m", "base"): dict(zip(QUESTIONS, base, strict=True)), ("m", "ft"): dict(zip(QUESTIONS, ft, strict=True))}
    values = {"panel_score": panel, "latency": {}, "total_tokens": {}}
    independent = reproduce(findings, RunValues(["m"], values, {"latency": NO_PROBE}))[0]
    assert independent.verdict == REPRODUCED and independent.comparisons[0].n_clusters == 8
    clusters = {q: f"doc{i // 2}" for i, q in enumerate(QUESTIONS)}
    clustered = reproduce(findings, RunValues(["m"], values, {"latency": NO_PROBE}, clusters))[0]
    (change,) = clustered.comparisons
    assert clustered.verdict == INCONCLUSIVE and (change.n, change.n_clusters) == (8, 4)
    assert "paired sign-flip test does not agree (p = 0.125 on 4 documents)" in change.reason
    assert change.design_effect == pytest.approx(2.0)  # every pair alike: ICC 1, two questions a document
    from localnova.report.reproduction import change_text

    # the interval is the paired t interval of the four documents (each pair's shared values)
    mean, low, high = paired_t(base[::2], ft[::2])
    assert change_text(change).endswith(f"({mean:+.2f} [{low:+.2f}, {high:+.2f}] points, 8 questions from 4 documents, design effect 2.00)")

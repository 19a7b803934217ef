"""The headline panel: one judge's failures cannot make an effect, the level and the paired
comparison are hand-checkable, and the controls gate decides who is in the headline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from localnova.config import ControlGate
from localnova.evaluate.controls import headline_panel, judge_controls
from localnova.evaluate.panel import answer_scores, cell_scores, level_ci, paired_scores
from localnova.evaluate.statistics import ScoreRow, bootstrap_ci
from localnova.evaluate.summary import summarize
from localnova.store import JudgmentRecord


def _identical_arms_with_one_judge_failing(n_questions: int = 30) -> list[ScoreRow]:
    """The crafted case: both arms gave the same answers, so every judge gives both the same
    score; the LLM judge (around 8) fails on a third of the rag arm's answers, token F1
    (around 2.6) scores everything."""
    rng = np.random.default_rng(3)
    rows = []
    for q in range(n_questions):
        llm, f1 = float(rng.integers(6, 11)), round(float(rng.uniform(1.5, 3.7)), 2)
        for arm in ("base", "rag"):
            fails = arm == "rag" and q % 3 == 0
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "llm", None if fails else llm))
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "f1", f1))
    return rows


def test_one_judges_failures_make_no_effect():
    summary = summarize(_identical_arms_with_one_judge_failing(), n_resamples=500, n_permutations=500)
    base, rag = summary.panel_cells
    assert rag.pct_vs_base == 0.0 and rag.pct_vs_base_low == 0.0 and rag.pct_vs_base_high == 0.0
    (comparison,) = summary.comparisons
    assert comparison.mean_diff == 0.0 and comparison.wilcoxon_p == 1.0 and comparison.permutation_p == 1.0
    # each arm's level is the mean of its judges' own means, whatever each judge failed on
    for cell in (base, rag):
        judge_means = [j.mean for j in summary.judge_cells if j.arm == cell.arm]
        assert cell.mean == pytest.approx(np.mean(judge_means))
    # averaging whichever judges scored each answer (the old panel) would have shown a drop
    old_base = np.mean(list(answer_scores(cell_scores(_identical_arms_with_one_judge_failing())[("m", "base")]).values()))
    old_rag = np.mean(list(answer_scores(cell_scores(_identical_arms_with_one_judge_failing())[("m", "rag")]).values()))
    assert old_rag < 0.9 * old_base


def test_level_is_the_mean_of_each_judges_mean():
    cell = {"q1": {"a": 8.0, "b": 2.0}, "q2": {"a": 6.0}, "q3": {"a": 10.0, "b": 4.0}}
    mean, low, high = level_ci(cell, n_resamples=200)
    assert mean == pytest.approx((8 + 6 + 10) / 3 / 2 + (2 + 4) / 2 / 2)
    assert low <= mean <= high


def test_without_failures_the_level_equals_the_plain_bootstrap_of_answer_means():
    rng = np.random.default_rng(0)
    cell = {f"q{i:02d}": {"a": float(rng.integers(0, 11)), "b": float(rng.uniform(0, 10))} for i in range(25)}
    per_answer = [np.mean(list(cell[q].values())) for q in sorted(cell)]
    assert level_ci(cell, n_resamples=700, seed=4) == pytest.approx(bootstrap_ci(per_answer, n_resamples=700, seed=4))


def test_level_of_an_empty_or_single_question_cell():
    assert all(math.isnan(v) for v in level_ci({}))
    mean, low, high = level_ci({"q": {"a": 4.0}})
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)


def test_paired_scores_keep_only_the_judges_that_scored_both_answers():
    a = {"q1": {"x": 2.0, "y": 8.0}, "q2": {"x": 3.0}, "q3": {"y": 9.0}, "q4": {"x": 1.0}}
    b = {"q1": {"x": 4.0}, "q2": {"x": 5.0, "y": 7.0}, "q3": {"x": 6.0}, "q5": {"x": 1.0}}
    assert paired_scores(a, b) == ({"q1": 2.0, "q2": 3.0}, {"q1": 4.0, "q2": 5.0})


def test_cell_scores_leave_out_failures_and_judges_outside_the_panel():
    rows = [ScoreRow("m", "base", "q1", "a", 5.0), ScoreRow("m", "base", "q1", "b", None), ScoreRow("m", "base", "q2", "c", 1.0)]
    assert cell_scores(rows) == {("m", "base"): {"q1": {"a": 5.0}, "q2": {"c": 1.0}}}
    assert cell_scores(rows, ["a", "b"]) == {("m", "base"): {"q1": {"a": 5.0}}}


def _judgment(judge: str, subject: str, score: float | None) -> JudgmentRecord:
    return JudgmentRecord(judge, "", "", "q", subject, "key", score, "m", None, None, 1)


def _controls_rows(judge: str, truth: float, empty: float, other: float) -> list[JudgmentRecord]:
    return [
        _judgment(judge, "answer", 5.0),
        _judgment(judge, "control_ground_truth", truth),
        _judgment(judge, "control_empty", empty),
        _judgment(judge, "control_other", other),
    ]


def test_controls_gate_each_threshold_at_its_edge():
    gate = ControlGate(truth_min=7, empty_max=2, other_max=3)
    rows = (
        _controls_rows("edge", 7.0, 2.0, 3.0)
        + _controls_rows("low-truth", 6.99, 0.0, 0.0)
        + _controls_rows("high-empty", 10.0, 2.01, 0.0)
        + _controls_rows("high-other", 10.0, 0.0, 3.01)
        + [_judgment("unscored", "control_ground_truth", None), _judgment("unscored", "control_empty", 0.0)]
    )
    judges = ["edge", "low-truth", "high-empty", "high-other", "unscored"]
    controls = {c.judge: c for c in judge_controls(rows, judges, gate)}
    assert [judge for judge in judges if controls[judge].passed] == ["edge"]
    assert controls["low-truth"].verdict == "fails: gives the ground truth only 7.0"
    assert controls["high-empty"].verdict == "fails: gives an empty answer 2.0"
    assert controls["high-other"].verdict == "fails: gives another question's truth 3.0"
    assert controls["unscored"].verdict == "fails: some controls were never scored"
    assert controls["unscored"].n_control_failures == 1 and controls["edge"].n_control_failures == 0
    assert controls["edge"].answers == 5.0


def test_headline_panel_modes():
    gate = ControlGate()
    controls = judge_controls(_controls_rows("good", 9, 0, 1) + _controls_rows("bad", 3, 3, 3), ["good", "bad"], gate)
    gated = headline_panel(["good", "bad"], controls, "gated", controls_judged=True)
    assert gated.judges == ["good"] and gated.excluded == ["bad"] and "bad" in gated.note
    assert headline_panel(["good", "bad"], controls, "all", controls_judged=True).judges == ["good", "bad"]
    assert headline_panel(["good", "bad"], [], "gated", controls_judged=False).judges == ["good", "bad"]
    nobody = headline_panel(["bad"], controls[1:], "gated", controls_judged=True)
    assert nobody.judges == [] and "No judge passed" in nobody.note


def test_summary_headline_leaves_a_failing_judge_out_of_the_panel_but_not_its_table():
    rows = []
    for q in range(10):
        rows += [ScoreRow("m", "base", f"q{q}", "good", 4.0), ScoreRow("m", "ft", f"q{q}", "good", 6.0)]
        rows += [ScoreRow("m", "base", f"q{q}", "bad", 9.0), ScoreRow("m", "ft", f"q{q}", "bad", 1.0)]
    gated = summarize(rows, n_resamples=100, n_permutations=100, headline_judges=["good"], headline_note="only good")
    assert [c.mean for c in gated.panel_cells] == [4.0, 6.0] and gated.panel_cells[1].pct_vs_base == pytest.approx(50.0)
    assert {c.judge for c in gated.judge_cells} == {"good", "bad"}
    assert gated.settings["headline_judges"] == ["good"] and gated.settings["headline_note"] == "only good"
    everyone = summarize(rows, n_resamples=100, n_permutations=100)
    assert [c.mean for c in everyone.panel_cells] == [6.5, 3.5]
    empty = summarize(rows, n_resamples=100, n_permutations=100, headline_judges=[])
    assert all(math.isnan(c.mean) for c in empty.panel_cells) and all(math.isnan(c.n) or c.n == 0 for c in empty.comparisons)


def test_answer_scores_are_the_mean_of_judges_that_scored_and_ignore_failures():
    rows = [
        ScoreRow("m", "base", "q1", "j1", 8.0),
        ScoreRow("m", "base", "q1", "j2", None),  # failure: not a 0
        {"model": "m", "arm": "base", "question_id": "q2", "judge": "j1", "score": 4},
        {"model": "m", "arm": "base", "question_id": "q2", "judge": "j2", "score": 6},
        ScoreRow("m", "base", "q3", "j1", None),
        ScoreRow("m", "base", "q3", "j2", float("nan")),
    ]
    assert answer_scores(cell_scores(rows)[("m", "base")]) == {"q1": 8.0, "q2": 5.0}
    with pytest.raises(ValueError, match="duplicate"):
        cell_scores(rows + [ScoreRow("m", "base", "q1", "j1", 3.0)])


def _reference_level_ci(cell, n_resamples, seed, confidence):
    """`level_ci` written out loop by loop, as the definition reads."""
    questions = sorted(cell)
    judges = sorted({judge for scores in cell.values() for judge in scores})

    def level(rows):
        means = []
        for judge in judges:
            scored = [cell[q][judge] for q in rows if judge in cell[q]]
            if scored:
                means.append(sum(scored) / len(scored))
        return sum(means) / len(means)

    draws = np.random.default_rng(seed).integers(0, len(questions), size=(n_resamples, len(questions)))
    levels = [level([questions[i] for i in draw]) for draw in draws]
    tail = (1 - confidence) / 2
    return level(questions), *np.quantile(levels, [tail, 1 - tail])


def test_level_interval_matches_its_definition_when_a_judge_is_missing_from_resamples():
    rng = np.random.default_rng(5)
    cell = {f"q{i:02d}": {"a": float(rng.integers(0, 11))} for i in range(12)}
    cell["q03"]["b"] = 9.0  # b scored one question: many resamples hold none of its scores
    cell["q07"]["c"] = 1.0
    assert level_ci(cell, 300, 2, 0.8) == pytest.approx(_reference_level_ci(cell, 300, 2, 0.8))


def test_two_questions_have_an_interval():
    mean, low, high = level_ci({"q1": {"a": 2.0}, "q2": {"a": 4.0}}, n_resamples=50)
    assert mean == 3.0 and 2.0 <= low <= high <= 4.0


def test_controls_fields_failures_and_verdicts_exactly():
    gate = ControlGate()
    rows = [
        _judgment("j", "control_ground_truth", None),
        _judgment("j", "control_ground_truth", 6.0),
        _judgment("j", "control_ground_truth", 4.0),
        _judgment("j", "control_empty", None),
        _judgment("j", "control_empty", 3.0),
        _judgment("j", "control_other", 2.0),
        _judgment("j", "answer", None),  # an answer's failure is not a control failure
        _judgment("j", "answer", 4.0),
        _judgment("j", "answer", 8.0),
        _judgment("k", "control_ground_truth", 9.0),
        _judgment("k", "control_empty", 0.0),
        _judgment("k", "control_other", 1.0),
    ]
    j, k = judge_controls(rows, ["j", "k"], gate)
    assert (j.judge, j.answers, j.truth, j.empty, j.other, j.n_control_failures) == ("j", 6.0, 5.0, 3.0, 2.0, 2)
    assert not j.passed and j.verdict == "fails: gives the ground truth only 5.0; gives an empty answer 3.0"
    assert (k.truth, k.empty, k.other, k.n_control_failures, k.passed, k.verdict) == (9.0, 0.0, 1.0, 0, True, "passes")


def test_headline_notes_and_exclusions_exactly():
    gate = ControlGate()
    controls = judge_controls(
        _controls_rows("good", 9, 0, 1) + _controls_rows("fine", 8, 1, 2) + _controls_rows("bad", 3, 3, 3), ["good", "fine", "bad"], gate
    )
    judges = ["good", "fine", "bad"]
    everyone = headline_panel(judges, controls, "all", controls_judged=True)
    assert (everyone.excluded, everyone.note) == ([], "Headline panel: every judge (eval.headline_panel: all), whatever its controls say.")
    ungated = headline_panel(judges, [], "gated", controls_judged=False)
    assert (ungated.judges, ungated.excluded) == (judges, [])
    assert ungated.note == "Headline panel: every judge; the study ran without controls, so none could be gated."
    gated = headline_panel(judges, controls, "gated", controls_judged=True)
    assert gated.note == "Headline panel: good, fine. Left out for failing their controls: bad."
    passing = headline_panel(["good", "fine"], controls[:2], "gated", controls_judged=True)
    assert (passing.excluded, passing.note) == ([], "Headline panel: good, fine; every judge passed its controls.")
    nobody = headline_panel(["bad"], controls[2:], "gated", controls_judged=True)
    assert nobody.excluded == ["bad"]
    assert nobody.note == "Headline panel: empty. No judge passed its controls, so no headline score is given; see the per-judge tables."

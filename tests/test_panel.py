"""The headline panel: one judge's failures cannot make an effect, every figure of a model holds
its judges and questions fixed, and the controls gate (a ranking per question, on the judge's
own scale, and failure rates) decides who is in the headline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from localnova.config import ControlGate
from localnova.evaluate.controls import headline_panel, judge_controls
from localnova.evaluate.panel import answer_failures, answer_scores, cell_scores, model_panels, paired_scores, sparse_judges
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


@pytest.mark.parametrize("max_failure_rate", [0.5, 0.2])
def test_identical_answers_show_no_difference_anywhere_in_the_row(max_failure_rate):
    """Before: "% vs base" said +0.0% [0.0, 0.0] while the same row's panel scores were 5.05
    and 4.83. Whether the failing judge stays (allowed 50% failures: the 10 questions it failed
    leave every figure) or leaves (20%: too few answers), both arms show the same level."""
    rows = _identical_arms_with_one_judge_failing()
    summary = summarize(rows, n_resamples=500, n_permutations=500, max_answer_failure_rate=max_failure_rate)
    base, rag = summary.panel_cells
    assert (rag.pct_vs_base, rag.pct_vs_base_low, rag.pct_vs_base_high) == (0.0, 0.0, 0.0)
    assert (rag.diff_vs_base, rag.diff_vs_base_low, rag.diff_vs_base_high) == (0.0, 0.0, 0.0)
    assert (base.mean, base.low, base.high) == (rag.mean, rag.low, rag.high)
    (comparison,) = summary.comparisons
    assert comparison.mean_diff == 0.0 and comparison.wilcoxon_p == 1.0 and comparison.permutation_p == 1.0
    # the level is the plain mean over the panel's judges, on the panel's questions
    judges = summary.settings["headline_judges"]
    # with llm kept, only the questions it scored in both arms (q % 3 != 0) count
    expected_questions = [f"q{q:02d}" for q in range(30) if "llm" not in judges or q % 3]
    assert base.n_questions == len(expected_questions) and base.n_answers == 30
    base_rows = [r for r in rows if r.arm == "base" and r.judge in judges]
    per_question = [np.mean([r.score for r in base_rows if r.question_id == q]) for q in expected_questions]
    assert base.mean == pytest.approx(np.mean(per_question))
    if max_failure_rate == 0.2:
        assert judges == ["f1"] and "llm (scored 20 of 30 answers of m / rag" in summary.settings["headline_note"]
    else:
        assert judges == ["llm", "f1"] and base.n_questions == 20


def _sparse_judge_rows() -> list[ScoreRow]:
    """The crafted case: 60 questions, two judges on different scales score everything, a third
    (on a high scale) scored 3 of the 60 answers of each arm."""
    rng = np.random.default_rng(8)
    rows = []
    for q in range(60):
        quality = rng.normal(0, 1)
        for arm in ("base", "rag"):
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "f1", float(np.clip(2.5 + quality + rng.normal(0, 0.5), 0, 10))))
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "sim", float(np.clip(5.5 + quality + rng.normal(0, 0.5), 0, 10))))
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "sparse", 9.5 if q < 3 else None))
    return rows


def test_a_sparse_judge_leaves_the_headline_and_no_resample_averages_one_judge_fewer():
    """Before: a judge that scored 3 of 60 answers stayed, and a resample without its answers
    averaged one judge fewer on another scale: a level of 5.06 [3.59, 5.21]."""
    rows = _sparse_judge_rows()
    summary = summarize(rows, n_resamples=600, seed=2, n_permutations=200)
    assert summary.settings["headline_judges"] == ["f1", "sim"]
    assert "sparse (scored 3 of 60 answers of m / base; at most 20% may fail)" in summary.settings["headline_note"]
    assert summary.settings["left_out"] == {"sparse": "scored 3 of 60 answers of m / base; at most 20% may fail"}
    base = summary.panel_cells[0]
    base_rows = [r for r in rows if r.arm == "base" and r.judge != "sparse"]
    per_question = [np.mean([r.score for r in base_rows if r.question_id == f"q{q:02d}"]) for q in range(60)]
    assert (base.mean, base.low, base.high) == pytest.approx(bootstrap_ci(per_question, 600, 2))
    assert base.low < base.mean < base.high
    # its own table still shows it
    assert {c.judge for c in summary.judge_cells} == {"f1", "sim", "sparse"}


def test_answer_failures_count_missing_judgments_and_pick_the_worst_cell():
    rows = [
        ScoreRow("m", "base", "q1", "a", 5.0),
        ScoreRow("m", "base", "q2", "a", None),
        ScoreRow("m", "base", "q3", "b", 2.0),  # a never judged q3: a failure too
        ScoreRow("m", "rag", "q1", "a", 4.0),
        ScoreRow("m", "rag", "q1", "b", 1.0),
    ]
    worst = answer_failures(rows, ["a", "b"])
    assert (worst["a"].cell, worst["a"].n_answers, worst["a"].n_scored) == ("m / base", 3, 1)
    assert worst["a"].failure_rate == pytest.approx(2 / 3)
    assert (worst["b"].cell, worst["b"].n_scored, worst["b"].failure_rate) == ("m / base", 1, pytest.approx(2 / 3))
    assert sparse_judges(rows, ["a", "b"], 0.7) == {}
    assert set(sparse_judges(rows, ["a", "b"], 0.6)) == {"a", "b"}


def test_model_panels_hold_judges_and_questions_fixed_across_arms():
    rows = [
        ScoreRow("m", "rag", "q1", "x", 4.0),
        ScoreRow("m", "rag", "q1", "y", 8.0),
        ScoreRow("m", "base", "q1", "x", 2.0),
        ScoreRow("m", "base", "q1", "y", 6.0),
        ScoreRow("m", "base", "q2", "x", 3.0),
        ScoreRow("m", "base", "q2", "y", 7.0),
        ScoreRow("m", "rag", "q2", "x", 9.0),
        ScoreRow("m", "rag", "q2", "y", None),  # y failed rag's q2: q2 leaves every figure of m
        ScoreRow("n", "base", "q1", "x", 1.0),
    ]
    panels = model_panels(rows, ["x", "y"])
    m = panels["m"]
    assert (m.arms, m.questions, m.n_questions) == (["base", "rag"], ["q1"], 2)
    assert m.scores == {"base": {"q1": 4.0}, "rag": {"q1": 6.0}}
    assert panels["n"].questions == []  # y never judged model n
    assert model_panels(rows, [])["m"].questions == []


def test_paired_scores_keep_only_the_judges_that_scored_both_answers():
    a = {"q1": {"x": 2.0, "y": 8.0}, "q2": {"x": 3.0}, "q3": {"y": 9.0}, "q4": {"x": 1.0}}
    b = {"q1": {"x": 4.0}, "q2": {"x": 5.0, "y": 7.0}, "q3": {"x": 6.0}, "q5": {"x": 1.0}}
    assert paired_scores(a, b) == ({"q1": 2.0, "q2": 3.0}, {"q1": 4.0, "q2": 5.0})


def test_cell_scores_leave_out_failures_and_judges_outside_the_panel():
    rows = [ScoreRow("m", "base", "q1", "a", 5.0), ScoreRow("m", "base", "q1", "b", None), ScoreRow("m", "base", "q2", "c", 1.0)]
    assert cell_scores(rows) == {("m", "base"): {"q1": {"a": 5.0}, "q2": {"c": 1.0}}}
    assert cell_scores(rows, ["a", "b"]) == {("m", "base"): {"q1": {"a": 5.0}}}


def _judgment(judge: str, subject: str, score: float | None, question: str = "q", model: str = "", arm: str = "") -> JudgmentRecord:
    return JudgmentRecord(judge, model, arm, question, subject, "key", score, "m", None, None, 1)


def _controls_rows(judge: str, truth, empty, other, answers=(5.0,)) -> list[JudgmentRecord]:
    """Per question i, the judge's scores truth[i], empty[i], other[i] (a number: every question
    alike, 10 questions), and its answers in m / base."""
    n = 10
    truth, empty, other = ([value] * n if not isinstance(value, list) else value for value in (truth, empty, other))
    rows = []
    for i, scores in enumerate(zip(truth, empty, other, strict=True)):
        for subject, score in zip(("control_ground_truth", "control_empty", "control_other"), scores, strict=True):
            rows.append(_judgment(judge, subject, score, f"q{i}"))
    rows += [_judgment(judge, "answer", score, f"q{i}", "m", "base") for i, score in enumerate(answers)]
    return rows


def test_a_judge_that_fails_its_controls_and_answers_fails_the_gate():
    """Before: failing 27 of 30 controls and every real answer, but scoring the other 3
    controls perfectly, passed (the failures were counted and never used)."""
    truth = [10.0, None, None, None, None, None, None, None, None, None]
    empty = [0.0, None, None, None, None, None, None, None, None, None]
    other = [0.0, None, None, None, None, None, None, None, None, None]
    rows = _controls_rows("flaky", truth, empty, other, answers=[None] * 10)
    (flaky,) = judge_controls(rows, ["flaky"], ControlGate())
    assert (flaky.n_ranked, flaky.n_questions, flaky.n_control_failures, flaky.n_controls) == (1, 10, 27, 30)
    assert (flaky.worst_answer_cell, flaky.n_cell_answers, flaky.n_cell_answer_failures) == ("m / base", 10, 10)
    assert not flaky.passed
    assert flaky.verdict == (
        "fails: ranks the truth first on 1 of 10 questions (10%, needs 80%); failed 27 of 30 controls (90%, at most 20%); "
        "failed 10 of 10 answers of m / base (at most 20%)"
    )


def test_a_narrow_domain_similarity_judge_passes_on_its_own_scale():
    """Before: MiniLM on a corpus about one AWS service gave another question's truth 3.8,
    above the fixed 3, and left the headline, although it scores the right truth 10.0 and real
    answers 5.5: it ranks the truth first on every question."""
    (minilm,) = judge_controls(_controls_rows("minilm", 10.0, 1.0, 3.8, answers=[5.5] * 10), ["minilm"], ControlGate())
    assert minilm.passed and minilm.verdict == "passes: truth first on 10 of 10 questions"
    assert (minilm.truth, minilm.other, minilm.answers) == (10.0, 3.8, 5.5)


def test_the_gate_ranks_per_question_not_by_means():
    # the truth's mean (8) is far above the decoys' means (4), yet on 4 of 10 questions the
    # decoy wins: the judge cannot tell them apart often enough
    truth = [8.0] * 10
    other = [9.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    (judge,) = judge_controls(_controls_rows("mean-fooled", truth, 0.0, other), ["mean-fooled"], ControlGate())
    assert judge.truth == 8.0 and judge.other == pytest.approx(4.2) and not judge.passed
    assert judge.verdict == "fails: ranks the truth first on 6 of 10 questions (60%, needs 80%)"
    # a tie is not a ranking: a judge that gives everything 5 ranks nothing
    (flat,) = judge_controls(_controls_rows("flat", 5.0, 5.0, 5.0), ["flat"], ControlGate())
    assert flat.n_ranked == 0 and not flat.passed


def test_the_gate_thresholds_at_their_edges():
    gate = ControlGate(min_ranked_share=0.8, max_control_failure_rate=0.2, max_answer_failure_rate=0.2)
    eight_of_ten = [10.0] * 8 + [0.0, 0.0]
    (edge,) = judge_controls(_controls_rows("edge", eight_of_ten, 0.0, 1.0), ["edge"], gate)
    assert edge.passed  # 80% ranked: enough
    seven = [10.0] * 7 + [0.0] * 3
    (below,) = judge_controls(_controls_rows("below", seven, 0.0, 1.0), ["below"], gate)
    assert not below.passed
    # 6 of 30 controls failed (20%) passes, 7 (23%) does not; the failures sit on ranked questions' decoys
    six_failed = _controls_rows("six", 10.0, [None] * 6 + [0.0] * 4, 1.0)
    seven_failed = _controls_rows("seven", 10.0, [None] * 7 + [0.0] * 3, 1.0)
    loose = ControlGate(min_ranked_share=0.0)
    assert [c.passed for c in judge_controls(six_failed + seven_failed, ["six", "seven"], loose)] == [True, False]
    # 2 of 10 answers failed passes, 3 does not
    answers_two = _controls_rows("two", 10.0, 0.0, 1.0, answers=[None, None] + [5.0] * 8)
    answers_three = _controls_rows("three", 10.0, 0.0, 1.0, answers=[None] * 3 + [5.0] * 7)
    assert [c.passed for c in judge_controls(answers_two + answers_three, ["two", "three"], gate)] == [True, False]


def test_a_judge_without_controls_fails():
    (nothing,) = judge_controls([_judgment("j", "answer", 5.0, "q1", "m", "base")], ["j"], ControlGate())
    assert not nothing.passed and nothing.verdict == "fails: no control was judged" and math.isnan(nothing.truth)


def test_headline_panel_modes():
    gate = ControlGate()
    controls = judge_controls(_controls_rows("good", 9.0, 0.0, 1.0) + _controls_rows("bad", 3.0, 3.0, 3.0), ["good", "bad"], gate)
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
    assert gated.settings["left_out"] == {"bad": "left out of the headline panel"}
    everyone = summarize(rows, n_resamples=100, n_permutations=100)
    assert [c.mean for c in everyone.panel_cells] == [6.5, 3.5]
    empty = summarize(rows, n_resamples=100, n_permutations=100, headline_judges=[])
    assert all(math.isnan(c.mean) for c in empty.panel_cells) and all(c.n == 0 for c in empty.comparisons)


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


def test_controls_fields_exactly():
    rows = [
        _judgment("j", "control_ground_truth", None, "q1"),
        _judgment("j", "control_empty", 3.0, "q1"),
        _judgment("j", "control_other", 2.0, "q1"),
        _judgment("j", "control_ground_truth", 6.0, "q2"),
        _judgment("j", "control_empty", None, "q2"),
        _judgment("j", "control_other", 2.0, "q2"),
        _judgment("j", "control_ground_truth", 4.0, "q3"),
        _judgment("j", "control_empty", 3.0, "q3"),
        _judgment("j", "control_other", 2.0, "q3"),
        _judgment("j", "answer", None, "q1", "m", "base"),  # an answer's failure is not a control failure
        _judgment("j", "answer", 4.0, "q2", "m", "base"),
        _judgment("j", "answer", 8.0, "q3", "m", "base"),
    ]
    (j,) = judge_controls(rows, ["j"], ControlGate())
    assert (j.judge, j.answers, j.truth, j.empty, j.other) == ("j", 6.0, 5.0, 3.0, 2.0)
    assert (j.n_questions, j.n_ranked, j.n_controls, j.n_control_failures) == (3, 1, 9, 2)
    assert (j.worst_answer_cell, j.n_cell_answers, j.n_cell_answer_failures) == ("m / base", 3, 1)


def test_headline_notes_and_exclusions_exactly():
    gate = ControlGate()
    controls = judge_controls(
        _controls_rows("good", 9.0, 0.0, 1.0) + _controls_rows("fine", 8.0, 1.0, 2.0) + _controls_rows("bad", 3.0, 3.0, 3.0),
        ["good", "fine", "bad"],
        gate,
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


def test_headline_mode_all_still_drops_a_judge_with_too_few_answers():
    rows = _sparse_judge_rows()
    controls = judge_controls([], ["f1", "sim", "sparse"], ControlGate())
    panel = headline_panel(["f1", "sim", "sparse"], controls, "all", controls_judged=True)
    summary = summarize(rows, n_resamples=100, n_permutations=100, headline_judges=panel.judges, headline_note=panel.note)
    assert summary.settings["headline_judges"] == ["f1", "sim"]
    assert summary.settings["headline_note"].startswith("Headline panel: every judge (eval.headline_panel: all)")
    assert "Left out for too few scored answers" in summary.settings["headline_note"]


def _failing_where(failed: set[int]) -> list[ScoreRow]:
    """20 questions answered alike in base and rag; judges y and z score question q as q / 2
    (+0.1 for z), judge x too, except that it fails the rag answers of the questions `failed`."""
    rows = []
    for q in range(20):
        for arm in ("base", "rag"):
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "x", None if arm == "rag" and q in failed else q / 2))
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "y", q / 2))
            rows.append(ScoreRow("m", arm, f"q{q:02d}", "z", q / 2 + 0.1))
    return rows


def test_a_judge_failing_on_the_best_answers_leaves_the_headline():
    from localnova.evaluate.panel import score_linked_failures

    # the three best rag answers: the exact rank-sum p of 3 failures holding the top 3 ranks of
    # 20 is 2 / C(20, 3) = 2 / 1140; one cell tested, so the level is 0.05
    found = score_linked_failures(_failing_where({17, 18, 19}), ["x", "y", "z"])
    assert list(found) == ["x"] and "its 3 failures in m / rag" in found["x"] and f"rank-sum p = {2 / 1140:.2g}" in found["x"]
    assert "scored 9.05 on average against 4.05" in found["x"]  # (8.5+9+9.5)/3 + 0.05 and the other 17's mean
    # spread over the scale, the failures tell nothing; one failure is never flagged
    assert score_linked_failures(_failing_where({2, 9, 16}), ["x", "y", "z"]) == {}
    assert score_linked_failures(_failing_where({19}), ["x", "y", "z"]) == {}
    # alone in the panel, a judge has no one to be checked against
    assert score_linked_failures(_failing_where({17, 18, 19}), ["x"]) == {}
    # the summary leaves x out of the headline, and its note says why
    summary = summarize(_failing_where({17, 18, 19}), n_resamples=200, n_permutations=200)
    assert summary.settings["headline_judges"] == ["y", "z"]
    assert "failures depend on the score: x (its 3" in summary.settings["headline_note"]

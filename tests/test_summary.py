"""The study summary: latency and tokens per arm by hand, and a whole study's summary checked
for consistency, JSON output and reproducibility."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import SCORES
from localnova.evaluate.statistics import GenerationRow, ScoreRow
from localnova.evaluate.summary import latency_token_summary, summarize


def _generation_rows() -> list[GenerationRow]:
    rows = []
    for q, latency_ms in enumerate((100.0, 200.0, 300.0, 400.0)):
        rows.append(GenerationRow("m", "base", f"q{q}", latency_ms, 50, 20))
        rows.append(GenerationRow("m", "ft", f"q{q}", latency_ms / 2, 50, 20))
        rows.append(GenerationRow("m", "rag", f"q{q}", latency_ms * 2, 250, 20))
    return rows


def test_latency_and_tokens_hand_worked():
    cells = {cell.arm: cell for cell in latency_token_summary(_generation_rows())}
    assert cells["base"].latency_ms_median == 250.0
    assert cells["base"].latency_ms_p90 == pytest.approx(370.0)  # 300 + 0.7 * (400 - 300)
    assert cells["base"].total_tokens_mean == 70.0 and cells["base"].pct_vs_base == {}
    assert cells["ft"].pct_vs_base["latency_ms_median"] == pytest.approx(-50.0)
    assert cells["ft"].pct_vs_base["latency_ms_p90"] == pytest.approx(-50.0)
    assert cells["rag"].pct_vs_base["input_tokens_mean"] == pytest.approx(400.0)
    assert cells["rag"].pct_vs_base["total_tokens_mean"] == pytest.approx(100 * 200 / 70)
    assert cells["rag"].pct_vs_base["output_tokens_mean"] == 0.0


def _study_rows() -> list[ScoreRow]:
    rows = []
    for q, score in enumerate(SCORES[:14]):
        rows.append(ScoreRow("m", "base", f"q{q}", "j1", score))
        rows.append(ScoreRow("m", "base", f"q{q}", "j2", max(0.0, score - 1)))
        rows.append(ScoreRow("m", "base", f"q{q}", "broken", None))
        rows.append(ScoreRow("m", "rag", f"q{q}", "j1", min(10.0, score + 2)))
        rows.append(ScoreRow("m", "rag", f"q{q}", "j2", min(10.0, score + 1)))
        rows.append(ScoreRow("m", "rag", f"q{q}", "broken", None))
    return rows


def test_summary_of_a_study_is_consistent_and_json_serialisable():
    summary = summarize(_study_rows(), _generation_rows(), n_resamples=500, n_permutations=500)
    panel = {cell.arm: cell for cell in summary.panel_cells}
    base_panel = (SCORES[:14] + np.maximum(0, SCORES[:14] - 1)) / 2
    assert panel["base"].mean == pytest.approx(base_panel.mean())  # failures are not zeros
    assert panel["base"].low <= panel["base"].mean <= panel["base"].high
    assert math.isnan(panel["base"].pct_vs_base) and panel["rag"].pct_vs_base > 0
    broken = next(f for f in summary.failures_by_judge if f.judge == "broken")
    assert (broken.n_judgments, broken.n_failed, broken.failure_rate) == (28, 28, 1.0)
    broken_cell = next(c for c in summary.judge_cells if c.judge == "broken")
    assert broken_cell.n_failed == 14 and math.isnan(broken_cell.mean)
    assert [(c.arm_a, c.arm_b) for c in summary.comparisons] == [("base", "rag")]
    assert summary.comparisons[0].wilcoxon_p < 0.05
    # a judge that scored nothing cannot be held fixed: out of the headline and its agreement
    assert summary.settings["headline_judges"] == summary.agreement.judges == ["j1", "j2"]
    assert summary.settings["left_out"] == {"broken": "scored 0 of 14 answers of m / base; at most 20% may fail"}
    assert [c.arm for c in summary.latency_tokens] == ["base", "ft", "rag"]
    encoded = json.dumps(summary.to_dict(), allow_nan=False)
    assert json.loads(encoded)["judge_cells"][2]["mean"] is None


def test_summary_copes_with_one_arm_one_judge_and_one_question():
    rows = [ScoreRow("m", "only", "q0", "j1", 7.0)]
    summary = summarize(rows)
    assert summary.comparisons == [] and summary.agreement is None
    assert summary.latency_tokens == []
    cell = summary.panel_cells[0]
    assert cell.mean == 7.0 and math.isnan(cell.low) and math.isnan(cell.pct_vs_base)
    json.dumps(summary.to_dict(), allow_nan=False)


def test_summary_is_reproducible_for_a_seed():
    first = summarize(_study_rows(), n_resamples=300, n_permutations=300, seed=7).to_dict()
    again = summarize(_study_rows(), n_resamples=300, n_permutations=300, seed=7).to_dict()
    assert first == again


def _two_judge_rows() -> list[ScoreRow]:
    """rag rows come first; judge x scored base on 10 of 12 questions, y failed one rag answer."""
    rows = []
    for q, score in enumerate(SCORES[:12]):
        rows.append(ScoreRow("m", "rag", f"q{q:02d}", "x", min(10.0, score + 1)))
        rows.append(ScoreRow("m", "rag", f"q{q:02d}", "y", None if q == 3 else max(0.0, score - 2)))
        rows.append(ScoreRow("m", "base", f"q{q:02d}", "y", score))
        if q not in (5, 9):
            rows.append(ScoreRow("m", "base", f"q{q:02d}", "x", max(0.0, score - 1)))
    return rows


def test_summary_defaults_are_the_documented_ones():
    rows = _two_judge_rows()
    default = summarize(rows).to_dict()
    documented = summarize(rows, n_resamples=2000, seed=0, confidence=0.95, n_permutations=10000, max_answer_failure_rate=0.2)
    assert default == documented.to_dict()
    assert default != summarize(rows, seed=1).to_dict()
    assert default != summarize(rows, max_answer_failure_rate=0.1).to_dict()  # x (2 of 12 missing, 17%) leaves


def test_summary_cells_fields_and_settings_exactly():
    from localnova.evaluate.controls import JudgeControls
    from localnova.evaluate.power import detectable_difference
    from localnova.evaluate.statistics import bootstrap_ci, paired_change

    rows = _two_judge_rows()
    control = JudgeControls("y", 5.0, 9.0, 0.0, 1.0, 12, 12, 36, 0, "m / rag", 12, 1, True, "passes")
    summary = summarize(rows, n_resamples=300, seed=4, confidence=0.8, n_permutations=200, headline_note="n", controls=[control])
    # base first although rag came first
    cells = [(c.model, c.arm, c.judge) for c in summary.judge_cells]
    assert cells == [("m", "base", "x"), ("m", "base", "y"), ("m", "rag", "x"), ("m", "rag", "y")]
    rag_y = summary.judge_cells[3]
    valid = [r.score for r in rows if (r.arm, r.judge) == ("rag", "y") and r.score is not None]
    assert (rag_y.n_judgments, rag_y.n_failed) == (12, 1)
    assert (rag_y.mean, rag_y.low, rag_y.high) == pytest.approx(bootstrap_ci(valid, 300, 4, 0.8))
    # the panel's questions: both judges scored both arms' answers (not q03, q05, q09)
    questions = [f"q{q:02d}" for q in range(12) if q not in (3, 5, 9)]
    by_hand = {
        arm: {q: np.mean([r.score for r in rows if (r.arm, r.question_id) == (arm, q)]) for q in questions} for arm in ("base", "rag")
    }
    base, rag = summary.panel_cells
    assert (base.model, base.arm, base.n_questions, base.n_answers, rag.n_questions, rag.n_answers) == ("m", "base", 9, 12, 9, 12)
    assert (base.mean, base.low, base.high) == pytest.approx(bootstrap_ci(list(by_hand["base"].values()), 300, 4, 0.8))
    assert (rag.mean, rag.low, rag.high) == pytest.approx(bootstrap_ci(list(by_hand["rag"].values()), 300, 4, 0.8))
    change = paired_change(by_hand["base"], by_hand["rag"], 0.8)
    diff = (rag.diff_vs_base, rag.diff_vs_base_low, rag.diff_vs_base_high)
    assert diff == pytest.approx((change.diff, change.diff_low, change.diff_high))
    assert (rag.pct_vs_base, rag.pct_vs_base_low, rag.pct_vs_base_high) == pytest.approx((change.pct, change.pct_low, change.pct_high))
    assert all(math.isnan(v) for v in (base.diff_vs_base, base.pct_vs_base, base.detectable_diff, base.detectable_pct))
    (comparison,) = summary.comparisons
    assert (comparison.arm_a, comparison.arm_b, comparison.n) == ("base", "rag", 9)
    differences = np.array([by_hand["rag"][q] - by_hand["base"][q] for q in questions])
    assert comparison.mean_diff == pytest.approx(differences.mean())
    nonzero = differences[differences != 0]
    expected = detectable_difference(np.std(nonzero, ddof=1), 9, 1, 1 - nonzero.size / 9)
    assert rag.detectable_diff == comparison.detectable_diff == pytest.approx(expected)
    assert rag.detectable_pct == pytest.approx(100 * rag.detectable_diff / base.mean)
    assert summary.controls == [control]
    assert summary.settings == {
        "n_resamples": 300,
        "seed": 4,
        "confidence": 0.8,
        "n_permutations": 200,
        "base_arm": "base",
        "panel_score": "an answer's panel score is the mean of the headline judges' scores; every figure of a model (levels, "
        "changes, tests) is over the questions every headline judge scored in every arm of that model, so the judges and "
        "questions stay fixed across arms and resamples",
        "headline_judges": ["x", "y"],
        "headline_note": "n",
        "left_out": {},
        "max_answer_failure_rate": 0.2,
        "interval": "levels: expanded percentile bootstrap over questions (a t interval's width on small samples); changes "
        "against base: paired t intervals (the % on the ratio's linearised standard error); where questions share a source "
        "document, the document is the unit: its questions are resampled together and the t intervals are cluster-robust "
        "(CR2, documents - 1 degrees of freedom)",
        "wilcoxon": "exact signed-rank distribution given the ties, zero differences dropped",
        "pct_min_base": 1.0,
        "p_adjustment": "Holm across all arm pairs of all models",
        "detectable": "smallest true change with 80% power at alpha 0.05 / the number of comparisons (Holm's strictest step)",
        "clustered_by": "none: the eval set records no source document for its questions, so they are treated as independent",
        "seeds": "one adapter per model: a fine-tuned arm's intervals are over questions only, for this adapter; another training "
        "seed would give another adapter (finetune.seeds trains several)",
    }
    assert "every headline judge scored in every arm" in summary.settings["panel_score"]
    assert "80% power" in summary.settings["detectable"]


def test_latency_cells_name_their_model_and_count_even_when_base_comes_last():
    rows = [
        GenerationRow("m", "rag", "q1", 300.0, 10, 5),
        GenerationRow("m", "base", "q1", 100.0, 10, 5),
        GenerationRow("m", "base", "q2", 0.0, 0, 0),
    ]
    rag_cell = [c for c in latency_token_summary(rows) if c.arm == "rag"][0]
    cells = latency_token_summary(rows)
    assert [(c.model, c.arm, c.n_generations) for c in cells] == [("m", "base", 2), ("m", "rag", 1)]
    assert rag_cell.pct_vs_base["latency_ms_median"] == pytest.approx(500.0)  # base median 50
    # a base measure of 0 has no % change
    zero = latency_token_summary([GenerationRow("m", "base", "q", 0.0, 0, 0), GenerationRow("m", "ft", "q", 5.0, 0, 0)])
    assert math.isnan(zero[1].pct_vs_base["latency_ms_median"]) and math.isnan(zero[1].pct_vs_base["input_tokens_mean"])

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
    assert summary.agreement.judges == ["j1", "j2", "broken"]
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
    """rag rows come first and judge x never scored base: neither may change what base means."""
    rows = []
    for q, score in enumerate(SCORES[:12]):
        rows.append(ScoreRow("m", "rag", f"q{q:02d}", "x", min(10.0, score + 1)))
        rows.append(ScoreRow("m", "rag", f"q{q:02d}", "y", None if q == 3 else max(0.0, score - 2)))
        rows.append(ScoreRow("m", "base", f"q{q:02d}", "y", score))
    return rows


def test_summary_defaults_are_the_documented_ones():
    rows = _two_judge_rows()
    default = summarize(rows).to_dict()
    assert default == summarize(rows, n_resamples=2000, seed=0, confidence=0.95, n_permutations=10000).to_dict()
    assert default != summarize(rows, seed=1).to_dict()


def test_summary_cells_fields_and_settings_exactly():
    from localnova.evaluate.controls import JudgeControls
    from localnova.evaluate.panel import cell_scores, level_ci, paired_scores
    from localnova.evaluate.statistics import bootstrap_ci, pct_change_vs_base

    rows = _two_judge_rows()
    control = JudgeControls("y", 5.0, 9.0, 0.0, 1.0, 0, True, "passes")
    summary = summarize(rows, n_resamples=300, seed=4, confidence=0.8, n_permutations=200, headline_note="n", controls=[control])
    # base first although rag came first; judge y's cell in base although x has none there
    assert [(c.model, c.arm, c.judge) for c in summary.judge_cells] == [("m", "base", "y"), ("m", "rag", "x"), ("m", "rag", "y")]
    rag_y = summary.judge_cells[2]
    valid = [r.score for r in rows if (r.arm, r.judge) == ("rag", "y") and r.score is not None]
    assert (rag_y.n_judgments, rag_y.n_failed) == (12, 1)
    assert (rag_y.mean, rag_y.low, rag_y.high) == pytest.approx(bootstrap_ci(valid, 300, 4, 0.8))
    cells = cell_scores(rows)
    base, rag = summary.panel_cells
    assert (base.model, base.arm, base.n_questions, rag.n_questions) == ("m", "base", 12, 12)
    assert (rag.mean, rag.low, rag.high) == pytest.approx(level_ci(cells[("m", "rag")], 300, 4, 0.8))
    expected_pct = pct_change_vs_base(*paired_scores(cells[("m", "base")], cells[("m", "rag")]), 300, 4, 0.8)
    assert (rag.pct_vs_base, rag.pct_vs_base_low, rag.pct_vs_base_high) == pytest.approx(expected_pct)
    (comparison,) = summary.comparisons
    assert (comparison.arm_a, comparison.arm_b, comparison.n) == ("base", "rag", 11)  # q03: no judge scored both
    assert summary.controls == [control]
    assert summary.settings == {
        "n_resamples": 300,
        "seed": 4,
        "confidence": 0.8,
        "n_permutations": 200,
        "base_arm": "base",
        "panel_score": summary.settings["panel_score"],
        "headline_judges": ["x", "y"],
        "headline_note": "n",
        "interval": "percentile bootstrap over questions",
        "p_adjustment": "Holm across all arm pairs of all models",
    }
    assert "mean over judges of each judge's mean" in summary.settings["panel_score"]


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

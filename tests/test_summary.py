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

"""A small version of scripts/calibrate_stats.py (BENCHMARKS.md, issue 19 has the full tables):
simulated studies with the store's structure go through the report's own summary, and under
the null its tests stay near 5% false positives, under known effects its intervals cover the
truth, and the power the power function predicts (at 10 questions, a ceiling below 80%) is the
rate at which the test finds the change.

Seeded, so the figures are the same on every run; the limits allow for the Monte Carlo error
of 400 studies a cell (a standard error of 1.1 points at 5% and at 95%, 2.5 at 50%). A second
test runs one of issue 27's clustered null cells (BENCHMARKS.md, issue 27), 300 studies."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_stats.py"


def load_script():
    if "calibrate_stats" in sys.modules:
        return sys.modules["calibrate_stats"]
    spec = importlib.util.spec_from_file_location("calibrate_stats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_calibration_in_small():
    calibrate = load_script()
    found = calibrate.calibrate([10], studies=400, seed=19, workers=1, parts={"null", "coverage", "power"}, truth_questions=400_000)
    (null,), (coverage,), (power,) = found["null"], found["coverage"], found["power"]
    assert null["studies"] == coverage["studies"] == power["studies"] == 400
    for name in ("fwer_wilcoxon", "fwer_permutation", "wilcoxon_holm", "permutation_holm", "diff_interval", "pct_interval"):
        assert null[name] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400), name
    for arm in ("rag", "ft", "ft_rag"):
        for kind in ("diff", "pct"):
            assert 0.95 - 3 * math.sqrt(0.95 * 0.05 / 400) <= coverage[f"{arm}_{kind}"] <= 1.0, (arm, kind)
    # at 10 questions, a quarter of them answered alike, 80% is out of reach: the ceiling is checked
    assert power["predicted"] < 0.6 and abs(power["permutation"] - power["predicted"]) <= 3 * math.sqrt(0.25 / 400)
    table = calibrate.markdown_tables(found["null"], found["coverage"], found["power"])
    assert table.count("| 10 | 400 |") == 3


def test_the_simulated_store_has_the_structure_the_tables_describe():
    """Cheap checks of the generator itself: scales, ties, zeros, failures and the gate."""
    import numpy as np

    calibrate = load_script()
    rng = np.random.default_rng(0)
    answers = calibrate.answer_scores(rng, 20, 50, calibrate.NULL)
    llm, f1, minilm = answers["llm-judge"], answers["token-f1"], answers["minilm"]
    assert np.nanmean(llm) > np.nanmean(minilm) > np.nanmean(f1)  # three scales
    assert np.all(np.isnan(llm) | (llm == np.round(llm)))  # integer scores: ties
    assert 0.3 < np.mean(f1 == 0) < 0.6  # token F1 without a word in common
    rag_failures, base_failures = np.mean(np.isnan(llm[..., 1])), np.mean(np.isnan(llm[..., 0]))
    assert rag_failures > 2 * base_failures > 0  # failures depend on the arm
    identical = np.all([np.array_equal(answers[j][..., 2], answers[j][..., 0], equal_nan=True) for j in calibrate.JUDGES])
    assert not identical and np.mean(f1[..., 2] == f1[..., 0]) > 0.25  # many zero differences
    controls = calibrate.control_scores(rng, 1, 40, calibrate.NULL)
    run = calibrate.study_run(calibrate.answer_scores(rng, 1, 40, calibrate.NULL), controls, 0)
    from localnova.report.summarize import summarize_run

    summary = summarize_run(run)
    assert summary.settings["headline_judges"] == ["llm-judge", "token-f1", "minilm"]  # the weak judge is gated out
    assert [(c.arm_a, c.arm_b) for c in summary.comparisons][:3] == [("base", "rag"), ("base", "ft"), ("base", "ft_rag")]


@pytest.mark.slow
def test_clustered_null_in_small():
    """Issue 27's clustered null, small: 6 documents of 5 questions whose rag - base differences
    correlate at 0.30 within a document. The report clusters by document (the simulated eval
    items name each question's source), and its intervals and tests stay near 5%; taking the
    questions as independent, as before, excludes 0 far more often."""
    calibrate = load_script()
    latent = calibrate.latent_icc_for(0.30, 19)
    row = calibrate.clustered_row(6, 5, 0.30, latent, calibrate.simulate(300, 30, calibrate.clustered_null(6, latent), 19, 1))
    limit = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300)
    assert row["studies"] == 300 and 1.2 < row["design_effect"]
    for name in ("diff_interval", "pct_interval", "wilcoxon_raw", "permutation_raw", "fwer_permutation"):
        assert row[name] <= limit, name
    assert row["before"] > limit

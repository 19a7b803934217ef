"""Statistics over questions that share a source document: the cluster-robust variance by hand,
duplicated questions as a second implementation (a study whose every question appears twice in
its own document must give the intervals and tests of the study without the copies), the
design effect by hand, and the clustered power model's limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from localnova.evaluate.clustered import cluster_labels, clusters_from_items, design_effect, mean_variance
from localnova.evaluate.power import detectable_difference, power, power_ceiling, questions_needed
from localnova.evaluate.statistics import bootstrap_ci, cluster_bootstrap_ci, paired_change, paired_tests
from localnova.types import EvalItem


def test_clusters_come_from_the_first_doc_id_and_need_one_for_every_question():
    items = [EvalItem("q1", "?", "!", ("a.md", "b.md")), EvalItem("q2", "?", "!", ("b.md",))]
    assert clusters_from_items(items) == {"q1": "a.md", "q2": "b.md"}
    assert clusters_from_items([{"question_id": "q1", "doc_ids": ["a.md"]}]) == {"q1": "a.md"}
    assert clusters_from_items([*items, EvalItem("q3", "?", "!")]) is None
    assert clusters_from_items([]) is None


def test_labels_are_none_when_every_question_is_alone():
    assert cluster_labels(["q1", "q2"], {"q1": "a", "q2": "b"}) is None
    assert cluster_labels(["q1", "q2"], None) is None
    assert cluster_labels(["q1", "q2", "q3"], {"q1": "a", "q3": "a"}).tolist() == [0, 1, 0]  # q2 unknown: its own


def test_cluster_robust_variance_by_hand():
    # mean 3.5; residual sums per cluster -4, 0, 4; each cluster 2 of 6 questions:
    # (16 + 0 + 16) / (1 - 2/6) / 6**2 = 48 / 36
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    variance, groups = mean_variance(values, np.array([0, 0, 1, 1, 2, 2]))
    assert (variance, groups) == (pytest.approx(48 / 36), 3)
    # without clusters it is s**2 / n
    assert mean_variance(values, None) == (pytest.approx(np.var(values, ddof=1) / 6), 6)
    assert math.isnan(mean_variance(values, np.zeros(6, dtype=np.int64))[0])  # one cluster says nothing


def _duplicated(by_question: dict[str, float]) -> dict[str, float]:
    return {f"{q}{copy}": value for q, value in by_question.items() for copy in ("a", "b")}


def test_a_study_of_duplicated_questions_gives_the_intervals_and_tests_of_the_original():
    rng = np.random.default_rng(3)
    base = {f"q{i:02d}": float(v) for i, v in enumerate(rng.integers(2, 9, 20))}
    arm = {q: float(np.clip(v + rng.integers(-2, 4), 0, 10)) for q, v in base.items()}
    clusters = {f"{q}{copy}": q for q in base for copy in ("a", "b")}
    original = paired_change(base, arm, 0.95)
    copied = paired_change(_duplicated(base), _duplicated(arm), 0.95, clusters)
    assert copied.n == 40 and copied.n_clusters == original.n_clusters == 20
    fields = ("diff", "diff_low", "diff_high", "pct", "pct_low", "pct_high")
    assert [getattr(copied, f) for f in fields] == pytest.approx([getattr(original, f) for f in fields])
    # ignoring the copies' clustering would call the interval narrower than it is
    naive = paired_change(_duplicated(base), _duplicated(arm), 0.95)
    assert naive.diff_high - naive.diff_low < 0.75 * (original.diff_high - original.diff_low)

    questions = sorted(base)
    a, b = np.array([base[q] for q in questions]), np.array([arm[q] for q in questions])
    doubled = sorted(clusters)
    labels = cluster_labels(doubled, clusters)
    test = paired_tests(np.repeat(a, 2), np.repeat(b, 2), 2000, 0, labels)
    alone = paired_tests(a, b, 2000, 0)
    assert (test.n, test.n_clusters) == (40, 20)
    assert (test.wilcoxon_p, test.permutation_p) == pytest.approx((alone.wilcoxon_p, alone.permutation_p))


def test_the_cluster_sign_flip_is_exact_over_documents():
    # three documents whose differences sum to 1, 2 and 3: only all-plus and all-minus reach |6|
    differences = np.array([0.5, 0.5, 2.0, 1.0, 2.0])
    labels = np.array([0, 0, 1, 2, 2])
    test = paired_tests(np.zeros(5), differences, labels=labels)
    assert test.permutation_p == pytest.approx(2 / 8)
    assert test.n_clusters == 3


def test_design_effect_by_hand():
    # no spread within documents: ICC 1, and the design effect is sum m**2 / n = (9 + 1) / 4
    values = np.array([1.0, 1.0, 1.0, 4.0])
    found = design_effect(values, np.array([0, 0, 0, 1]))
    assert (found.icc, found.weighted_size, found.design_effect) == (1.0, 2.5, 2.5)
    # two documents of two: means 1.5 and 3.5, grand mean 2.5; MSB = 2 * (1 + 1) / 1 = 4,
    # MSW = (4 * 0.25) / 2 = 0.5, m0 = 2: ICC = (4 - 0.5) / (4 + 0.5) = 7 / 9; DE = 1 + 1 * 7 / 9
    found = design_effect(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 1, 1]))
    assert found.icc == pytest.approx(7 / 9) and found.design_effect == pytest.approx(16 / 9)
    # more spread within than between: truncated at 0
    assert design_effect(np.array([1.0, 4.0, 4.0, 1.0]), np.array([0, 0, 1, 1])).design_effect == 1.0
    assert design_effect(values, None).design_effect == 1.0


def test_the_issue_s_demo_design_effects_follow_from_its_cluster_sizes():
    # 60 questions from 30 documents: 5 of one question, 22 of two, 1 of three, 2 of four
    sizes = [1] * 5 + [2] * 22 + [3] + [4] * 2
    weighted = sum(m * m for m in sizes) / sum(sizes)
    assert 1 + (weighted - 1) * 0.12 == pytest.approx(1.15, abs=0.005)
    assert 1 + (weighted - 1) * 0.28 == pytest.approx(1.35, abs=0.005)


def test_cluster_bootstrap_of_documents_whose_questions_agree_is_the_bootstrap_of_the_documents():
    documents = [3.0, 7.0, 5.0, 9.0, 4.0, 6.0]
    by_question = {f"d{d}q{k}": value for d, value in enumerate(documents) for k in range(3)}
    clusters = {q: q.split("q")[0] for q in by_question}
    assert cluster_bootstrap_ci(by_question, clusters, 500, 2) == pytest.approx(bootstrap_ci(documents, 500, 2))
    singles = {f"q{i}": v for i, v in enumerate(documents)}
    assert cluster_bootstrap_ci(singles, {q: q for q in singles}, 500, 2) == bootstrap_ci(documents, 500, 2)


def test_power_with_a_design_effect_is_power_with_the_spread_it_implies():
    assert power(0.5, 1.0, 40, 1, 0.2, design_effect=2.0) == pytest.approx(power(0.5, math.sqrt(2.0), 40, 1, 0.2))
    assert detectable_difference(1.0, 40, 1, 0.0, design_effect=1.5) == pytest.approx(detectable_difference(math.sqrt(1.5), 40, 1))


def test_few_documents_limit_what_a_test_can_ever_find():
    # 60 questions in 6 documents: a sign flip over 6 clusters has steps of 2 / 64 > 0.05 / 6
    assert power_ceiling(60, 6, 0.0, n_clusters=6) == 0.0
    assert detectable_difference(1.0, 60, 6, 0.0, n_clusters=6) == math.inf
    assert power_ceiling(60, 1, 0.0, n_clusters=6) == 1.0  # 2 / 64 < 0.05: one comparison can
    # planning more questions at 10 a document needs more than planning independent ones
    independent = questions_needed(1.0, 0.5, 1)
    assert questions_needed(1.0, 0.5, 1, design_effect=1.4, questions_per_cluster=10) > independent

"""Every pair of arms within a model compared on paired scores, Holm-adjusted as one family,
each with the spread of its differences, how its questions cluster by source document, and
the difference it could detect."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from localnova.config import BASE_ARM
from localnova.evaluate.clustered import DesignEffect, cluster_labels, design_effect
from localnova.evaluate.power import detectable_difference
from localnova.evaluate.seeds import ByAdapter, SeededChange, seeded_change
from localnova.evaluate.statistics import PairedTest, holm_adjust, ordered_arms, paired_arrays, paired_tests, shared_questions


@dataclass(frozen=True)
class ArmComparison:
    """Paired comparison of arm_b against arm_a within one model (diff = b - a).

    The spread of the per-question differences: sd_diff over all of them, zero_share the share
    that are exactly 0 (questions answered alike), sd_nonzero over the others (n - 1 in each
    SD). detectable_diff is the smallest true mean difference this comparison finds with 80%
    power at Holm's strictest level over the family (`power.detectable_difference`), in the
    scores' own points; infinite when no difference would reach that power. Where questions
    share source documents, n_clusters is how many documents the tests flip and rank, and
    design_effect (from the differences' intra-document correlation icc) is how much the
    clustering inflates the variance of the mean difference; without clusters n_clusters = n,
    icc 0 and design_effect 1."""

    model: str
    arm_a: str
    arm_b: str
    n: int
    mean_diff: float
    wilcoxon_p: float
    permutation_p: float
    wilcoxon_p_holm: float
    permutation_p_holm: float
    sd_diff: float = math.nan
    zero_share: float = math.nan
    sd_nonzero: float = math.nan
    detectable_diff: float = math.nan
    n_clusters: int = 0
    icc: float = 0.0
    design_effect: float = 1.0
    n_seeds: int = 1


@dataclass(frozen=True)
class DifferenceSpread:
    """How paired differences spread: the SD of all of them, the share that are exactly 0 and
    the SD of the others (n - 1 in each SD; NaN with fewer than 2 values)."""

    sd_diff: float
    zero_share: float
    sd_nonzero: float


def difference_spread(differences: np.ndarray) -> DifferenceSpread:
    """The spread of paired differences, as the power code takes it (`power.Spread`)."""
    nonzero = differences[differences != 0]
    return DifferenceSpread(
        float(np.std(differences, ddof=1)) if differences.size >= 2 else math.nan,
        float(np.mean(differences == 0)) if differences.size else math.nan,
        float(np.std(nonzero, ddof=1)) if nonzero.size >= 2 else math.nan,
    )


def detectable_for(spread: DifferenceSpread, clustering: DesignEffect, n: int, n_comparisons: int, **kwargs: float) -> float:
    """`power.detectable_difference` for a comparison's spread and clustering."""
    clusters = clustering.n_clusters if clustering.n_clusters < n else None
    return detectable_difference(
        spread.sd_nonzero, n, n_comparisons, spread.zero_share, design_effect=clustering.design_effect, n_clusters=clusters, **kwargs
    )


def _with_seeds(test: PairedTest, clustering: DesignEffect, found: SeededChange) -> tuple[PairedTest, DesignEffect, int]:
    """A comparison's tests and design effect once the training seeds' variance is in: each p at
    least the t test's over questions and seeds, the design effect grown by the share of the
    variance the seeds add."""
    inflation = 1.0 / (1.0 - found.seed_share) if found.seed_share < 1 else math.inf
    wilcoxon_p, permutation_p = max(test.wilcoxon_p, found.p), max(test.permutation_p, found.p)
    grown = DesignEffect(clustering.n_clusters, clustering.icc, clustering.weighted_size, clustering.design_effect * inflation)
    return PairedTest(test.n, test.mean_diff, wilcoxon_p, permutation_p, test.n_clusters), grown, found.n_seeds


def compare_arms(
    scores_by_cell: Mapping[tuple[str, str], Any],
    base_arm: str = BASE_ARM,
    n_permutations: int = 10000,
    seed: int = 0,
    pair: Callable[[Any, Any], tuple[Mapping[str, float], Mapping[str, float]]] | None = None,
    clusters: Mapping[str, str] | None = None,
    seeded: Mapping[tuple[str, str], ByAdapter] | None = None,
) -> list[ArmComparison]:
    """Paired tests for every pair of arms within each model, Holm-adjusted as one family.

    `scores_by_cell` is {(model, arm): {question_id: score}} (e.g. from
    `panel_scores_by_question`). Within a model, arms are ordered base first, then by first
    appearance; each pair (a, b) with a before b is tested on the questions both scored, so
    arm-vs-base pairs have a = base. The Holm family is every comparison of every model,
    adjusted separately for the Wilcoxon and the permutation p-values. A model with one arm
    contributes nothing. `pair`, when given, turns two cells' values into the two
    {question_id: score} maps to test (e.g. `panel.paired_scores`, which keeps per question
    only the judges that scored both answers); by default the cells already are such maps.
    Each comparison also carries the spread of its differences and the difference it could
    detect (80% power at alpha 0.05 / the family's size). With `clusters` ({question_id:
    source document}) the tests take a document as their unit (`statistics.paired_tests`) and
    the detectable difference allows for the design effect. With `seeded` ({(model, arm):
    {adapter label: {question_id: score}}} for arms answered by several adapters, one per
    training seed), a comparison involving such an arm also takes a t test over questions and
    seeds (`seeds.seeded_change`): both its p-values are at least that test's, and its
    detectable difference allows for the variance the seeds add.
    """
    arms_by_model: dict[str, list[str]] = {}
    for model, arm in scores_by_cell:
        arms_by_model.setdefault(model, []).append(arm)
    raw: list[tuple[str, str, str, PairedTest, DifferenceSpread, DesignEffect]] = []
    for model, arms in arms_by_model.items():
        for arm_a, arm_b in combinations(ordered_arms(arms, base_arm), 2):
            cell_a, cell_b = scores_by_cell[(model, arm_a)], scores_by_cell[(model, arm_b)]
            values_a, values_b = pair(cell_a, cell_b) if pair else (cell_a, cell_b)
            a, b = paired_arrays(values_a, values_b)
            labels = cluster_labels(shared_questions(values_a, values_b), clusters)
            test = paired_tests(a, b, n_permutations, seed, labels)
            clustering = design_effect(b - a, labels)
            n_seeds = 1
            by_seed = seeded or {}
            if (model, arm_a) in by_seed or (model, arm_b) in by_seed:
                reference, arm = by_seed.get((model, arm_a), {"": values_a}), by_seed.get((model, arm_b), {"": values_b})
                found = seeded_change(reference, arm, 0.95, clusters)
                test, clustering, n_seeds = _with_seeds(test, clustering, found)
            raw.append((model, arm_a, arm_b, test, difference_spread(b - a), clustering, n_seeds))
    wilcoxon_holm = holm_adjust([t.wilcoxon_p for *_, t, _, _, _ in raw])
    permutation_holm = holm_adjust([t.permutation_p for *_, t, _, _, _ in raw])
    return [
        ArmComparison(
            model=model,
            arm_a=arm_a,
            arm_b=arm_b,
            n=test.n,
            mean_diff=test.mean_diff,
            wilcoxon_p=test.wilcoxon_p,
            permutation_p=test.permutation_p,
            wilcoxon_p_holm=w_holm,
            permutation_p_holm=p_holm,
            sd_diff=spread.sd_diff,
            zero_share=spread.zero_share,
            sd_nonzero=spread.sd_nonzero,
            detectable_diff=detectable_for(spread, clustering, test.n, len(raw)),
            n_clusters=clustering.n_clusters,
            icc=clustering.icc,
            design_effect=clustering.design_effect,
            n_seeds=n_seeds,
        )
        for (model, arm_a, arm_b, test, spread, clustering, n_seeds), w_holm, p_holm in zip(
            raw, wilcoxon_holm, permutation_holm, strict=True
        )
    ]

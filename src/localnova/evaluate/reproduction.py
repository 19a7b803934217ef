"""Does a run reproduce a published study's findings? Each finding's comparisons computed on the
run's own measurements, paired by question, and a verdict (evaluate/verdicts.py).

Per comparison (localnova.findings.Comparison): the change of an arm against a reference arm
on the same questions, in the measure's units and in % of the reference, with paired t
intervals (`statistics.paired_change`), cluster-robust where questions share a source document
(evaluate/clustered.py); the smallest change this run could detect, with 80% power at 5%, from
the spread of its own per-question differences and their design effect
(`power.detectable_difference`); its p-value, the larger of the t interval's and the paired
sign-flip test's (over documents where they cluster): the power code models that test, so a
comparison it says could detect nothing (on 4 questions no sign pattern is rarer than 1 in 8)
is never called settled on a t interval that leans on normal differences alone; and where the
post gives a size, the p-value of that size against this run's % interval, and whether the run
had 80% power for it. A comparison goes the post's way (reproduced) or the other (contradicted)
when its p is below 5%; otherwise it is inconclusive at this power, with the questions that
would detect the post's size (`power.questions_needed`, at this run's questions per document);
not tested when the run lacks what it needs (an arm, the latency probe, a second model) or the
reading's premise fails (`Comparison.reference_sign`). evaluate/verdicts.py combines a
finding's comparisons so that its verdict keeps the 5% level.

Measures, per question: the headline panel's score (`panel.model_panels`, the questions and
judges the summary uses), the latency probe's mean time per request over its rounds (never
the batched answers' times, which are throughput), and each answer's input + output tokens.
Which model is smaller or larger is the order the caller gives (the run's config lists its
models smallest first). Pure functions of their inputs.
"""

from __future__ import annotations

import math
import statistics as stats
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localnova.config import BASE_ARM
from localnova.evaluate.clustered import DesignEffect, cluster_labels, design_effect, interval_p, mean_interval
from localnova.evaluate.comparisons import detectable_for, difference_spread
from localnova.evaluate.panel import model_panels
from localnova.evaluate.power import DEFAULT_POWER, MAX_QUESTIONS, questions_needed
from localnova.evaluate.seeds import SeededChange, adapter_panels, fold_replicates, seeded_change, split_replicate
from localnova.evaluate.statistics import (
    PCT_MIN_BASE,
    generation_rows_from,
    paired_arrays,
    paired_change,
    paired_tests,
    score_rows_from,
    shared_questions,
)
from localnova.evaluate.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTED,
    REPRODUCED,
    RULED_OUT,
    UNITS,
    ComparisonResult,
    FindingResult,
    agreement,
    combine,
)
from localnova.findings import GAP_ROLE, Comparison, FindingsFile

# the verdicts and their records live in verdicts.py; the Reproduction section takes them from here
__all__ = [
    "CONTRADICTED",
    "INCONCLUSIVE",
    "NOT_TESTED",
    "REPRODUCED",
    "RULED_OUT",
    "UNITS",
    "ComparisonResult",
    "FindingResult",
    "RunValues",
    "agreement",
    "compare",
    "reproduce",
    "run_values",
]
NEEDS_TWO_MODELS = "needs two models of different size; this run has one"
NO_PROBE = "no latency probe in this run (the batched answers' times measure throughput and are not compared between arms)"


@dataclass(frozen=True)
class RunValues:
    """What a run measured, per question: values[measure][(model, arm)] = {question_id: value};
    `models` in size order, smallest first; missing[measure] says why the run has none;
    `clusters` {question_id: source document} where the run recorded one for each question;
    by_adapter[measure][(model, arm)] = {adapter label: {question_id: value}} for the arms
    several adapters answered (one per training seed), whose mean `values` holds."""

    models: list[str]
    values: dict[str, dict[tuple[str, str], dict[str, float]]]
    missing: dict[str, str] = field(default_factory=dict)
    clusters: Mapping[str, str] | None = None
    by_adapter: dict[str, dict[tuple[str, str], dict[str, dict[str, float]]]] = field(default_factory=dict)


def run_values(
    score_rows: Iterable[Any],
    headline_judges: Sequence[str],
    generation_rows: Iterable[Any],
    probe_timings: Iterable[Any],
    models_by_size: Sequence[str],
    base_arm: str = BASE_ARM,
    clusters: Mapping[str, str] | None = None,
) -> RunValues:
    """A run's per-question measurements: the headline panel's score over `headline_judges`
    (each model on its panel questions), the probe's mean time per question, and each answer's
    total tokens. `models_by_size` orders the run's models, smallest first; a model it does not
    name goes after those it does, in order of appearance. The answers of a model's further
    adapters (`seeds.replicate_name`) count as that model's: a fine-tuned arm's value is the
    mean over its adapters, each adapter's kept in `by_adapter`."""
    rows, adapters = fold_replicates(score_rows_from(score_rows))
    panel: dict[tuple[str, str], dict[str, float]] = {}
    panels = model_panels(rows, list(headline_judges), base_arm)
    for model, model_panel in panels.items():
        for arm, scores in model_panel.scores.items():
            if scores:
                panel[(model, arm)] = dict(scores)
    by_adapter = {"panel_score": adapter_panels(adapters, {m: p.questions for m, p in panels.items()}, list(headline_judges))}
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for timing in probe_timings:
        times.setdefault((timing.model, timing.arm), {}).setdefault(timing.question_id, []).append(float(timing.latency_ms))
    latency = {cell: {q: stats.fmean(values) for q, values in by_question.items()} for cell, by_question in times.items()}
    token_adapters: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for row in generation_rows_from(generation_rows):
        model, label = split_replicate(row.model)
        token_adapters.setdefault((model, row.arm), {}).setdefault(label, {})[row.question_id] = float(row.input_tokens + row.output_tokens)
    tokens = {
        cell: {q: stats.fmean(found[q] for found in by_label.values()) for q in set.intersection(*map(set, by_label.values()))}
        for cell, by_label in token_adapters.items()
    }
    by_adapter["total_tokens"] = {cell: by_label for cell, by_label in token_adapters.items() if len(by_label) >= 2}
    values = {"panel_score": panel, "latency": latency, "total_tokens": tokens}
    missing = {}
    if not panel:
        missing["panel_score"] = "no answer scored by every headline judge in every arm" if headline_judges else "no headline judge"
    if not latency:
        missing["latency"] = NO_PROBE
    if not tokens:
        missing["total_tokens"] = "no answers stored"
    present = list(dict.fromkeys(model for cells in values.values() for model, _ in cells))
    ordered = [m for m in dict.fromkeys(models_by_size) if m in present] + [m for m in present if m not in models_by_size]
    return RunValues(ordered, values, missing, clusters, by_adapter)


def role_models(role: str, models: Sequence[str]) -> list[tuple[str, ...]] | str:
    """The models a comparison's role picks, each as a tuple (one model, or (larger, smaller)
    for the gap between them); a string says why there are none. With one model, that model
    plays every single-model role."""
    if not models:
        return "no model in this run"
    if role == "larger":
        return [(models[-1],)]
    if role == "smaller":
        return [(models[0],)]
    if role == "each":
        return [(model,) for model in models]
    if role == GAP_ROLE:
        return [(models[-1], models[0])] if len(models) >= 2 else NEEDS_TWO_MODELS
    raise ValueError(f"unknown model role {role!r}")


def _label(comparison: Comparison, models: tuple[str, ...]) -> str:
    who = f"{models[0]} minus {models[1]}" if comparison.model == GAP_ROLE else models[0]
    return f"{comparison.arm} vs {comparison.reference}, {who}"


def _cell_values(run: RunValues, comparison: Comparison, models: tuple[str, ...], arm: str) -> dict[str, float] | str:
    """Per question, the comparison's value for `arm`: the model's, or the gap between two
    models on the questions both have; a string says what is missing."""
    cells = run.values[comparison.measure]
    found = []
    for model in models:
        if (model, arm) not in cells:
            what = "timed by the latency probe" if comparison.measure == "latency" else "in this run"
            return f"{model} has no {arm} arm {what}"
        found.append(cells[(model, arm)])
    if len(found) == 1:
        return found[0]
    larger, smaller = found
    return {q: larger[q] - smaller[q] for q in sorted(set(larger) & set(smaller))}


def _premise(comparison: Comparison, models: tuple[str, ...], reference: dict[str, float], run: RunValues, confidence: float) -> str:
    """Why the reading's premise fails in this run ('' when it holds or the reading has none):
    the reference level's interval lies wholly on the other side of 0 from `reference_sign`."""
    if comparison.reference_sign is None:
        return ""
    mean, low, high = mean_interval(reference, confidence, run.clusters)
    wrong = high < 0 if comparison.reference_sign == "positive" else low > 0  # False for NaN
    if not wrong:
        return ""
    if comparison.model == GAP_ROLE:
        expected = f"{models[0]} ahead of {models[1]}" if comparison.reference_sign == "positive" else f"{models[1]} ahead of {models[0]}"
        found = f"{models[1]} was ahead" if comparison.reference_sign == "positive" else f"{models[0]} was ahead"
    else:
        expected = f"a {comparison.reference_sign} {comparison.reference} level"
        found = "it was not"
    return (
        f"its premise does not hold: the post's reading has {expected} at {comparison.reference}, and in this run {found} "
        f"({mean:+.2f} [{low:+.2f}, {high:+.2f}] {UNITS[comparison.measure]})"
    )


def _settle(
    comparison: Comparison, n: int, reference_mean: float, sd_nonzero: float, zero_share: float, clustering: Any
) -> tuple[int | None, str]:
    """For an inconclusive comparison: the questions that would detect the post's size with 80%
    power at this run's spread (and questions per document), and the sentence that says so (or
    why there is no number)."""
    if comparison.post_pct is None:
        return None, "the post gives no size to plan for"
    if zero_share == 1:
        return None, "every question measured the same in both arms, so this run's spread says nothing of what more would show"
    if not math.isfinite(sd_nonzero):
        return None, "the spread of this run's differences is unknown (fewer than 2 questions differ)"
    if not (math.isfinite(reference_mean) and reference_mean > 0):
        return None, "the reference level is not above 0, so the post's % has no size here"
    target = abs(comparison.post_pct) / 100.0 * reference_mean
    per_document = n / clustering.n_clusters if clustering.n_clusters < n else 1.0
    needed = questions_needed(sd_nonzero, target, 1, zero_share, design_effect=clustering.design_effect, questions_per_cluster=per_document)
    size = f"the post's {comparison.post_pct:+g}%"
    if needed is None:
        return None, f"no number of questions up to {MAX_QUESTIONS:,} would detect {size} at this run's spread"
    if needed <= n:
        return needed, f"{n} questions had 80% power for {size}, and the change found is too small to tell from 0"
    spread = "this run's spread" if per_document == 1 else f"this run's spread and {per_document:.1f} questions per document"
    return needed, f"{needed} questions would detect {size} with 80% power at {spread} (this run: {n})"


def _size_p(comparison: Comparison, pct: float, low: float, high: float, units: int, confidence: float) -> float:
    """The p-value of the post's size against this run's % interval (NaN without either): two-sided
    for an estimate, and for a bound ("more than 60%") whether the interval stops short of it."""
    if comparison.post_pct is None:
        return math.nan
    beyond = (1 if comparison.post_pct > 0 else -1) if comparison.post_size == "beyond" else 0
    return interval_p(pct, low, high, units - 1, confidence, comparison.post_pct, beyond)


def _seeded(run: RunValues, comparison: Comparison, models: tuple[str, ...], confidence: float) -> SeededChange | None:
    """The comparison's change over questions and training seeds, where an arm of it was answered
    by several adapters (one model's; a gap between two models keeps their means)."""
    cells = run.by_adapter.get(comparison.measure, {})
    if len(models) != 1 or not ((models[0], comparison.reference) in cells or (models[0], comparison.arm) in cells):
        return None
    values = run.values[comparison.measure]
    reference = cells.get((models[0], comparison.reference), {"": values[(models[0], comparison.reference)]})
    arm = cells.get((models[0], comparison.arm), {"": values[(models[0], comparison.arm)]})
    return seeded_change(reference, arm, confidence, run.clusters)


def compare(
    run: RunValues, comparison: Comparison, models: tuple[str, ...], confidence: float = 0.95, n_permutations: int = 10000, seed: int = 0
) -> ComparisonResult:
    """One comparison on the models given (one, or larger and smaller for a gap), with its
    unadjusted verdict: it settles the way the post says, or the other, when its p (the larger
    of the t interval's and the sign-flip test's) is below 1 - confidence; `verdicts.combine`
    then adjusts it within its finding."""
    label = _label(comparison, models)
    if comparison.measure in run.missing:
        return ComparisonResult(comparison, label, NOT_TESTED, run.missing[comparison.measure])
    reference = _cell_values(run, comparison, models, comparison.reference)
    arm = _cell_values(run, comparison, models, comparison.arm)
    for found in (reference, arm):
        if isinstance(found, str):
            return ComparisonResult(comparison, label, NOT_TESTED, found)
    premise = _premise(comparison, models, reference, run, confidence)
    if premise:
        return ComparisonResult(comparison, label, NOT_TESTED, premise)
    change = paired_change(reference, arm, confidence, run.clusters)
    if change.n == 0:
        return ComparisonResult(comparison, label, NOT_TESTED, "no question measured in both arms")
    reference_values, arm_values = paired_arrays(reference, arm)
    labels = cluster_labels(shared_questions(reference, arm), run.clusters)
    spread = difference_spread(arm_values - reference_values)
    clustering = design_effect(arm_values - reference_values, labels)
    seeded = _seeded(run, comparison, models, confidence)
    if seeded is not None:  # several adapters: the change over questions and training seeds
        change = seeded.change
        grown = clustering.design_effect / (1.0 - seeded.seed_share) if seeded.seed_share < 1 else math.inf
        clustering = DesignEffect(clustering.n_clusters, clustering.icc, clustering.weighted_size, grown)
    alpha = 1.0 - confidence
    detectable = detectable_for(spread, clustering, change.n, 1, target_power=DEFAULT_POWER, alpha=alpha)
    relative = comparison.model != GAP_ROLE and change.base_mean >= PCT_MIN_BASE
    pct = (change.pct, change.pct_low, change.pct_high) if relative else (math.nan,) * 3
    t_p = seeded.p if seeded is not None else interval_p(change.diff, change.diff_low, change.diff_high, change.n_clusters - 1, confidence)
    permutation_p = paired_tests(reference_values, arm_values, n_permutations, seed, labels).permutation_p
    # an interval of no width (every difference alike) excludes 0 when the change is not 0
    excludes_zero = change.diff_low > 0 or change.diff_high < 0
    p = max(t_p if math.isfinite(t_p) else (0.0 if excludes_zero else 1.0), permutation_p)
    size_p = _size_p(comparison, *pct, change.n_clusters, confidence) if relative else math.nan
    target = abs(comparison.post_pct or 0.0) / 100.0 * change.base_mean
    needed, reason = None, ""
    if p < alpha:
        verdict = CONTRADICTED if (change.diff < 0) == (comparison.direction == "up") else REPRODUCED
    else:
        verdict = INCONCLUSIVE
        needed, reason = _settle(comparison, change.n, change.base_mean, spread.sd_nonzero, spread.zero_share, clustering)
        if excludes_zero:
            units = f"{change.n} questions" if clustering.n_clusters >= change.n else f"{clustering.n_clusters} documents"
            reason = f"its interval excludes 0, but the paired sign-flip test does not agree (p = {permutation_p:.3g} on {units}); {reason}"
    return ComparisonResult(
        comparison,
        label,
        verdict,
        reason,
        change.n,
        change.base_mean,
        change.diff,
        change.diff_low,
        change.diff_high,
        *pct,
        detectable,
        100.0 * detectable / change.base_mean if relative else math.nan,
        needed,
        p=p,
        size_p=size_p,
        power_for_size=relative and target > 0 and detectable <= target,
        n_clusters=clustering.n_clusters,
        design_effect=clustering.design_effect,
    )


def reproduce(
    findings: FindingsFile, run: RunValues, confidence: float = 0.95, n_permutations: int = 10000, seed: int = 0
) -> list[FindingResult]:
    """Every finding of `findings`, in order, set against `run` (`seed` and `n_permutations`
    for the sign-flip tests above 16 questions, as the summary's)."""
    found = []
    for finding in findings.findings:
        results = []
        for comparison in finding.comparisons:
            picked = role_models(comparison.model, run.models)
            if isinstance(picked, str):
                results.append(ComparisonResult(comparison, f"{comparison.arm} vs {comparison.reference}", NOT_TESTED, picked))
                continue
            results += [compare(run, comparison, models, confidence, n_permutations, seed) for models in picked]
        found.append(combine(finding, results, 1.0 - confidence))
    return found

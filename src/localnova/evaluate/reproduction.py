"""Does a run reproduce a published study's findings? Each finding's comparisons computed on the
run's own measurements, paired by question, and a verdict.

Per comparison (localnova.findings.Comparison): the change of an arm against a reference arm
on the same questions, in the measure's units and in % of the reference, with paired t
intervals (`statistics.paired_change`); the smallest change this run could detect, with 80%
power at the verdict's level, from the spread of its own per-question differences
(`power.detectable_difference`); and a verdict:
- reproduced: the change goes the way the post says and its 95% interval excludes 0 (the
  paired sign-flip test agreeing, p < 5%);
- contradicted: it goes the other way, likewise;
- inconclusive at this power: the interval holds 0; where the post gives a size, with the
  questions that would detect that size with 80% power at this run's spread
  (`power.questions_needed`);
- not tested: the run lacks what the comparison needs (an arm, the latency probe, a second
  model).
A finding of several comparisons is contradicted if any is, reproduced only if all are, not
tested if any is not, and inconclusive otherwise.

The verdict reads the interval of the change in the measure's units (the paired t interval of
the per-question differences), and asks the paired sign-flip test to agree at the same level:
the power code (`power.py`) models that test, so a comparison it says could detect nothing
(on 4 questions no sign pattern is rarer than 1 in 8) is never called settled on a t interval
that leans on normal differences alone. Comparison by comparison, unadjusted for the others:
each finding is a claim stated before the run, and the report's Holm-adjusted tests of every
pair of arms stand beside it. The verdict is on direction; the post's size is shown
beside the estimate, plans the questions an inconclusive comparison would need, and where this
run's % interval leaves it out the verdict says so (reproduced in direction but smaller, say).

Measures, per question: the headline panel's score (`panel.model_panels`, the questions and
judges the summary uses), the latency probe's mean time per request over its rounds (never
the batched answers' times, which are throughput), and each answer's input + output tokens.
Which model is smaller or larger is the order the caller gives (the run's config lists its
models smallest first). Pure functions of their inputs.
"""

from __future__ import annotations

import math
import statistics as stats
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localnova.config import BASE_ARM
from localnova.evaluate.comparisons import difference_spread
from localnova.evaluate.panel import model_panels
from localnova.evaluate.power import DEFAULT_POWER, MAX_QUESTIONS, detectable_difference, questions_needed
from localnova.evaluate.statistics import PCT_MIN_BASE, generation_rows_from, paired_arrays, paired_change, paired_tests
from localnova.findings import GAP_ROLE, Comparison, Finding, FindingsFile

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"

UNITS = {"panel_score": "points", "latency": "ms", "total_tokens": "tokens"}
NEEDS_TWO_MODELS = "needs two models of different size; this run has one"
NO_PROBE = "no latency probe in this run (the batched answers' times measure throughput and are not compared between arms)"


@dataclass(frozen=True)
class RunValues:
    """What a run measured, per question: values[measure][(model, arm)] = {question_id: value};
    `models` in size order, smallest first; missing[measure] says why the run has none."""

    models: list[str]
    values: dict[str, dict[tuple[str, str], dict[str, float]]]
    missing: dict[str, str] = field(default_factory=dict)


def run_values(
    score_rows: Iterable[Any],
    headline_judges: Sequence[str],
    generation_rows: Iterable[Any],
    probe_timings: Iterable[Any],
    models_by_size: Sequence[str],
    base_arm: str = BASE_ARM,
) -> RunValues:
    """A run's per-question measurements: the headline panel's score over `headline_judges`
    (each model on its panel questions), the probe's mean time per question, and each answer's
    total tokens. `models_by_size` orders the run's models, smallest first; a model it does not
    name goes after those it does, in order of appearance."""
    panel: dict[tuple[str, str], dict[str, float]] = {}
    for model, model_panel in model_panels(score_rows, list(headline_judges), base_arm).items():
        for arm, scores in model_panel.scores.items():
            if scores:
                panel[(model, arm)] = dict(scores)
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for timing in probe_timings:
        times.setdefault((timing.model, timing.arm), {}).setdefault(timing.question_id, []).append(float(timing.latency_ms))
    latency = {cell: {q: stats.fmean(values) for q, values in by_question.items()} for cell, by_question in times.items()}
    tokens: dict[tuple[str, str], dict[str, float]] = {}
    for row in generation_rows_from(generation_rows):
        tokens.setdefault((row.model, row.arm), {})[row.question_id] = float(row.input_tokens + row.output_tokens)
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
    return RunValues(ordered, values, missing)


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


@dataclass(frozen=True)
class ComparisonResult:
    """One comparison on one model (or one gap between two): the change of the arm against the
    reference over n paired questions, in the measure's units (diff) and in % of the reference
    level (pct: NaN for a gap or below PCT_MIN_BASE), each with its interval; what this run could
    detect; the verdict, with `reason` (why it was not tested, or what would settle it) and,
    when inconclusive, the questions that would detect the post's size (None where unknown)."""

    comparison: Comparison
    label: str
    verdict: str
    reason: str = ""
    n: int = 0
    reference_mean: float = math.nan
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    pct: float = math.nan
    pct_low: float = math.nan
    pct_high: float = math.nan
    detectable_diff: float = math.nan
    detectable_pct: float = math.nan
    questions_needed: int | None = None

    @property
    def unit(self) -> str:
        return UNITS[self.comparison.measure]

    @property
    def size_note(self) -> str:
        """Where the post gives a size and this run's % interval leaves it out, a sentence that
        says so: a change settled in direction may still be far from the post's size, and an
        open one may have ruled that size out."""
        post, low, high = self.comparison.post_pct, self.pct_low, self.pct_high
        if post is None or self.verdict not in (REPRODUCED, INCONCLUSIVE) or not low < high:  # False for NaN
            return ""  # an interval of no width (every question alike) rules no size out
        interval = f"[{low:+.1f}, {high:+.1f}]"
        if self.comparison.post_size == "beyond":
            short = high < post if post > 0 else low > post
            return f"this run's interval {interval} stops short of the post's {post:+g}%" if short else ""
        return "" if low <= post <= high else f"the post's {post:+g}% is outside this run's interval {interval}"


@dataclass(frozen=True)
class FindingResult:
    """A finding's verdict over its comparisons, with the sentence that goes with it, and for an
    inconclusive one the questions that would settle every comparison (None where unknown)."""

    finding: Finding
    comparisons: list[ComparisonResult]
    verdict: str
    reason: str = ""
    questions_needed: int | None = None


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


def _settle(comparison: Comparison, n: int, reference_mean: float, sd_nonzero: float, zero_share: float) -> tuple[int | None, str]:
    """For an inconclusive comparison: the questions that would detect the post's size with 80%
    power at this run's spread, and the sentence that says so (or why there is no number)."""
    if comparison.post_pct is None:
        return None, "the post gives no size to plan for"
    if zero_share == 1:
        return None, "every question measured the same in both arms, so this run's spread says nothing of what more would show"
    if not math.isfinite(sd_nonzero):
        return None, "the spread of this run's differences is unknown (fewer than 2 questions differ)"
    if not (math.isfinite(reference_mean) and reference_mean > 0):
        return None, "the reference level is not above 0, so the post's % has no size here"
    target = abs(comparison.post_pct) / 100.0 * reference_mean
    needed = questions_needed(sd_nonzero, target, 1, zero_share)
    size = f"the post's {comparison.post_pct:+g}%"
    if needed is None:
        return None, f"no number of questions up to {MAX_QUESTIONS:,} would detect {size} at this run's spread"
    if needed <= n:
        return needed, f"{n} questions had 80% power for {size}, and the change found is too small to tell from 0"
    return needed, f"{needed} questions would detect {size} with 80% power at this run's spread (this run: {n})"


def compare(
    run: RunValues, comparison: Comparison, models: tuple[str, ...], confidence: float = 0.95, n_permutations: int = 10000, seed: int = 0
) -> ComparisonResult:
    """One comparison on the models given (one, or larger and smaller for a gap). It settles
    the way the post says, or the other, when its interval excludes 0 and the paired sign-flip
    test agrees at the same level (see the module's docstring)."""
    label = _label(comparison, models)
    if comparison.measure in run.missing:
        return ComparisonResult(comparison, label, NOT_TESTED, run.missing[comparison.measure])
    reference = _cell_values(run, comparison, models, comparison.reference)
    arm = _cell_values(run, comparison, models, comparison.arm)
    for found in (reference, arm):
        if isinstance(found, str):
            return ComparisonResult(comparison, label, NOT_TESTED, found)
    change = paired_change(reference, arm, confidence)
    if change.n == 0:
        return ComparisonResult(comparison, label, NOT_TESTED, "no question measured in both arms")
    reference_values, arm_values = paired_arrays(reference, arm)
    spread = difference_spread(arm_values - reference_values)
    alpha = 1.0 - confidence
    detectable = detectable_difference(spread.sd_nonzero, change.n, 1, spread.zero_share, DEFAULT_POWER, alpha)
    relative = comparison.model != GAP_ROLE and change.base_mean >= PCT_MIN_BASE
    pct = (change.pct, change.pct_low, change.pct_high) if relative else (math.nan,) * 3
    sign = 1.0 if comparison.direction == "up" else -1.0
    excludes_zero = change.diff_low > 0 or change.diff_high < 0  # False for NaN
    permutation_p = paired_tests(reference_values, arm_values, n_permutations, seed).permutation_p
    needed, reason = None, ""
    if excludes_zero and permutation_p < alpha:
        verdict = REPRODUCED if sign * change.diff > 0 else CONTRADICTED
    else:
        verdict = INCONCLUSIVE
        needed, reason = _settle(comparison, change.n, change.base_mean, spread.sd_nonzero, spread.zero_share)
        if excludes_zero:
            reason = (
                f"its interval excludes 0, but the paired sign-flip test does not agree (p = {permutation_p:.3g} on "
                f"{change.n} questions); {reason}"
            )
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
    )


def _size_notes(results: list[ComparisonResult]) -> str:
    """Each comparison's size note, named by its label when the finding has several."""
    notes = [(result.label, result.size_note) for result in results if result.size_note]
    return "; ".join(note if len(results) == 1 else f"{label}: {note}" for label, note in notes)


def _combine(finding: Finding, results: list[ComparisonResult]) -> FindingResult:
    found = _combine_verdicts(finding, results)
    notes = _size_notes(results) if found.verdict in (REPRODUCED, INCONCLUSIVE) else ""
    if not notes:
        return found
    # a reproduced finding has no reason of its own: its direction held, its size did not
    lead = "in direction" if found.verdict == REPRODUCED else found.reason
    reason = f"{lead}; {notes}" if lead else notes
    return FindingResult(finding, results, found.verdict, reason, found.questions_needed)


def _combine_verdicts(finding: Finding, results: list[ComparisonResult]) -> FindingResult:
    verdicts = [result.verdict for result in results]
    if CONTRADICTED in verdicts:
        against = [f"{result.label} went the other way" for result in results if result.verdict == CONTRADICTED]
        return FindingResult(finding, results, CONTRADICTED, "; ".join(against))
    if all(verdict == REPRODUCED for verdict in verdicts):
        return FindingResult(finding, results, REPRODUCED)
    untested = [result for result in results if result.verdict == NOT_TESTED]
    if untested:
        reasons = dict.fromkeys(result.reason for result in untested)
        return FindingResult(finding, results, NOT_TESTED, "; ".join(reasons))
    open_ = [result for result in results if result.verdict == INCONCLUSIVE]
    numbers = [result.questions_needed for result in open_ if result.questions_needed is not None]
    needed = max(numbers) if len(numbers) == len(open_) else None
    if len(open_) == 1:  # named when the finding has others, which are settled
        reason = open_[0].reason if len(results) == 1 else f"{open_[0].label}: {open_[0].reason}"
        return FindingResult(finding, results, INCONCLUSIVE, reason, needed)
    if needed is not None:
        reason = f"{needed} questions would detect the post's sizes in every open comparison with 80% power at this run's spread"
        if needed <= min(result.n for result in open_):
            reason = "this run had 80% power for the post's sizes, and the changes found are too small to tell from 0"
        return FindingResult(finding, results, INCONCLUSIVE, reason, needed)
    by_reason: dict[str, list[str]] = {}
    for result in open_:
        by_reason.setdefault(result.reason, []).append(result.label)
    reasons = [f"{' and '.join(labels)}: {reason}" for reason, labels in by_reason.items()]
    return FindingResult(finding, results, INCONCLUSIVE, "; ".join(reasons))


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
        found.append(_combine(finding, results))
    return found


def agreement(verdicts: Sequence[str]) -> str:
    """Whether several runs' verdicts on one finding agree: 'yes' (saying so when none settles
    it), 'no', or 'cannot tell' when a run could not test it."""
    if NOT_TESTED in verdicts:
        return "cannot tell: not tested in every run"
    if len(set(verdicts)) > 1:
        return "no"
    return f"yes ({'both' if len(verdicts) == 2 else 'all'} inconclusive)" if verdicts[0] == INCONCLUSIVE else "yes"

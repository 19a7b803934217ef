"""Two runs on one scale: does the local mirror of a study tell the same story as the cloud run?

Two questions, each answered from per-question values and nothing else (pure functions):

1. Is one judge, hosted twice, one scale? (`host_agreement`) The same judge (same prompt and
   settings) on two hosts (Bedrock and vLLM, 4-bit and 16-bit) scores the same answers: their
   rank correlation (Spearman) and the mean difference of their scores with its paired t
   interval. They are taken as one scale when the correlation is at least HOST_MIN_SPEARMAN and
   the interval of the mean difference lies inside +/- HOST_MAX_OFFSET points, over at least
   HOST_MIN_ANSWERS answers; otherwise they are kept apart, and why is said.

2. Does each of a published study's findings change alike in both runs? (`mirror_findings`)
   For each comparison of a finding (an arm against its reference arm, on a model role), each
   run's change per question, on the same questions: in points of the shared panel's score,
   or, for latency and tokens (whose units mean different things on different hardware and
   tokenizers), as the log of the arm's value over the reference's. Then the difference of the
   two changes, paired by question (first run's change minus second's), with its paired t
   interval and the paired sign-flip test:
   - "the mirror disagrees": the interval excludes 0 and the sign-flip test agrees (p < 5%);
   - "the mirror agrees": the interval lies inside +/- the margin (MARGIN_POINTS for scores;
     for ratios, a factor of MARGIN_RATIO either way): an equivalence test at 5%;
   - "cannot tell at this power": neither, with the questions that would bound the interval
     inside the margin if the difference stayed at its estimate;
   - "not tested": a run lacks what the comparison needs.
   Levels are never compared: the answer models differ between the paths by design, so only
   changes within each run, on the same questions, can be set side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from localnova.evaluate.reproduction import NOT_TESTED, RunValues, role_models
from localnova.evaluate.statistics import paired_tests
from localnova.findings import GAP_ROLE, Comparison, Finding, FindingsFile

AGREES, DISAGREES, CANNOT_TELL = "the mirror agrees", "the mirror disagrees", "cannot tell at this power"

HOST_MIN_SPEARMAN = 0.8
HOST_MAX_OFFSET = 1.0  # points of the 0-10 scale
HOST_MIN_ANSWERS = 10

MARGIN_POINTS = 1.0  # points of the shared panel's 0-10 scale
MARGIN_RATIO = 1.25  # a factor either way between the two runs' ratios (arm over reference)
RATIO_MEASURES = ("latency", "total_tokens")
_Z_95 = 1.959964


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and its t interval (NaN bounds with fewer than 2 values)."""
    from scipy.stats import t

    mean = float(values.mean()) if values.size else math.nan
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf((1.0 + confidence) / 2.0, values.size - 1)) * float(np.std(values, ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class HostAgreement:
    """Two hosts of one judge on the same n answers: Spearman's rho, the mean of (second host's
    score - first's) with its 95% interval, and whether that makes them one scale, with why."""

    n: int
    spearman: float
    mean_diff: float
    diff_low: float
    diff_high: float
    one_scale: bool
    reason: str


def host_agreement(first: Mapping[object, float], second: Mapping[object, float], confidence: float = 0.95) -> HostAgreement:
    """Agreement of two hosts' scores of the same answers (keyed alike in both maps)."""
    from scipy.stats import spearmanr

    shared = sorted(set(first) & set(second), key=str)
    a = np.array([first[key] for key in shared], dtype=float)
    b = np.array([second[key] for key in shared], dtype=float)
    mean, low, high = _t_interval(b - a, confidence)
    if len(shared) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = math.nan
    else:
        rho = float(spearmanr(a, b).statistic)
    if len(shared) < HOST_MIN_ANSWERS:
        return HostAgreement(
            len(shared), rho, mean, low, high, False, f"{len(shared)} answers scored by both, fewer than {HOST_MIN_ANSWERS}"
        )
    problems = []
    if not rho >= HOST_MIN_SPEARMAN:  # NaN fails too
        problems.append(f"rank correlation {rho:.2f} below {HOST_MIN_SPEARMAN:g}")
    if not (-HOST_MAX_OFFSET <= low and high <= HOST_MAX_OFFSET):
        problems.append(f"mean difference {mean:+.2f} [{low:+.2f}, {high:+.2f}] not inside +/-{HOST_MAX_OFFSET:g} point")
    if problems:
        return HostAgreement(len(shared), rho, mean, low, high, False, "; ".join(problems))
    return HostAgreement(len(shared), rho, mean, low, high, True, "")


@dataclass(frozen=True)
class EffectDifference:
    """One comparison on one pair of models (the first run's, the second's): each run's change
    of the arm against the reference over the same n questions, and the first's minus the
    second's. In points (`ratio` False) or, for ratio measures, in % (100 x (ratio - 1) of the
    geometric-mean ratio over questions, and of the ratio of the two runs' ratios)."""

    comparison: Comparison
    label: str
    verdict: str
    reason: str = ""
    n: int = 0
    ratio: bool = False
    first: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    second: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    diff: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    permutation_p: float = math.nan
    questions_needed: int | None = None


@dataclass(frozen=True)
class FindingMirror:
    finding: Finding
    results: list[EffectDifference] = field(default_factory=list)


def _effects(run: RunValues, comparison: Comparison, models: tuple[str, ...]) -> dict[str, float] | str:
    """Per question, the run's change of the arm against the reference on these models (a gap
    between two models for the gap role): arm - reference in points, or log(arm / reference)
    for a ratio measure; a string says what is missing."""
    if comparison.measure in run.missing:
        return run.missing[comparison.measure]
    cells = run.values[comparison.measure]
    per_arm = []
    for arm in (comparison.reference, comparison.arm):
        found = []
        for model in models:
            if (model, arm) not in cells:
                return f"{model} has no {arm} arm" + (" timed by the latency probe" if comparison.measure == "latency" else "")
            found.append(cells[(model, arm)])
        if len(found) == 1:
            per_arm.append(found[0])
        else:
            larger, smaller = found
            per_arm.append({q: larger[q] - smaller[q] for q in set(larger) & set(smaller)})
    reference, arm = per_arm
    questions = set(reference) & set(arm)
    if comparison.measure in RATIO_MEASURES:
        return {q: math.log(arm[q] / reference[q]) for q in questions if reference[q] > 0 and arm[q] > 0}
    return {q: arm[q] - reference[q] for q in questions}


def _pairs_of_models(
    comparison: Comparison, first: RunValues, second: RunValues, labels: tuple[str, str]
) -> list[tuple[tuple[str, ...], tuple[str, ...]]] | str:
    """Which model of each run plays the comparison's role: the same role in both; for `each`,
    the runs' models paired from the largest down (a run with one model sets it beside the
    other's largest)."""
    picked = [role_models(comparison.model, run.models) for run in (first, second)]
    for found, label in zip(picked, labels, strict=True):
        if isinstance(found, str):
            return f"{label}: {found}"
    one, other = picked
    if comparison.model == "each":
        # from the largest down: the run with fewer models leaves the other's smallest unpaired
        return list(zip(reversed(one), reversed(other), strict=False))[::-1]  # type: ignore[arg-type]
    return [(one[0], other[0])]  # type: ignore[index]


def _label(comparison: Comparison, first: tuple[str, ...], second: tuple[str, ...]) -> str:
    def who(models: tuple[str, ...]) -> str:
        return f"{models[0]} minus {models[1]}" if comparison.model == GAP_ROLE else models[0]

    return f"{comparison.arm} vs {comparison.reference}, {who(first)} | {who(second)}"


def _as_shown(values: tuple[float, float, float], ratio: bool) -> tuple[float, float, float]:
    """Log ratios as % changes; points as they are."""
    return tuple(100.0 * (math.exp(v) - 1.0) if ratio and math.isfinite(v) else v for v in values)  # type: ignore[return-value]


def compare_effects(
    comparison: Comparison,
    first_models: tuple[str, ...],
    second_models: tuple[str, ...],
    first: RunValues,
    second: RunValues,
    questions: set[str] | None = None,
    confidence: float = 0.95,
    n_permutations: int = 10000,
    seed: int = 0,
    labels: tuple[str, str] = ("first run", "second run"),
) -> EffectDifference:
    """One comparison on one pair of models: both runs' changes on the questions both have
    (within `questions` when given), their difference and the verdict (the module's rules);
    `labels` name the runs in what it says is missing."""
    label = _label(comparison, first_models, second_models)
    ratio = comparison.measure in RATIO_MEASURES
    if ratio and comparison.model == GAP_ROLE:
        return EffectDifference(comparison, label, NOT_TESTED, "a gap between two models has no ratio", ratio=True)
    effects = [_effects(first, comparison, first_models), _effects(second, comparison, second_models)]
    for run_effects, run_label in zip(effects, labels, strict=True):
        if isinstance(run_effects, str):
            return EffectDifference(comparison, label, NOT_TESTED, f"{run_label}: {run_effects}", ratio=ratio)
    one, other = effects
    shared = sorted(set(one) & set(other) & (questions if questions is not None else set(one)))  # type: ignore[arg-type]
    if len(shared) < 2:
        return EffectDifference(comparison, label, NOT_TESTED, f"{len(shared)} question(s) measured in both runs", len(shared), ratio)
    a = np.array([one[q] for q in shared], dtype=float)  # type: ignore[index]
    b = np.array([other[q] for q in shared], dtype=float)  # type: ignore[index]
    diff = _t_interval(a - b, confidence)
    p = paired_tests(b, a, n_permutations, seed).permutation_p
    margin = math.log(MARGIN_RATIO) if ratio else MARGIN_POINTS
    mean, low, high = diff
    needed, reason = None, ""
    if (low > 0 or high < 0) and p < 1.0 - confidence:
        verdict = DISAGREES
    elif -margin <= low and high <= margin:
        verdict = AGREES
    else:
        verdict = CANNOT_TELL
        sd = float(np.std(a - b, ddof=1))
        room = margin - abs(mean)
        shown_margin = f"a factor of {MARGIN_RATIO:g}" if ratio else f"{MARGIN_POINTS:g} point"
        if room <= 0 or sd == 0:
            reason = f"the difference found is at least the margin ({shown_margin})"
        else:
            needed = math.ceil((_Z_95 * sd / room) ** 2)
            reason = f"about {needed} questions would bound the difference within {shown_margin} if it stayed at its estimate"
        if low > 0 or high < 0:
            reason = f"its interval excludes 0, but the sign-flip test does not agree (p = {p:.3g}); {reason}"
    return EffectDifference(
        comparison,
        label,
        verdict,
        reason,
        len(shared),
        ratio,
        _as_shown(_t_interval(a, confidence), ratio),
        _as_shown(_t_interval(b, confidence), ratio),
        _as_shown(diff, ratio),
        p,
        needed,
    )


def mirror_findings(
    findings: FindingsFile,
    first: RunValues,
    second: RunValues,
    questions: set[str] | None = None,
    confidence: float = 0.95,
    n_permutations: int = 10000,
    seed: int = 0,
    labels: tuple[str, str] = ("first run", "second run"),
) -> list[FindingMirror]:
    """Every finding's comparisons, each run's change side by side and their difference."""
    found = []
    for finding in findings.findings:
        results = []
        for comparison in finding.comparisons:
            pairs = _pairs_of_models(comparison, first, second, labels)
            if isinstance(pairs, str):
                results.append(EffectDifference(comparison, f"{comparison.arm} vs {comparison.reference}", NOT_TESTED, pairs))
                continue
            for one, other in pairs:
                results.append(compare_effects(comparison, one, other, first, second, questions, confidence, n_permutations, seed, labels))
        found.append(FindingMirror(finding, results))
    return found


def finding_verdict(results: Sequence[EffectDifference]) -> str:
    """A finding's verdict over its comparisons: disagrees if any does, agrees only if all do,
    not tested if any is not, else cannot tell."""
    verdicts = [result.verdict for result in results]
    if DISAGREES in verdicts:
        return DISAGREES
    if verdicts and all(verdict == AGREES for verdict in verdicts):
        return AGREES
    return NOT_TESTED if NOT_TESTED in verdicts else CANNOT_TELL

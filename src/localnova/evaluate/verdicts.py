"""A published finding's verdict from its comparisons, each at the level it claims.

A finding is tested by one or more paired comparisons (evaluate/reproduction.py computes each:
its change, interval, p-value and power). Their verdicts combine so that a finding keeps the
5% level of a single test, which "contradicted when any comparison is" did not (7.7% false
"contradicted" verdicts on null data for the four latency comparisons, issue 27):

- contradicted: some comparison goes against the post's direction with a p below 5% after
  Holm's adjustment over the finding's tested comparisons (so at most 5% of null studies);
- reproduced: every comparison goes the post's way with p below 5% (an intersection of tests
  needs no adjustment: each alone already holds false "reproduced" under 2.5%);
- not tested: some comparison could not be computed (an arm, the probe, a second model, or the
  reading's premise is missing);
- the post's size is ruled out: some comparison's % interval leaves out the post's figure (a
  t test of the change against that figure, Holm-adjusted over the finding's sized
  comparisons) where the run had 80% power for a change of that size: the run could have seen
  it, and did not;
- inconclusive otherwise, with the questions that would detect the post's size.

A comparison's p is the larger of its t interval's and its sign-flip test's (both must clear
the level: the power code models the sign-flip test, and a t interval alone leans on normal
differences). `scripts/calibrate_stats.py` checks the false verdict rates on simulated studies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from localnova.evaluate.statistics import holm_adjust
from localnova.findings import Comparison, Finding

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
RULED_OUT = "the post's size is ruled out"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"

UNITS = {"panel_score": "points", "latency": "ms", "total_tokens": "tokens"}


@dataclass(frozen=True)
class ComparisonResult:
    """One comparison on one model (or one gap between two): the change of the arm against the
    reference over n paired questions (in n_clusters source documents, whose clustering widens
    the variance by design_effect), in the measure's units (diff) and in % of the reference
    level (pct: NaN for a gap or below PCT_MIN_BASE), each with its interval; p, the comparison's
    two-sided p-value (the larger of the t interval's and the sign-flip test's); size_p, the
    p-value of the post's size against the % interval (NaN where the post gives none); what this
    run could detect, whether that covers the post's size (power_for_size); the verdict, with
    `reason` (why it was not tested, or what would settle it) and, when inconclusive, the
    questions that would detect the post's size (None where unknown)."""

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
    p: float = math.nan
    size_p: float = math.nan
    power_for_size: bool = False
    n_clusters: int = 0
    design_effect: float = 1.0

    @property
    def unit(self) -> str:
        return UNITS[self.comparison.measure]

    @property
    def against(self) -> bool:
        """Whether the change goes the other way from the post's."""
        return (self.diff < 0) if self.comparison.direction == "up" else (self.diff > 0)

    @property
    def size_note(self) -> str:
        """Where the post gives a size and this run's % interval leaves it out, a sentence that
        says so: a change settled in direction may still be far from the post's size, and an
        open one may have ruled that size out."""
        post, low, high = self.comparison.post_pct, self.pct_low, self.pct_high
        if post is None or self.verdict not in (REPRODUCED, INCONCLUSIVE, RULED_OUT) or not low < high:  # False for NaN
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


def _size_notes(results: list[ComparisonResult]) -> str:
    """Each comparison's size note, named by its label when the finding has several."""
    notes = [(result.label, result.size_note) for result in results if result.size_note]
    return "; ".join(note if len(results) == 1 else f"{label}: {note}" for label, note in notes)


def combine(finding: Finding, results: list[ComparisonResult], alpha: float = 0.05) -> FindingResult:
    """The finding's verdict from its comparisons' (see the module docstring), each comparison's
    own verdict adjusted to what the finding's combination lets it say."""
    results = _adjusted_contradictions(results, alpha)
    if any(result.verdict == CONTRADICTED for result in results):
        against = [f"{result.label} went the other way" for result in results if result.verdict == CONTRADICTED]
        return FindingResult(finding, results, CONTRADICTED, "; ".join(against))
    if all(result.verdict == REPRODUCED for result in results):
        notes = _size_notes(results)
        # a reproduced finding has no reason of its own: its direction held, its size did not
        return FindingResult(finding, results, REPRODUCED, f"in direction; {notes}" if notes else "")
    untested = [result for result in results if result.verdict == NOT_TESTED]
    if untested:
        reasons = dict.fromkeys(result.reason for result in untested)
        return FindingResult(finding, results, NOT_TESTED, "; ".join(reasons))
    adjusted = holm_adjust([result.size_p for result in results])
    results = _sizes_ruled_out(results, adjusted, alpha)
    ruled = [result for result in results if result.verdict == RULED_OUT]
    if ruled:
        named = [result.size_note if len(results) == 1 else f"{result.label}: {result.size_note}" for result in ruled]
        power = "with 80% power for that size" if len(ruled) == 1 else "each with 80% power for its size"
        return FindingResult(finding, results, RULED_OUT, f"{'; '.join(named)}, {power}")
    found = _inconclusive(finding, results)
    notes = _open_size_notes(results, adjusted, alpha)
    if not notes:
        return found
    reason = f"{found.reason}; {notes}" if found.reason else notes
    return FindingResult(finding, results, INCONCLUSIVE, reason, found.questions_needed)


def _adjusted_contradictions(results: list[ComparisonResult], alpha: float) -> list[ComparisonResult]:
    """A comparison that went the other way stays contradicted only if its p clears the level
    after Holm over the finding's tested comparisons; the others become inconclusive, saying so."""
    if len(results) < 2:
        return results
    adjusted = holm_adjust([result.p for result in results])
    tested = sum(math.isfinite(result.p) for result in results)
    out = []
    for result, p in zip(results, adjusted, strict=True):
        if result.verdict == CONTRADICTED and not p < alpha:
            reason = (
                f"it went the other way (p = {result.p:.3g}), but not at {alpha:.0%} once Holm adjusts over the finding's "
                f"{tested} comparisons (p = {p:.3g})"
            )
            result = dataclasses.replace(result, verdict=INCONCLUSIVE, reason=reason)
        out.append(result)
    return out


def _sizes_ruled_out(results: list[ComparisonResult], adjusted: list[float], alpha: float) -> list[ComparisonResult]:
    """Comparisons not settled in direction whose % interval leaves the post's size out at the
    Holm-adjusted level (`adjusted`: the size p-values over the finding's sized comparisons),
    with 80% power for that size."""
    return [
        dataclasses.replace(result, verdict=RULED_OUT)
        if result.verdict == INCONCLUSIVE and p < alpha and result.power_for_size and result.size_note
        else result
        for result, p in zip(results, adjusted, strict=True)
    ]


def _open_size_notes(results: list[ComparisonResult], adjusted: list[float], alpha: float) -> str:
    """The size notes of an inconclusive finding, each open comparison's saying why its size is
    not ruled out although its interval leaves it out."""
    notes = []
    for result, p in zip(results, adjusted, strict=True):
        note = result.size_note
        if not note:
            continue
        if result.verdict == INCONCLUSIVE and not result.power_for_size:
            note += ", but this run had no 80% power for that size"
        elif result.verdict == INCONCLUSIVE and not p < alpha:
            note += f", but not at {alpha:.0%} once Holm adjusts over the finding's sized comparisons (p = {p:.3g})"
        notes.append(note if len(results) == 1 else f"{result.label}: {note}")
    return "; ".join(notes)


def _inconclusive(finding: Finding, results: list[ComparisonResult]) -> FindingResult:
    open_ = [result for result in results if result.verdict == INCONCLUSIVE]
    numbers = [result.questions_needed for result in open_ if result.questions_needed is not None]
    needed = max(numbers) if len(numbers) == len(open_) and open_ else None
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


def agreement(verdicts: Sequence[str]) -> str:
    """Whether several runs' verdicts on one finding agree: 'yes' (saying so when none settles
    it), 'no', or 'cannot tell' when a run could not test it."""
    if NOT_TESTED in verdicts:
        return "cannot tell: not tested in every run"
    if len(set(verdicts)) > 1:
        return "no"
    return f"yes ({'both' if len(verdicts) == 2 else 'all'} inconclusive)" if verdicts[0] == INCONCLUSIVE else "yes"

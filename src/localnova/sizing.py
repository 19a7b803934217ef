"""Sizing a study by its power, before it runs (`localnova run CONFIG --plan | --dry-run`):
the smallest change each comparison can detect with the questions the study has, the questions
a target change needs (`--detect 10%`) and, on Bedrock, what those questions would cost.

The spread of the per-question differences comes from an earlier run (`--pilot RUN`: its own
headline panel, comparison by comparison) or from `power.DEFAULT_VARIANCE`, stated as such.
"""

from __future__ import annotations

import math
import re
from itertools import combinations

from localnova.bedrock_study.dry_run import dry_run
from localnova.config import StudyConfig
from localnova.costs import HOSTING_CHOICES
from localnova.errors import UserError
from localnova.evaluate.power import (
    DEFAULT_ALPHA,
    DEFAULT_POWER,
    DEFAULT_VARIANCE,
    Spread,
    VarianceSource,
    detectable_difference,
    power_ceiling,
    questions_needed,
)
from localnova.evaluate.statistics import PCT_MIN_BASE, ordered_arms
from localnova.report.collect import collect_run, parse_run_spec
from localnova.report.summarize import summarize_run


def parse_detect(text: str) -> float:
    """'10%' or '10' -> 10.0 (a % of the base level); anything else is a one-line error."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--detect {text!r}: give the change to detect as a percentage of the base level, e.g. --detect 10%")
    return float(match.group(1))


def _pooled(spreads: list[Spread]) -> Spread:
    """Several models' spreads of one comparison as one: the root mean square of the SDs, the
    mean zero share, base level, design effect and questions per document."""
    return Spread(
        math.sqrt(sum(s.sd_nonzero**2 for s in spreads) / len(spreads)),
        sum(s.zero_share for s in spreads) / len(spreads),
        sum(s.base_level for s in spreads) / len(spreads),
        sum(s.design_effect for s in spreads) / len(spreads),
        sum(s.questions_per_cluster for s in spreads) / len(spreads),
    )


def pilot_variance(spec: str) -> VarianceSource:
    """The spreads an earlier run measured on its headline panel: per arm pair, the SD of the
    per-question differences that are not zero, the share that are, the first arm's level, and
    where its questions cluster by source document, the design effect and questions per
    document (pooled over the run's models)."""
    run = collect_run(*parse_run_spec(spec))
    summary = summarize_run(run)
    levels = {(cell.model, cell.arm): cell.mean for cell in summary.panel_cells}
    measured: dict[tuple[str, str], list[Spread]] = {}
    as_run: list[Spread] = []  # each comparison once, as the pilot ran it: the default for others
    for c in summary.comparisons:
        if not (math.isfinite(c.sd_nonzero) and math.isfinite(c.zero_share)):
            continue
        # either arm may come first in the study being planned; the first arm's level is the base
        for first, second in ((c.arm_a, c.arm_b), (c.arm_b, c.arm_a)):
            level = levels.get((c.model, first), math.nan)
            if math.isfinite(level):
                per_document = c.n / c.n_clusters if 0 < c.n_clusters < c.n else 1.0
                spread = Spread(c.sd_nonzero, c.zero_share, level, c.design_effect, per_document)
                measured.setdefault((first, second), []).append(spread)
                if first == c.arm_a:
                    as_run.append(spread)
    if not as_run:
        raise UserError(f"--pilot {spec}: run {run.run_id} has no comparison of two arms on its headline panel to measure a spread from")
    by_comparison = {pair: _pooled(spreads) for pair, spreads in measured.items()}
    default = _pooled(as_run)
    n_questions = max((c.n for c in summary.comparisons), default=0)
    judges = ", ".join(summary.settings["headline_judges"])
    source = f"pilot run {run.run_id} ({n_questions} paired questions, headline judges {judges})"
    return VarianceSource(source, default, by_comparison)


def _pct(points: float, base_level: float) -> str:
    return f" ({100 * points / base_level:.0f}% of a base of {base_level:.2f})" if base_level >= PCT_MIN_BASE else ""


def _clusters(spread: Spread, n_questions: int) -> int | None:
    """The documents `n_questions` come from at the spread's questions per document (None: independent)."""
    return max(1, round(n_questions / spread.questions_per_cluster)) if spread.questions_per_cluster > 1 else None


def _detectable_text(spread: Spread, n_questions: int, n_comparisons: int) -> str:
    clusters = _clusters(spread, n_questions)
    detectable = detectable_difference(
        spread.sd_nonzero, n_questions, n_comparisons, spread.zero_share, design_effect=spread.design_effect, n_clusters=clusters
    )
    if detectable == math.inf:
        ceiling = power_ceiling(n_questions, n_comparisons, spread.zero_share, n_clusters=clusters)
        if clusters is not None and ceiling == 0:
            return (
                f"detects no change: at {spread.questions_per_cluster:.1f} questions per document they come from {clusters} "
                f"documents, whose sign patterns give no p below 2 / 2**{clusters} = {2 / 2**clusters:.3g}, above the level"
            )
        return (
            f"detects no change with {DEFAULT_POWER:.0%} power: however large the change, the test clears its level only when "
            f"enough questions differ, which happens {ceiling:.0%} of the time"
        )
    return f"detects {detectable:.2f} points{_pct(detectable, spread.base_level)}"


def power_lines(config: StudyConfig, n_questions: int | None, variance: VarianceSource, detect_pct: float | None = None) -> list[str]:
    """What each comparison of the study can detect with `n_questions`, and with `detect_pct`
    the questions each (and all) need to detect that % of its base level; plus, for a study with
    Bedrock models, what that many questions would cost (the dry run's estimate)."""
    pairs = list(combinations(ordered_arms(config.arms), 2))
    n_comparisons = len(config.models) * len(pairs)
    if not pairs:
        return ["Power: one arm, so nothing is compared."]
    level = DEFAULT_ALPHA / n_comparisons
    lines = [
        f"Power ({DEFAULT_POWER:.0%}, two-sided; {n_comparisons} comparisons are Holm-adjusted together, so each must clear "
        f"alpha {DEFAULT_ALPHA:g} / {n_comparisons} = {level:.4f}, Holm's strictest step):",
        f"  spread of the per-question differences: {variance.source}",
    ]
    needed_all = []
    # one line for all comparisons when they share one spread (no pilot), one each otherwise
    named = [(f"each of the {len(pairs)} comparisons per model", pairs[0])] if not variance.by_comparison else None
    for name, (arm_a, arm_b) in named or [(f"{b} vs {a}", (a, b)) for a, b in pairs]:
        spread = variance.spread(arm_a, arm_b)
        clustered = (
            f", design effect {spread.design_effect:.2f} at {spread.questions_per_cluster:.1f} questions per document"
            if spread.questions_per_cluster > 1
            else ""
        )
        line = f"  {name} (SD {spread.sd_nonzero:.2f} points, {spread.zero_share:.0%} alike{clustered}): "
        if n_questions is None:
            line += "detectable change unknown until the eval set exists"
        else:
            line += f"with {n_questions} questions " + _detectable_text(spread, n_questions, n_comparisons)
        if detect_pct is not None:
            target = detect_pct / 100 * spread.base_level
            needed = questions_needed(
                spread.sd_nonzero,
                target,
                n_comparisons,
                spread.zero_share,
                design_effect=spread.design_effect,
                questions_per_cluster=spread.questions_per_cluster,
            )
            needed_all.append(needed)
            line += f"; {detect_pct:g}% needs {needed if needed is not None else 'more than a million'} questions"
        lines.append(line)
    if detect_pct is not None:
        if any(needed is None for needed in needed_all):
            lines.append(f"  {detect_pct:g}% in every comparison is out of reach")
        else:
            most = max(needed_all)
            lines.append(f"  {detect_pct:g}% in every comparison needs {most} questions")
            lines += bedrock_cost_lines(config, most)
    return lines


def bedrock_cost_lines(config: StudyConfig, n_questions: int) -> list[str]:
    """For a study with Bedrock models: the dry run's cost estimate of the study at
    `n_questions` questions (its eval set repeated or cut to that many), per hosting choice."""
    if not config.uses_bedrock or config.bedrock is None:
        return []
    costs = dry_run(config, n_questions=n_questions, out=None).costs
    totals = ", ".join(f"${costs.total(choice):,.2f} hosted {choice.replace('_', '-')}" for choice in HOSTING_CHOICES)
    complete = "" if costs.complete() else " (some lines have no price and are left out)"
    return [f"  on Bedrock, {n_questions} questions cost about {totals}{complete} (the dry run's estimate)"]


def variance_for(pilot: str | None) -> VarianceSource:
    return pilot_variance(pilot) if pilot else DEFAULT_VARIANCE

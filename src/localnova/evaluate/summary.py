"""The study's numbers in one object: scores with intervals, tests, agreement, cost.

`summarize` turns the store's score rows and generation rows into a `StudySummary`, which
the report renders and `to_dict()` serialises to JSON (NaN becomes null). Everything here is
a pure function of its inputs and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from localnova.config import BASE_ARM
from localnova.evaluate.agreement import JudgeAgreement, judge_agreement
from localnova.evaluate.controls import JudgeControls
from localnova.evaluate.latency_probe import ProbeCell, probe_summary
from localnova.evaluate.panel import PANEL_RULE, cell_scores, level_ci, paired_scores
from localnova.evaluate.statistics import (
    ArmComparison,
    bootstrap_ci,
    compare_arms,
    generation_rows_from,
    ordered_arms,
    pct_change_vs_base,
    score_rows_from,
)
from localnova.files import json_safe

LATENCY_TOKEN_MEASURES = (
    "latency_ms_median",
    "latency_ms_p90",
    "input_tokens_mean",
    "output_tokens_mean",
    "total_tokens_mean",
)


@dataclass(frozen=True)
class JudgeCell:
    """One judge's mean score for one model x arm, with its bootstrap interval."""

    model: str
    arm: str
    judge: str
    n_judgments: int
    n_failed: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class PanelCell:
    """Headline panel level for one model x arm, and its % change against the model's base arm.

    n_questions counts answers that at least one headline judge scored. The level is the mean
    over judges of each judge's mean (`panel.level_ci`); the % change is over the questions
    scored in both arms, each on the judges that scored both answers (`panel.paired_scores`).
    It is NaN for the base arm itself, when there is no base arm, and everywhere when the
    headline panel is empty.
    """

    model: str
    arm: str
    n_questions: int
    mean: float
    low: float
    high: float
    pct_vs_base: float
    pct_vs_base_low: float
    pct_vs_base_high: float


@dataclass(frozen=True)
class LatencyTokenCell:
    """Latency and tokens of one model x arm; pct_vs_base maps each measure to its % change."""

    model: str
    arm: str
    n_generations: int
    latency_ms_median: float
    latency_ms_p90: float
    input_tokens_mean: float
    output_tokens_mean: float
    total_tokens_mean: float
    pct_vs_base: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeFailures:
    """How many of a judge's judgments failed to parse (never scored as 0)."""

    judge: str
    n_judgments: int
    n_failed: int
    failure_rate: float


@dataclass(frozen=True)
class StudySummary:
    """Everything the report shows about scores, tests, agreement, latency and tokens."""

    judge_cells: list[JudgeCell]
    panel_cells: list[PanelCell]
    comparisons: list[ArmComparison]
    agreement: JudgeAgreement | None
    latency_tokens: list[LatencyTokenCell]
    failures_by_judge: list[JudgeFailures]
    settings: dict[str, Any]
    controls: list[JudgeControls] = field(default_factory=list)  # empty when the study ran without controls
    # The latency comparison: the interleaved probe's cells (evaluate.latency_probe); empty
    # when the run had no probe. latency_tokens' times are the batched run's: throughput.
    latency_probe: list[ProbeCell] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for json.dumps: NaN and infinities become None."""
        return json_safe(asdict(self))


def _pct(base: float, value: float) -> float:
    if not (math.isfinite(base) and math.isfinite(value)) or base == 0:
        return math.nan
    return 100.0 * (value - base) / base


def latency_token_summary(generation_rows: Iterable[Any], base_arm: str = BASE_ARM) -> list[LatencyTokenCell]:
    """Per model x arm: latency median and p90 (ms), mean input/output/total tokens.

    The p90 is numpy's linear-interpolation percentile. Each measure also gets its % change
    against the same measure of `base_arm` in the same model (empty for the base arm itself
    and for models without a base arm; NaN when the base value is 0). Cells follow the order
    of first appearance, base first within each model.
    """
    rows = generation_rows_from(generation_rows)
    by_cell: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        by_cell.setdefault((row.model, row.arm), []).append(row)
    measures: dict[tuple[str, str], dict[str, float]] = {}
    for cell, cell_rows in by_cell.items():
        latency_ms = np.array([r.latency_ms for r in cell_rows], dtype=float)
        input_tokens = np.array([r.input_tokens for r in cell_rows], dtype=float)
        output_tokens = np.array([r.output_tokens for r in cell_rows], dtype=float)
        measures[cell] = {
            "latency_ms_median": float(np.median(latency_ms)),
            "latency_ms_p90": float(np.percentile(latency_ms, 90)),
            "input_tokens_mean": float(input_tokens.mean()),
            "output_tokens_mean": float(output_tokens.mean()),
            "total_tokens_mean": float((input_tokens + output_tokens).mean()),
        }
    cells: list[LatencyTokenCell] = []
    for model in dict.fromkeys(model for model, _ in by_cell):
        arms = ordered_arms((arm for m, arm in by_cell if m == model), base_arm)
        base = measures.get((model, base_arm))
        for arm in arms:
            values = measures[(model, arm)]
            pct = {name: _pct(base[name], values[name]) for name in LATENCY_TOKEN_MEASURES} if base is not None and arm != base_arm else {}
            cells.append(
                LatencyTokenCell(
                    model=model,
                    arm=arm,
                    n_generations=len(by_cell[(model, arm)]),
                    pct_vs_base=pct,
                    **values,
                )
            )
    return cells


def summarize(
    score_rows: Iterable[Any],
    generation_rows: Iterable[Any] = (),
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    n_permutations: int = 10000,
    base_arm: str = BASE_ARM,
    headline_judges: Sequence[str] | None = None,
    headline_note: str = "",
    controls: Sequence[JudgeControls] = (),
    probe_timings: Iterable[Any] = (),
) -> StudySummary:
    """Summarise a study from its judgments and generations.

    `score_rows` are ScoreRow-like (model, arm, question_id, judge, score; score None is a
    parse failure) for the answers only: judge controls belong elsewhere, since any arm name
    here is treated as an arm. Per model x arm x judge: mean over the answers the judge scored
    with a bootstrap interval over questions. Per model x arm, over the `headline_judges` (all
    judges when None; `evaluate.controls.headline_panel` picks them): the panel level with a
    bootstrap interval, and for non-base arms a % change against base with a paired bootstrap
    interval (see `evaluate.panel` for how failures are kept from moving either). Comparisons
    are all arm pairs within each model on the same pairing, Holm-adjusted across the whole
    family. Every interval and test uses `seed`, so the summary is reproducible.
    `probe_timings` (the latency probe's, `ProbeTiming`-like) give the latency comparison.
    """
    rows = score_rows_from(score_rows)
    cells = list(dict.fromkeys((r.model, r.arm) for r in rows))
    models = list(dict.fromkeys(model for model, _ in cells))
    ordered_cells = [(model, arm) for model in models for arm in ordered_arms((a for m, a in cells if m == model), base_arm)]
    judges = list(dict.fromkeys(r.judge for r in rows))

    judge_scores: dict[tuple[str, str, str], list[float | None]] = {}
    for row in rows:
        judge_scores.setdefault((row.model, row.arm, row.judge), []).append(row.score)
    judge_cells = []
    for model, arm in ordered_cells:
        for judge in judges:
            scores = judge_scores.get((model, arm, judge))
            if scores is None:
                continue
            valid = [s for s in scores if s is not None]
            mean, low, high = bootstrap_ci(valid, n_resamples, seed, confidence)
            judge_cells.append(JudgeCell(model, arm, judge, len(scores), len(scores) - len(valid), mean, low, high))

    headline = judges if headline_judges is None else [judge for judge in judges if judge in set(headline_judges)]
    panel = cell_scores(rows, headline)
    panel_cells = []
    for model, arm in ordered_cells:
        cell = panel.get((model, arm), {})
        mean, low, high = level_ci(cell, n_resamples, seed, confidence)
        pct = (math.nan, math.nan, math.nan)
        if arm != base_arm and (model, base_arm) in panel:
            pct = pct_change_vs_base(*paired_scores(panel[(model, base_arm)], cell), n_resamples, seed, confidence)
        panel_cells.append(PanelCell(model, arm, len(cell), mean, low, high, *pct))

    failures = []
    for judge in judges:
        verdicts = [r.score for r in rows if r.judge == judge]
        n_failed = sum(score is None for score in verdicts)
        failures.append(JudgeFailures(judge, len(verdicts), n_failed, n_failed / len(verdicts)))

    return StudySummary(
        judge_cells=judge_cells,
        panel_cells=panel_cells,
        comparisons=compare_arms({cell: panel.get(cell, {}) for cell in ordered_cells}, base_arm, n_permutations, seed, paired_scores),
        agreement=judge_agreement(rows),
        latency_tokens=latency_token_summary(generation_rows, base_arm),
        failures_by_judge=failures,
        controls=list(controls),
        latency_probe=probe_summary(probe_timings, n_resamples, seed, confidence, base_arm),
        settings={
            "n_resamples": n_resamples,
            "seed": seed,
            "confidence": confidence,
            "n_permutations": n_permutations,
            "base_arm": base_arm,
            "panel_score": PANEL_RULE,
            "headline_judges": headline,
            "headline_note": headline_note,
            "interval": "percentile bootstrap over questions",
            "p_adjustment": "Holm across all arm pairs of all models",
        },
    )

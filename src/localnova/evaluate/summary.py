"""The study's numbers in one object: scores with intervals, tests, agreement, cost.

`summarize` turns the store's score rows and generation rows into a `StudySummary`, which
the report renders and `to_dict()` serialises to JSON (NaN becomes null). Everything here is
a pure function of its inputs and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from localnova.config import BASE_ARM, ControlGate
from localnova.evaluate.agreement import JudgeAgreement, judge_agreement
from localnova.evaluate.clustered import CLUSTER_UNIT, INDEPENDENT
from localnova.evaluate.comparisons import ArmComparison, compare_arms
from localnova.evaluate.controls import JudgeControls
from localnova.evaluate.latency_probe import ProbeCell, probe_summary
from localnova.evaluate.panel import PANEL_RULE, model_panels, score_linked_failures, sparse_judges
from localnova.evaluate.seeds import AdapterSpread, adapter_panels, adapter_spreads, fold_replicates, seeded_change, split_replicate
from localnova.evaluate.statistics import (
    PCT_MIN_BASE,
    PairedChange,
    cluster_bootstrap_ci,
    generation_rows_from,
    ordered_arms,
    paired_change,
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
    """Headline panel level for one model x arm, and its change against the model's base arm.

    Every figure is over the model's panel questions (`panel.model_panels`: those every
    headline judge scored in every arm), n_questions of the n_answers the arm gave: the level
    with its interval, and against base the change in points and in % (NaN when the base level
    is below statistics.PCT_MIN_BASE) with paired intervals, and the change this comparison
    could detect (80% power, Holm's strictest level) in points and in % of the base level.
    Changes are NaN for the base arm itself and without a base arm; everything is NaN when the
    headline panel is empty.
    """

    model: str
    arm: str
    n_questions: int
    n_answers: int
    mean: float
    low: float
    high: float
    diff_vs_base: float
    diff_vs_base_low: float
    diff_vs_base_high: float
    pct_vs_base: float
    pct_vs_base_low: float
    pct_vs_base_high: float
    detectable_diff: float
    detectable_pct: float


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
    # The fine-tuned arms answered by several adapters (one per training seed): each adapter's
    # level and change, and their spread; empty with one adapter per model.
    adapter_spreads: list[AdapterSpread] = field(default_factory=list)

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


def _note_left_out(note: str, sparse: dict[str, str], linked: dict[str, str] | None = None) -> str:
    if sparse:
        reasons = "; ".join(f"{judge} ({why})" for judge, why in sparse.items())
        note = f"{note} Left out for too few scored answers, so that every comparison keeps the same judges: {reasons}.".strip()
    if linked:
        reasons = "; ".join(f"{judge} ({why})" for judge, why in linked.items())
        note = f"{note} Left out because their failures depend on the score: {reasons}.".strip()
    return note


def clustered_by(clusters: Mapping[str, str] | None, questions: set[str]) -> str:
    """What the summary's intervals and tests take as their independent unit, in words."""
    if not clusters:
        return INDEPENDENT
    documents = len({clusters.get(q, q) for q in questions})
    return f"{CLUSTER_UNIT} (the first of each question's doc_ids): {len(questions)} questions from {documents} documents"


def seeds_note(adapters: Mapping[str, Any]) -> str:
    """How many adapters answered each fine-tuned arm, and what that means for its intervals."""
    if len(adapters) < 2:
        return (
            "one adapter per model: a fine-tuned arm's intervals are over questions only, for this adapter; another training "
            "seed would give another adapter (finetune.seeds trains several)"
        )
    return (
        f"{len(adapters)} adapters per model, one per training seed: a fine-tuned arm is their mean, and its changes' "
        "intervals and tests are over questions and seeds (two-way variance, Satterthwaite degrees of freedom)"
    )


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
    max_answer_failure_rate: float = ControlGate().max_answer_failure_rate,
    clusters: Mapping[str, str] | None = None,
) -> StudySummary:
    """Summarise a study from its judgments and generations.

    `score_rows` are ScoreRow-like (model, arm, question_id, judge, score; score None is a
    parse failure) for the answers only: judge controls belong elsewhere, since any arm name
    here is treated as an arm. Per model x arm x judge: mean over the answers the judge scored
    with a bootstrap interval over questions. The headline panel is `headline_judges` (all
    judges when None; `evaluate.controls.headline_panel` picks them) less any judge that failed
    more than `max_answer_failure_rate` of some model x arm's answers, and any whose failures
    depend on the score (`panel.score_linked_failures`); the note says which.
    Per model, every panel figure is over the same questions and judges (`panel.model_panels`):
    each arm's level with its interval, each non-base arm's change against base, and every
    pair of arms' paired tests, Holm-adjusted across the whole family. Agreement is over the
    headline judges. Every interval and test uses `seed`, so the summary is reproducible.
    `probe_timings` (the latency probe's, `ProbeTiming`-like) give the latency comparison.
    `clusters` ({question_id: source document}, `clustered.clusters_from_items`) makes every
    interval and test treat a document's questions as one unit (evaluate/clustered.py); without
    it the questions are independent. settings["clustered_by"] says which.
    """
    rows, adapters = fold_replicates(score_rows_from(score_rows))
    cells = list(dict.fromkeys((r.model, r.arm) for r in rows))
    models = list(dict.fromkeys(model for model, _ in cells))
    ordered_cells = [(model, arm) for model in models for arm in ordered_arms((a for m, a in cells if m == model), base_arm)]
    judges = list(dict.fromkeys(r.judge for r in rows))

    judge_scores: dict[tuple[str, str, str], dict[str, float | None]] = {}
    for row in rows:
        judge_scores.setdefault((row.model, row.arm, row.judge), {})[row.question_id] = row.score
    judge_cells = []
    for model, arm in ordered_cells:
        for judge in judges:
            scores = judge_scores.get((model, arm, judge))
            if scores is None:
                continue
            valid = {question: score for question, score in scores.items() if score is not None}
            mean, low, high = cluster_bootstrap_ci(valid, clusters, n_resamples, seed, confidence)
            judge_cells.append(JudgeCell(model, arm, judge, len(scores), len(scores) - len(valid), mean, low, high))

    requested = judges if headline_judges is None else [judge for judge in judges if judge in set(headline_judges)]
    sparse = sparse_judges(rows, requested, max_answer_failure_rate)
    linked = score_linked_failures(rows, [judge for judge in requested if judge not in sparse])
    headline = [judge for judge in requested if judge not in sparse and judge not in linked]
    panels = model_panels(rows, headline, base_arm)
    panel_values = {(model, arm): panels[model].scores.get(arm, {}) for model, arm in ordered_cells}
    seeded = adapter_panels(adapters, {model: panel.questions for model, panel in panels.items()}, headline)
    comparisons = compare_arms(panel_values, base_arm, n_permutations, seed, clusters=clusters, seeded=seeded)
    versus_base = {(c.model, c.arm_b): c for c in comparisons if c.arm_a == base_arm}
    answered: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        answered.setdefault((row.model, row.arm), set()).add(row.question_id)
    panel_cells = []
    for model, arm in ordered_cells:
        values = panel_values[(model, arm)]
        mean, low, high = cluster_bootstrap_ci(values, clusters, n_resamples, seed, confidence)
        change = PairedChange(0, *([math.nan] * 8))
        detectable = math.nan
        if arm != base_arm and (model, base_arm) in panel_values:
            change = paired_change(panel_values[(model, base_arm)], values, confidence, clusters)
            if (model, arm) in seeded:  # the adapters' spread widens the change's interval
                change = seeded_change({"": panel_values[(model, base_arm)]}, seeded[(model, arm)], confidence, clusters).change
            detectable = versus_base[(model, arm)].detectable_diff
        base_level = change.base_mean if change.base_mean >= PCT_MIN_BASE else math.nan
        panel_cells.append(
            PanelCell(
                model,
                arm,
                len(values),
                len(answered[(model, arm)]),
                mean,
                low,
                high,
                change.diff,
                change.diff_low,
                change.diff_high,
                change.pct,
                change.pct_low,
                change.pct_high,
                detectable,
                100.0 * detectable / base_level,
            )
        )

    failures = []
    for judge in judges:
        verdicts = [r.score for r in rows if r.judge == judge]
        n_failed = sum(score is None for score in verdicts)
        failures.append(JudgeFailures(judge, len(verdicts), n_failed, n_failed / len(verdicts)))

    verdicts = {c.judge: c.verdict for c in controls}
    left_out = {judge: verdicts.get(judge, "left out of the headline panel") for judge in judges if judge not in requested}
    return StudySummary(
        judge_cells=judge_cells,
        panel_cells=panel_cells,
        comparisons=comparisons,
        agreement=judge_agreement(rows, headline),
        # the answers of a model's further adapters are the model's (its ft cells span them all)
        latency_tokens=latency_token_summary(
            [replace(r, model=split_replicate(r.model)[0]) for r in generation_rows_from(generation_rows)], base_arm
        ),
        failures_by_judge=failures,
        controls=list(controls),
        latency_probe=probe_summary(probe_timings, confidence, base_arm),
        adapter_spreads=adapter_spreads({**{cell: {"": values} for cell, values in panel_values.items()}, **seeded}, base_arm),
        settings={
            "n_resamples": n_resamples,
            "seed": seed,
            "confidence": confidence,
            "n_permutations": n_permutations,
            "base_arm": base_arm,
            "panel_score": PANEL_RULE,
            "headline_judges": headline,
            "headline_note": _note_left_out(headline_note, sparse, linked),
            "left_out": {**left_out, **sparse, **linked},
            "max_answer_failure_rate": max_answer_failure_rate,
            "interval": "levels: expanded percentile bootstrap over questions (a t interval's width on small samples); "
            "changes against base: paired t intervals (the % on the ratio's linearised standard error); where questions "
            "share a source document, the document is the unit: its questions are resampled together and the t intervals "
            "are cluster-robust (CR2, documents - 1 degrees of freedom)",
            "wilcoxon": "exact signed-rank distribution given the ties, zero differences dropped",
            "pct_min_base": PCT_MIN_BASE,
            "p_adjustment": "Holm across all arm pairs of all models",
            "detectable": "smallest true change with 80% power at alpha 0.05 / the number of comparisons (Holm's strictest step)",
            "clustered_by": clustered_by(clusters, {row.question_id for row in rows}),
            "seeds": seeds_note(adapters),
        },
    )

"""Training seeds in the uncertainty: several adapters per model, and what they add to a change.

One trained adapter stands for "fine-tuning" only as well as its training seed does: two
machines that trained the demo's adapter apart moved its fine-tuned rows by up to 0.06 points
(issue 27). With `finetune.seeds`, a study trains one adapter per seed and answers its ft arms
with each. In the store, the first seed's answers carry the model's own name and the others'
`replicate_name(model, seed)` ("smollm2@seed1"), so a single-seed study is stored as before.

The summary reads the fine-tuned arm as the mean over its adapters (the estimate of
fine-tuning with a seed drawn at random), and a change involving it gets the variance of a
two-way design, questions crossed with seeds: the variance over questions of the
seed-averaged differences (cluster-robust where questions share documents), plus the seed
component max(0, MS_seeds - MS_residual) / (n S) of the two-way ANOVA of the differences
d[s, q]; Satterthwaite's degrees of freedom combine the two. With three seeds the seed part
has 2 degrees of freedom, so an adapter-to-adapter spread widens an interval a lot: that is
what three seeds can say. Pure numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from localnova.evaluate.clustered import interval_p
from localnova.evaluate.panel import cell_scores
from localnova.evaluate.statistics import PairedChange, ScoreRow, ScoreRows, paired_change, score_rows_from

SEED_MARK = "@seed"
PRIMARY = ""  # the replicate label of the first seed's adapter, stored under the model's own name

# {replicate label: {question_id: value}} of one model x arm: one entry ("") for an arm
# answered without an adapter, one per adapter for a fine-tuned one
ByAdapter = Mapping[str, Mapping[str, float]]


def replicate_name(model: str, seed: int) -> str:
    """How the store names the answers of `model`'s adapter trained with `seed` (not the first)."""
    return f"{model}{SEED_MARK}{seed}"


def split_replicate(name: str) -> tuple[str, str]:
    """(model, replicate label): ("m", "") for "m", ("m", "seed1") for "m@seed1"."""
    model, mark, seed = name.rpartition(SEED_MARK)
    return (model, f"seed{seed}") if mark and model and seed.isdigit() else (name, PRIMARY)


def fold_replicates(rows: ScoreRows) -> tuple[ScoreRows, dict[str, ScoreRows]]:
    """(rows with one score per model x arm x question x judge: the mean over the model's
    adapters, a failure when any adapter's answer failed; the rows of each adapter, under the
    model's own name, by replicate label). Without replicates, the rows as they are and {}."""
    if not any(split_replicate(row.model)[1] for row in rows):
        return rows, {}
    by_adapter: dict[str, list[ScoreRow]] = {}
    scores: dict[tuple[str, str, str, str], list[float | None]] = {}
    for row in rows:
        model, label = split_replicate(row.model)
        by_adapter.setdefault(label, []).append(ScoreRow(model, row.arm, row.question_id, row.judge, row.score))
        scores.setdefault((model, row.arm, row.question_id, row.judge), []).append(row.score)
    folded = [
        ScoreRow(*key, None if any(s is None for s in values) else float(np.mean(values)))  # type: ignore[arg-type]
        for key, values in scores.items()
    ]
    adapters = {label: score_rows_from(adapter_rows) for label, adapter_rows in by_adapter.items()}
    return score_rows_from(folded), adapters


def seed_component(differences: np.ndarray) -> float:
    """For differences d[s, q] of S seeds x n questions: the seed part of the variance of their
    mean, max(0, MS_seeds - MS_residual) / (n S) (two-way ANOVA without replication); 0 below
    2 seeds."""
    seeds, n = differences.shape
    if seeds < 2 or n < 1:
        return 0.0
    grand = differences.mean()
    seed_means, question_means = differences.mean(axis=1), differences.mean(axis=0)
    between_seeds = n * float(np.sum((seed_means - grand) ** 2)) / (seeds - 1)
    residual = differences - seed_means[:, None] - question_means[None, :] + grand
    residual_ms = float(np.sum(residual**2)) / ((n - 1) * (seeds - 1)) if n > 1 else 0.0
    return max(0.0, between_seeds - residual_ms) / (n * seeds)


@dataclass(frozen=True)
class SeededChange:
    """A change whose arms vary with the training seed: the paired change of the seed-averaged
    values (`statistics.PairedChange`, its intervals widened by the seed component), the
    number of adapters, the p-value of its t test over questions and seeds, and the share of
    its variance that comes from the seeds."""

    change: PairedChange
    n_seeds: int
    p: float
    seed_share: float


def _per_adapter(values: ByAdapter, labels: list[str], questions: list[str]) -> np.ndarray:
    return np.array([[values.get(label, values.get(PRIMARY, {})).get(q, math.nan) for q in questions] for label in labels])


def seeded_change(
    reference: ByAdapter, arm: ByAdapter, confidence: float = 0.95, clusters: Mapping[str, str] | None = None
) -> SeededChange:
    """The change of `arm` against `reference`, each given per adapter ({label: {q: value}}; an
    arm without adapters has the one label ""), over the questions every adapter has."""
    from scipy.stats import t

    labels = sorted(set(reference) | set(arm))
    questions = sorted(set.intersection(*(set(values) for values in (*reference.values(), *arm.values()))))
    reference_values, arm_values = _per_adapter(reference, labels, questions), _per_adapter(arm, labels, questions)
    averaged = paired_change(
        dict(zip(questions, reference_values.mean(axis=0), strict=True)),
        dict(zip(questions, arm_values.mean(axis=0), strict=True)),
        confidence,
        clusters,
    )
    if len(labels) < 2 or averaged.n_clusters < 2 or not math.isfinite(averaged.diff_low):
        p = interval_p(averaged.diff, averaged.diff_low, averaged.diff_high, averaged.n_clusters - 1, confidence)
        return SeededChange(averaged, len(labels), p, 0.0)
    quantile = float(t.ppf((1.0 + confidence) / 2.0, averaged.n_clusters - 1))
    question_part = ((averaged.diff_high - averaged.diff_low) / (2 * quantile)) ** 2
    seed_part = seed_component(arm_values - reference_values)
    total = question_part + seed_part
    # Satterthwaite: the questions' part on G - 1 degrees of freedom, the seeds' on S - 1
    df = total**2 / (question_part**2 / (averaged.n_clusters - 1) + seed_part**2 / (len(labels) - 1)) if total > 0 else 1.0
    widened = float(t.ppf((1.0 + confidence) / 2.0, df)) * math.sqrt(total)
    base = averaged.base_mean
    pct_half = math.nan
    if math.isfinite(averaged.pct_low):
        pct_question = ((averaged.pct_high - averaged.pct_low) / (2 * quantile)) ** 2
        pct_half = float(t.ppf((1.0 + confidence) / 2.0, df)) * math.sqrt(pct_question + seed_part * (100.0 / base) ** 2)
    change = PairedChange(
        averaged.n,
        base,
        averaged.arm_mean,
        averaged.diff,
        averaged.diff - widened,
        averaged.diff + widened,
        averaged.pct,
        averaged.pct - pct_half,
        averaged.pct + pct_half,
        averaged.n_clusters,
    )
    p = float(2.0 * t.sf(abs(averaged.diff) / math.sqrt(total), df)) if total > 0 else (0.0 if averaged.diff else 1.0)
    return SeededChange(change, len(labels), p, seed_part / total if total > 0 else 0.0)


@dataclass(frozen=True)
class AdapterSpread:
    """One model x fine-tuned arm answered by several adapters: each adapter's panel level and
    change against base on the panel's questions, by replicate label ("" the first seed's),
    and the SD of those levels across adapters."""

    model: str
    arm: str
    levels: dict[str, float]
    changes: dict[str, float]
    sd_levels: float


def adapter_spreads(per_adapter: Mapping[tuple[str, str], ByAdapter], base_arm: str) -> list[AdapterSpread]:
    """The spread between adapters of every model x arm that several answered."""
    spreads = []
    for (model, arm), by_label in per_adapter.items():
        if len(by_label) < 2:
            continue
        base = (per_adapter.get((model, base_arm)) or {}).get(PRIMARY, {})
        levels = {label: float(np.mean(list(values.values()))) for label, values in sorted(by_label.items()) if values}
        changes = {
            label: float(np.mean([values[q] - base[q] for q in values if q in base])) for label, values in sorted(by_label.items()) if base
        }
        sd = float(np.std(list(levels.values()), ddof=1)) if len(levels) >= 2 else math.nan
        spreads.append(AdapterSpread(model, arm, levels, changes, sd))
    return spreads


def adapter_panels(
    adapters: Mapping[str, ScoreRows], panel_questions: Mapping[str, list[str]], judges: list[str]
) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """Per model x arm answered by several adapters, {label: {question: panel score}} on the
    model's panel questions (`panel_questions`: the folded panel's, which every adapter's answer
    has scores for); {} without replicates."""
    found: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for label, rows in adapters.items():
        for (model, arm), cell in cell_scores(rows, judges).items():
            questions = [q for q in panel_questions.get(model, []) if all(judge in cell.get(q, {}) for judge in judges)]
            if questions and judges:
                found.setdefault((model, arm), {})[label] = {q: float(np.mean([cell[q][judge] for judge in judges])) for q in questions}
    return {cell: by_label for cell, by_label in found.items() if len(by_label) >= 2}

"""Two runs compared question by question: what makes a Bedrock run and a local run comparable.

Putting two runs' panel scores side by side says little when their judges or their questions
differ. Here each later run is paired with the first (the reference) on the questions both
asked alike (the same id, question text and ground truth: two runs may number different
questions q00-q11), and scored only by the judges both runs share (the same name and the same
identity: model and revision, server, prompt, sampling settings, seed) and both keep in their
headline panel. Per arm, each model of one run against each model of
the other: the paired % change with a bootstrap interval, and the paired Wilcoxon and sign-flip
tests, Holm-adjusted across every comparison in the report. With no shared judge there is no
delta to give, and the section says so instead of printing one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from localnova.config import ARMS
from localnova.evaluate.judges import JUDGE_IDENTITY_ARTIFACT
from localnova.evaluate.panel import cell_scores, paired_scores
from localnova.evaluate.statistics import holm_adjust, paired_tests, pct_change_vs_base
from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.report.tables import Paragraph, Table, number, p_value, percent


@dataclass(frozen=True)
class CrossRunComparison:
    """`other`'s model against the reference's model on one arm, paired by question."""

    reference: str
    other: str
    arm: str
    reference_model: str
    other_model: str
    n: int
    mean_diff: float
    pct: tuple[float, float, float]
    wilcoxon_p: float
    permutation_p: float
    wilcoxon_p_holm: float = float("nan")
    permutation_p_holm: float = float("nan")


# A judging model's options that only pace its requests (how many at once, how often retried,
# which variable holds the key): they decide nothing about a score.
_PACING_OPTIONS = ("max_concurrency", "max_attempts", "max_retries", "timeout_s", "backoff_initial_s", "backoff_max_s")
_PACING_OPTIONS += ("retry_base_delay_s", "api_key_env")


def _stored_identities(run: RunData) -> dict[str, Any]:
    return {
        name[len(JUDGE_IDENTITY_ARTIFACT) :]: value for name, value in run.artifacts.items() if name.startswith(JUDGE_IDENTITY_ARTIFACT)
    }


def _config_identity(run: RunData, judge: dict[str, Any]) -> dict[str, Any]:
    """What a run's config says of a judge, for a run stored before judges' identities were:
    every setting (and, for an LLM judge, the study seed its sampling uses) but the batch size,
    the judging model's label and the options that only pace requests."""
    found = dict(judge)
    model = found.get("model")
    if isinstance(model, dict):
        options = {key: value for key, value in (model.get("options") or {}).items() if key not in _PACING_OPTIONS}
        generation = {key: value for key, value in (model.get("generation") or {}).items() if key != "batch_size"}
        found["model"] = {**{key: value for key, value in model.items() if key != "name"}, "options": options, "generation": generation}
    if judge.get("kind", "llm") == "llm":
        found["seed"] = run.study_config.get("seed", 0)
    return found


def judge_identities(reference: RunData, other: RunData) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Judge name -> what makes it the same judge in the other run, for both runs, and where
    that came from: the identities the runs stored as they judged (model files and revision,
    server, dtype, prompt, sampling settings, seed), or, where either run did not store them,
    every deciding setting of both runs' configs."""
    ref_stored, other_stored = _stored_identities(reference), _stored_identities(other)
    if ref_stored and other_stored:
        return ref_stored, other_stored, "the identities the runs judged with"
    configs = []
    for run in (reference, other):
        configs.append({judge["name"]: _config_identity(run, judge) for judge in run.study_config.get("judges") or []})
    return configs[0], configs[1], "the judges' settings in each run's config"


def _differences(one: Any, other: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested dicts differ."""
    if not (isinstance(one, dict) and isinstance(other, dict)):
        return [prefix or "value"] if one != other else []
    found = []
    for key in sorted(set(one) | set(other), key=str):
        found += _differences(one.get(key), other.get(key), f"{prefix}.{key}" if prefix else str(key))
    return found


def shared_judges(reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary) -> list[str]:
    """Judges that are the same in both runs (same name, same identity and settings) and in both
    headline panels, in reference order."""
    ref_ids, other_ids, _ = judge_identities(reference, other)
    other_headline = set(other_summary.settings["headline_judges"])
    return [
        judge
        for judge in ref_summary.settings["headline_judges"]
        if judge in other_headline and judge in ref_ids and judge in other_ids and ref_ids[judge] == other_ids[judge]
    ]


def _questions(run: RunData) -> set[str]:
    return {answer.question_id for answer in run.answers}


@dataclass(frozen=True)
class QuestionMatch:
    """Which question ids two runs can be paired on: the same id asking the same question
    against the same ground truth (where both runs recorded them)."""

    paired: set[str]
    other_question: list[str]  # same id, another question text
    other_truth: list[str]  # same id and question, another ground truth
    unrecorded: list[str]  # same id, a run that recorded no text for it: paired on the id alone


def match_questions(reference: RunData, other: RunData) -> QuestionMatch:
    shared = sorted(_questions(reference) & _questions(other))
    paired, other_question, other_truth, unrecorded = set(), [], [], []
    for question_id in shared:
        ref_item, other_item = reference.eval_items.get(question_id) or {}, other.eval_items.get(question_id) or {}
        ref_text, other_text = (ref_item.get("question") or "").strip(), (other_item.get("question") or "").strip()
        if not ref_text or not other_text:
            unrecorded.append(question_id)
            paired.add(question_id)
        elif ref_text != other_text:
            other_question.append(question_id)
        elif (ref_item.get("answer") or "").strip() != (other_item.get("answer") or "").strip():
            other_truth.append(question_id)
        else:
            paired.add(question_id)
    return QuestionMatch(paired, other_question, other_truth, unrecorded)


def _only(rows: list[Any], question_ids: set[str]) -> list[Any]:
    return [row for row in rows if row.question_id in question_ids]


def compare_runs(
    reference: RunData, ref_summary: StudySummary, other: RunData, other_summary: StudySummary, judges: list[str]
) -> list[CrossRunComparison]:
    """Every (arm, reference model, other model) on the questions both runs asked alike
    (`match_questions`) and `judges`."""
    seed = ref_summary.settings["seed"]
    n_permutations = ref_summary.settings["n_permutations"]
    paired = match_questions(reference, other).paired
    ref_cells = cell_scores(_only(reference.score_rows, paired), judges)
    other_cells = cell_scores(_only(other.score_rows, paired), judges)
    found = []
    for arm in ARMS:
        for ref_model in dict.fromkeys(model for model, cell_arm in ref_cells if cell_arm == arm):
            for other_model in dict.fromkeys(model for model, cell_arm in other_cells if cell_arm == arm):
                a, b = paired_scores(ref_cells[(ref_model, arm)], other_cells[(other_model, arm)])
                questions = sorted(a)  # paired_scores gives both maps the same questions
                test = paired_tests([a[q] for q in questions], [b[q] for q in questions], n_permutations, seed)
                pct = pct_change_vs_base(a, b)
                found.append(
                    CrossRunComparison(
                        reference.label,
                        other.label,
                        arm,
                        ref_model,
                        other_model,
                        test.n,
                        test.mean_diff,
                        pct,
                        test.wilcoxon_p,
                        test.permutation_p,
                    )
                )
    return found


def _with_holm(comparisons: list[CrossRunComparison]) -> list[CrossRunComparison]:
    wilcoxon = holm_adjust([c.wilcoxon_p for c in comparisons])
    permutation = holm_adjust([c.permutation_p for c in comparisons])
    return [replace(c, wilcoxon_p_holm=w, permutation_p_holm=p) for c, w, p in zip(comparisons, wilcoxon, permutation)]


def cross_run_blocks(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    """The report section's blocks: what differs between the runs, then the paired table."""
    reference, ref_summary = runs[0], summaries[0]
    blocks: list[Any] = [
        Paragraph(
            f"Each run is paired with {reference.label} question by question, on the questions both asked alike (the same id, "
            "question text and ground truth) and the judges both share (the same name, model, revision, prompt and settings) "
            "and both keep in their headline panel. The % change is the other run's panel mean against the reference's on "
            "those pairs; p-values are paired tests, Holm-adjusted across this table."
        )
    ]
    comparisons: list[CrossRunComparison] = []
    for other, other_summary in zip(runs[1:], summaries[1:], strict=True):
        blocks += _question_notes(reference, other)
        judges = shared_judges(reference, ref_summary, other, other_summary)
        blocks += _judge_notes(reference, other)
        ref_panel, other_panel = ref_summary.settings["headline_judges"], other_summary.settings["headline_judges"]
        if not judges:
            blocks.append(
                Paragraph(
                    f"{other.label}: no cross-run delta. The headline panels share no judge ({reference.label}: "
                    f"{', '.join(ref_panel) or 'none'}; {other.label}: {', '.join(other_panel) or 'none'}), and scores from "
                    "different judges are on different scales."
                )
            )
            continue
        if list(ref_panel) != list(other_panel) or judges != list(ref_panel):
            blocks.append(
                Paragraph(
                    f"{other.label}: the headline panels differ ({reference.label}: {', '.join(ref_panel)}; {other.label}: "
                    f"{', '.join(other_panel)}); compared on the shared judges only: {', '.join(judges)}."
                )
            )
        else:
            blocks.append(Paragraph(f"{other.label}: same headline panel as {reference.label}: {', '.join(judges)}."))
        comparisons += compare_runs(reference, ref_summary, other, other_summary, judges)
    if comparisons:
        rows = [
            [
                c.other,
                c.arm,
                f"{c.other_model} vs {c.reference_model}",
                str(c.n),
                number(c.mean_diff),
                percent(*c.pct),
                p_value(c.wilcoxon_p_holm),
                p_value(c.permutation_p_holm),
            ]
            for c in _with_holm(comparisons)
        ]
        blocks.append(
            Table(
                [
                    "run",
                    "arm",
                    "model vs reference model",
                    "pairs",
                    "mean difference",
                    "% change [95% CI]",
                    "p Wilcoxon (Holm)",
                    "p permutation (Holm)",
                ],
                rows,
            )
        )
    return blocks


def _ids(question_ids: list[str]) -> str:
    shown = ", ".join(question_ids[:8])
    return shown + (f" and {len(question_ids) - 8} more" if len(question_ids) > 8 else "")


def _question_notes(reference: RunData, other: RunData) -> list[Paragraph]:
    """What the pairing of `other` with the reference leaves out, and why."""
    ref_questions, other_questions = _questions(reference), _questions(other)
    match = match_questions(reference, other)
    notes = []
    if ref_questions != other_questions:
        notes.append(
            f"the question sets differ ({len(ref_questions)} in {reference.label}, {len(other_questions)} here; "
            f"{len(ref_questions & other_questions)} ids in both)"
        )
    if match.other_question:
        notes.append(f"not paired, another question under the same id: {_ids(match.other_question)}")
    if match.other_truth:
        notes.append(f"not paired, another ground truth for the same question: {_ids(match.other_truth)}")
    if match.unrecorded:
        notes.append(f"paired on the id alone, the question not recorded in one run: {_ids(match.unrecorded)}")
    if not notes:
        return []
    return [Paragraph(f"{other.label}: {'; '.join(notes)}. Compared on the {len(match.paired)} questions asked alike.")]


def _judge_notes(reference: RunData, other: RunData) -> list[Paragraph]:
    """Judges of one name that judged otherwise in the two runs, and what differs."""
    ref_ids, other_ids, source = judge_identities(reference, other)
    differing = []
    for judge in ref_ids:
        if judge in other_ids and ref_ids[judge] != other_ids[judge]:
            differing.append(f"{judge} ({', '.join(_differences(ref_ids[judge], other_ids[judge])[:6])})")
    if not differing:
        return []
    return [
        Paragraph(
            f"{other.label}: same name, another judge, so not shared (compared on {source}): {'; '.join(differing)}. Scores "
            "from a judge with another model, revision or setting are on another scale."
        )
    ]

"""The report's content as plain blocks (paragraphs, tables, preformatted text), built once
and written both as Markdown and as HTML by `render`, so the two never say different things.

Cells and texts here are raw strings: escaping belongs to the writer of each format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from localnova.config import BASE_ARM
from localnova.evaluate.statistics import PCT_MIN_BASE
from localnova.evaluate.summary import PanelCell, StudySummary
from localnova.report.collect import RunData

LATENCY_METHODS = {
    "batch_wall_clock": "wall-clock time of the whole batched call, recorded for every request in the batch "
    "(what a user who sent that batch waited, not one request's own time)",
    "per_request_wall_clock": "wall-clock time of each request on its own, end to end",
}


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Preformatted:
    caption: str
    text: str


@dataclass
class Figure:
    caption: str
    svg: str


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)


def number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def interval(mean: float, low: float, high: float, digits: int = 2) -> str:
    if not math.isfinite(low) or not math.isfinite(high):
        return number(mean, digits)
    return f"{number(mean, digits)} [{number(low, digits)}, {number(high, digits)}]"


def percent(value: float, low: float | None = None, high: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:+.1f}%"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:+.1f}, {high:+.1f}]"
    return text


def signed_interval(value: float, low: float, high: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if not math.isfinite(low) or not math.isfinite(high):
        return f"{value:+.2f}"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def p_value(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


SUMMARY_HEADERS = [
    "model",
    "arm",
    "questions",
    "panel score [95% CI]",
    "change vs base, points [95% CI]",
    "% vs base [95% CI]",
    "detectable change (80% power)",
    "p Wilcoxon (Holm)",
    "p permutation (Holm)",
]


def _pct_cell(cell: PanelCell, base: PanelCell | None) -> str:
    if cell.arm == BASE_ARM:
        return "(reference)"
    if math.isfinite(cell.pct_vs_base) or base is None or not math.isfinite(base.mean) or base.mean >= PCT_MIN_BASE:
        return percent(cell.pct_vs_base, cell.pct_vs_base_low, cell.pct_vs_base_high)
    return f"n/a: base below {PCT_MIN_BASE:g} point"


def detectable(points: float, pct: float = math.nan) -> str:
    """A detectable change: in points (and % of base when known), 'out of reach' when no change
    would reach the power, 'n/a' when it cannot be computed."""
    if points == math.inf:
        return "none: 80% power is out of reach"
    if not math.isfinite(points):
        return "n/a"
    return f"{points:.2f} points" + (f" ({pct:.0f}%)" if math.isfinite(pct) else "")


def _detectable_cell(cell: PanelCell) -> str:
    return "" if cell.arm == BASE_ARM else detectable(cell.detectable_diff, cell.detectable_pct)


def summary_rows(summary: StudySummary, cells: list[PanelCell] | None = None) -> list[list[str]]:
    """One row per panel cell (all of them, in the summary's order, unless `cells` says which),
    in SUMMARY_HEADERS' columns: the report's summary table and the README's table share it."""
    versus_base = {(c.model, c.arm_b): c for c in summary.comparisons if c.arm_a == BASE_ARM}
    bases = {c.model: c for c in summary.panel_cells if c.arm == BASE_ARM}
    rows = []
    for cell in summary.panel_cells if cells is None else cells:
        test = versus_base.get((cell.model, cell.arm))
        questions = str(cell.n_questions) if cell.n_questions == cell.n_answers else f"{cell.n_questions} of {cell.n_answers}"
        rows.append(
            [
                cell.model,
                cell.arm,
                questions,
                interval(cell.mean, cell.low, cell.high),
                "(reference)"
                if cell.arm == BASE_ARM
                else signed_interval(cell.diff_vs_base, cell.diff_vs_base_low, cell.diff_vs_base_high),
                _pct_cell(cell, bases.get(cell.model)),
                _detectable_cell(cell),
                p_value(test.wilcoxon_p_holm) if test else "",
                p_value(test.permutation_p_holm) if test else "",
            ]
        )
    return rows


def summary_table(runs: list[RunData], summaries: list[StudySummary]) -> Table:
    rows = [[run.label, *row] for run, summary in zip(runs, summaries, strict=True) for row in summary_rows(summary)]
    return Table(["run", *SUMMARY_HEADERS], rows)


def clustering_sentence(label: str, settings: dict[str, Any]) -> str:
    """What a run's intervals and tests take as their independent unit, in one sentence."""
    clustered_by = str(settings.get("clustered_by") or "")
    if not clustered_by or clustered_by.startswith("none"):
        return f"{label}: questions treated as independent: the eval set records no source document for them."
    return (
        f"{label}: intervals, tests and power clustered by {clustered_by}; a document's questions count as one unit, "
        "and each comparison's design effect says how much that widens its intervals."
    )


def _units(c: Any) -> str:
    return "independent" if c.n_clusters >= c.n else f"{c.n_clusters} (design effect {c.design_effect:.2f}, ICC {c.icc:.2f})"


def comparisons_table(runs: list[RunData], summaries: list[StudySummary]) -> Table:
    rows = [
        [
            run.label,
            c.model,
            f"{c.arm_b} vs {c.arm_a}",
            str(c.n),
            _units(c),
            number(c.mean_diff),
            number(c.sd_diff),
            "n/a" if not math.isfinite(c.zero_share) else f"{100 * c.zero_share:.0f}%",
            detectable(c.detectable_diff),
            p_value(c.wilcoxon_p),
            p_value(c.wilcoxon_p_holm),
            p_value(c.permutation_p),
            p_value(c.permutation_p_holm),
        ]
        for run, summary in zip(runs, summaries, strict=True)
        for c in summary.comparisons
    ]
    headers = ["run", "model", "comparison", "pairs", "documents", "mean difference", "SD of differences", "no difference"]
    headers.append("detectable (80% power)")
    return Table([*headers, "p Wilcoxon", "Holm", "p permutation", "Holm"], rows)


def latency_tokens_blocks(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    """The batched run's times (throughput; arms are compared in report/latency.py) and tokens."""
    rows, notes = [], []
    for run, summary in zip(runs, summaries, strict=True):
        methods: dict[tuple[str, str], set[str]] = {}
        batch_sizes: dict[str, int] = {}
        for answer in run.answers:
            methods.setdefault((answer.model, answer.arm), set()).add(answer.result.latency_method)
            batch_sizes[answer.result.latency_method] = max(batch_sizes.get(answer.result.latency_method, 1), answer.result.batch_size)
        # Bedrock runs record how each arm reached its model (a cross-region profile, a
        # one-region deployment, a provisioned throughput): it shapes latency, so it sits beside it.
        routes = run.artifacts.get("bedrock_routing") or {}
        for cell in summary.latency_tokens:
            pct = cell.pct_vs_base
            rows.append(
                [
                    run.label,
                    cell.model,
                    cell.arm,
                    routes.get(f"{cell.model}/{cell.arm}", "local"),
                    str(cell.n_generations),
                    ", ".join(sorted(methods.get((cell.model, cell.arm), ()))),
                    number(cell.latency_ms_median, 0),
                    number(cell.latency_ms_p90, 0),
                    number(cell.input_tokens_mean, 1),
                    number(cell.output_tokens_mean, 1),
                    number(cell.total_tokens_mean, 1),
                    percent(pct.get("total_tokens_mean", math.nan)),
                ]
            )
        judge_routes = [f"{name.removeprefix('judge ')} via {route}" for name, route in routes.items() if name.startswith("judge ")]
        if judge_routes:
            notes.append(f"{run.label}: judges reached their models as: {'; '.join(judge_routes)}.")
        server = [a.result.server_latency_ms for a in run.answers if a.result.server_latency_ms is not None]
        for method, largest_batch in sorted(batch_sizes.items()):
            described = LATENCY_METHODS.get(method, "as the backend reported it")
            extra = f"; largest batch {largest_batch}" if method == "batch_wall_clock" else ""
            notes.append(f"{run.label}: latency measured as {method}: {described}{extra}.")
        if server:
            server.sort()
            notes.append(
                f"{run.label}: the server also reported its own latency for {len(server)} answers "
                f"(median {server[len(server) // 2]:.0f} ms)."
            )
    throughput = Paragraph(
        "Throughput: the batched run's time per answer. Each arm's answers were made in batches, one arm after another, "
        "so these times also hold whatever else the machine or service did meanwhile; they are not compared between arms "
        "(the latency probe is)."
    )
    return [
        throughput,
        Table(
            [
                "run",
                "model",
                "arm",
                "route",
                "answers",
                "latency method",
                "batched median ms",
                "batched p90 ms",
                "input tokens",
                "output tokens",
                "total tokens",
                "total % vs base",
            ],
            rows,
        ),
    ] + [Paragraph(n) for n in notes]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def json_table(value: Any, key_header: str = "name") -> Table | Preformatted:
    """A table from an artifact's JSON: rows of dicts, dict of dicts, or dict of values;
    anything else is shown as JSON text."""
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        headers = list(dict.fromkeys(key for row in value for key in row))
        return Table(headers, [[_cell(row.get(h)) for h in headers] for row in value])
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        headers = list(dict.fromkeys(key for row in value.values() for key in row))
        return Table([key_header] + headers, [[str(name)] + [_cell(row.get(h)) for h in headers] for name, row in value.items()])
    if isinstance(value, dict) and value and not any(isinstance(v, (dict, list)) for v in value.values()):
        return Table([key_header, "value"], [[str(k), _cell(v)] for k, v in value.items()])
    return Preformatted("", json.dumps(value, indent=2, sort_keys=True))


def artifact_blocks(runs: list[RunData], prefix: str, empty_note: str, key_header: str = "name") -> list[Any]:
    blocks: list[Any] = []
    for run in runs:
        for name, value in sorted(run.artifacts.items()):
            if name.startswith(prefix):
                blocks.append(Paragraph(f"{run.label}: {name}"))
                blocks.append(json_table(value, key_header))
    return blocks or [Paragraph(empty_note)]


def provenance_blocks(run: RunData) -> list[Any]:
    info, environment = run.info, dict(run.info.get("environment") or {})
    blocks: list[Any] = [
        Paragraph(
            f"Run {run.run_id} of study {info.get('study')}: status {info.get('status')}, started {info.get('started_at')}, "
            f"finished {info.get('finished_at') or 'not yet'}; {run.model_calls} model calls in all its invocations, "
            f"{run.calls_from_store} answered from the store by the first."
        )
    ]
    model_rows = [
        [str(m.get("name")), str(m.get("backend")), str(m.get("model")), str(m.get("revision") or "")]
        for m in run.study_config.get("models", [])
        if isinstance(m, dict)
    ]
    if model_rows:
        blocks.append(Table(["model", "backend", "loaded from", "revision"], model_rows))
    resolved = environment.pop("models", None)
    if resolved:
        blocks += [Paragraph("Where each model came from, as resolved when the run started:"), json_table(resolved)]
    packages = environment.pop("packages", {}) or {}
    blocks.append(Table(["hardware and software", "value"], [[k, _cell(v)] for k, v in sorted(environment.items())]))
    if packages:
        blocks.append(Table(["package", "version"], [[k, str(v)] for k, v in sorted(packages.items())]))
    blocks.append(Preformatted("config (YAML)", yaml.safe_dump(info.get("config", {}), sort_keys=False, allow_unicode=True).rstrip("\n")))
    return blocks


def sample_blocks(run: RunData, per_arm: int = 2) -> list[Any]:
    blocks: list[Any] = []
    shown: dict[tuple[str, str], int] = {}
    for answer in run.answers:
        cell = (answer.model, answer.arm)
        if shown.get(cell, 0) >= per_arm:
            continue
        shown[cell] = shown.get(cell, 0) + 1
        truth = run.ground_truth(answer.question_id)
        chunk_ids = ", ".join(str(c.get("chunk_id")) for c in answer.retrieved)
        blocks.append(
            Paragraph(
                f"{run.label} / {answer.model} / {answer.arm} / question {answer.question_id}"
                + (f" (retrieved: {chunk_ids})" if chunk_ids else "")
            )
        )
        blocks.append(Preformatted("question", run.question_text(answer)))
        blocks.append(Preformatted("ground truth", truth if truth is not None else "(not recorded in this run)"))
        blocks.append(Preformatted("answer", answer.result.text))
    return blocks or [Paragraph(f"{run.label}: no answers stored.")]


def adapter_spread_blocks(runs: list[RunData], summaries: list[StudySummary]) -> list[Any]:
    """How many adapters answered each run's fine-tuned arms, and with several (one per training
    seed) each adapter's panel level and change against base, and their spread."""
    blocks: list[Any] = [
        Paragraph(f"{run.label}: {summary.settings.get('seeds', '')}.") for run, summary in zip(runs, summaries, strict=True)
    ]
    rows = [
        [
            run.label,
            spread.model,
            spread.arm,
            label or "first seed",
            number(level),
            signed_interval(spread.changes.get(label, math.nan), math.nan, math.nan),
        ]
        for run, summary in zip(runs, summaries, strict=True)
        for spread in summary.adapter_spreads
        for label, level in spread.levels.items()
    ]
    if rows:
        spreads = "; ".join(
            f"{run.label} {s.model} / {s.arm}: SD {number(s.sd_levels)} points across {len(s.levels)} adapters"
            for run, summary in zip(runs, summaries, strict=True)
            for s in summary.adapter_spreads
        )
        blocks.append(Paragraph(f"Each adapter's panel level and change against base, on the panel's questions ({spreads})."))
        blocks.append(Table(["run", "model", "arm", "adapter", "panel score", "change vs base, points"], rows))
    return blocks

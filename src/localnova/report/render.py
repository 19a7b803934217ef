"""Write the report: `report.md` (figures as SVG files beside it) and a self-contained
`report.html` (inline CSS, figures as inline SVG, nothing fetched from a network).

One or more runs go into one report: every table has a `run` column and the figures group
bars by run and model. All text that a model wrote is escaped for HTML and fenced in Markdown.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import math
import re
from pathlib import Path
from typing import Any

from localnova.config import BASE_ARM
from localnova.evaluate.controls import gate_rule
from localnova.evaluate.judges import CONTROL_SUBJECTS, SUBJECT_ANSWER
from localnova.evaluate.panel import answer_scores, cell_scores
from localnova.evaluate.summary import StudySummary
from localnova.files import write_text_atomic
from localnova.findings import FindingsSet
from localnova.report import figures, judge_tables, latency, tables
from localnova.report.collect import RunData, collect_runs
from localnova.report.crossrun import cross_run_blocks
from localnova.report.headline import findings_paragraph
from localnova.report.questions import TABLE_CSS, TABLE_SCRIPT, DataTable, data_table_html, question_table, wins_and_losses
from localnova.report.reproduction import report_findings, reproduction_blocks
from localnova.report.summarize import config_order, control_gate, legacy_gate_note, summarize_run
from localnova.report.tables import Figure, Paragraph, Preformatted, Section, Table
from localnova.store import EARLIER_INVOCATIONS
from localnova.types import stable_hash

SIMULATED_BANNER = "SIMULATED — no real model was called"

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: .6em; white-space: pre-wrap; word-break: break-word;
      max-height: 24em; overflow: auto; }
.banner { background: #fff3cd; border: 2px solid #d39e00; color: #6b4e00; font-weight: bold; padding: .5em 1em;
          margin: .6em 0; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption, .caption { color: #555; font-size: .9em; }
nav ul { columns: 2; }
"""


def _group(run: RunData, model: str, several_runs: bool) -> str:
    return f"{run.label} / {model}" if several_runs else model


def _figure_blocks(runs: list[RunData], summaries: list[StudySummary]) -> dict[str, list[Figure]]:
    """Figures keyed by the section they belong to; a figure with no data is left out."""
    several = len(runs) > 1
    groups: list[str] = []
    arms: list[str] = []
    quality, latency, tokens, probed = {}, {}, {}, {}
    for run, summary in zip(runs, summaries, strict=True):
        for cell in summary.latency_probe:
            probed[(_group(run, cell.model, several), cell.arm)] = (cell.median_ms, cell.p90_ms)
        for cell in summary.panel_cells:
            group = _group(run, cell.model, several)
            groups.append(group)
            arms.append(cell.arm)
            quality[(group, cell.arm)] = (cell.mean, cell.low, cell.high)
        for cell in summary.latency_tokens:
            group = _group(run, cell.model, several)
            groups.append(group)
            arms.append(cell.arm)
            latency[(group, cell.arm)] = (cell.latency_ms_median, cell.latency_ms_p90)
            tokens[(group, cell.arm)] = (cell.input_tokens_mean, cell.output_tokens_mean)
    groups, arms = list(dict.fromkeys(groups)), list(dict.fromkeys(arms))
    found: dict[str, list[Figure]] = {}
    if quality:
        found["summary"] = [
            Figure(
                "Panel score by model and arm, with 95% bootstrap intervals over questions.", figures.quality_figure(groups, arms, quality)
            )
        ]
    if latency:
        # Arms are compared on the interleaved probe's times; the batched run's stand in only
        # where no run has a probe, and the caption says what they are.
        caption = "Latency by arm in the interleaved probe (one request at a time): median (bar) and p90 (tick)."
        if not probed:
            caption = "Time per answer in the batched run (throughput, not an arm comparison): median (bar) and p90 (tick)."
        found["latency"] = [
            Figure(caption, figures.latency_figure(groups, arms, probed or latency)),
            Figure("Mean input and output tokens per answer by arm.", figures.tokens_figure(groups, arms, tokens)),
        ]

    panels = []
    for run, summary in zip(runs, summaries, strict=True):
        if summary.agreement is None:
            continue
        judges = summary.agreement.judges
        matrix = [[1.0 if a == b else math.nan for b in judges] for a in judges]
        for pair in summary.agreement.per_answer:
            i, j = judges.index(pair.judge_a), judges.index(pair.judge_b)
            matrix[i][j] = matrix[j][i] = pair.spearman
        panels.append((run.label, judges, matrix))
    if panels:
        found["agreement"] = [
            Figure(
                "Spearman correlation between judges on per-answer scores (n/a: undefined, "
                "e.g. a judge that gave every answer the same score).",
                figures.agreement_figure(panels),
            )
        ]

    columns, by_column = [], {}
    for run, summary in zip(runs, summaries, strict=True):
        for (model, arm), cell in cell_scores(run.score_rows, summary.settings["headline_judges"]).items():
            column = f"{_group(run, model, several)} / {arm}"
            columns.append(column)
            by_column[column] = answer_scores(cell)
    if columns:
        question_ids = sorted({qid for scores in by_column.values() for qid in scores})
        matrix = [[by_column[c].get(qid, math.nan) for c in columns] for qid in question_ids]
        found["per_question"] = [
            Figure(
                "Headline panel score per question (mean over the headline judges that scored the answer); blank where none did.",
                figures.per_question_figure(question_ids, columns, matrix),
            )
        ]

    judges, means = [], {}
    subjects = dict(zip((SUBJECT_ANSWER, *CONTROL_SUBJECTS), figures.CONTROL_LABELS, strict=True))
    for run in runs:
        for (judge, subject), scores in judge_tables.control_means(run).items():
            name = f"{run.label}: {judge}" if several else judge
            judges.append(name)
            if subject in subjects and scores:
                means[(name, subjects[subject])] = sum(scores) / len(scores)
    if any(label != "real answers" for _, label in means):
        found["controls"] = [
            Figure("Mean score each judge gave real answers and each control.", figures.controls_figure(list(dict.fromkeys(judges)), means))
        ]

    curves = {}
    for run in runs:
        for name, points in sorted(run.artifacts.items()):
            if name.startswith("loss_curve:") and isinstance(points, list):
                model = name.split(":", 1)[1]
                curves[f"{run.label} / {model}" if several else model] = points
    if curves:
        found["finetune"] = [Figure("Training loss per fine-tuned model.", figures.loss_figure(curves))]
    return found


def build_sections(runs: list[RunData], findings: FindingsSet | None = None, findings_note: str = "") -> list[Section]:
    """The report's content, shared by both output formats; the Reproduction section sets the
    runs against `findings` (none without them)."""
    summaries = [summarize_run(run) for run in runs]
    figs = _figure_blocks(runs, summaries)
    overview = Table(
        ["run", "study", "status", "simulated", "answers", "judgments", "model calls", "from store"],
        [
            [
                r.label,
                str(r.info.get("study")),
                str(r.info.get("status")),
                "yes" if r.simulated else "no",
                str(len(r.answers)),
                str(len(r.judgments)),
                str(r.model_calls),
                str(r.calls_from_store),
            ]
            for r in runs
        ],
    )
    settings = summaries[0].settings if summaries else {}
    method = Paragraph(
        f"Panel score: {settings.get('panel_score', '')}. Interval: {settings.get('interval', '')} "
        f"({settings.get('n_resamples')} resamples, seed {settings.get('seed')}). p-values: paired Wilcoxon signed-rank "
        f"({settings.get('wilcoxon', '')}) and sign-flip permutation tests of the mean difference (exact up to 16 questions, "
        f"or documents where questions share them, {settings.get('n_permutations')} random sign patterns above; where "
        "questions share a document, its questions' signs flip together and the signed-rank test ranks documents) for every "
        "pair of arms within a model (the summary shows "
        f"each arm against {BASE_ARM}; all pairs are in the next section), {settings.get('p_adjustment', '')}. "
        f"A % change is given only when the base level is at least {settings.get('pct_min_base')} point; the change in points "
        f"always. Detectable change: {settings.get('detectable', '')}, from the spread of this run's own per-question "
        "differences and their design effect. Parse failures are left out of every mean, never counted as 0."
    )
    headline = [Paragraph(f"{run.label}: {summary.settings['headline_note']}") for run, summary in zip(runs, summaries, strict=True)]
    arm_order, model_order = config_order(runs[0])
    headline += [Paragraph(tables.clustering_sentence(run.label, summary.settings)) for run, summary in zip(runs, summaries, strict=True)]
    return [
        Section("Findings", [findings_paragraph(run, summary, findings) for run, summary in zip(runs, summaries, strict=True)]),
        Section("Runs", [overview]),
        Section("Summary", [*headline, tables.summary_table(runs, summaries), method, *figs.get("summary", [])]),
        *([Section("Reproduction", reproduction_blocks(runs, summaries, findings, findings_note))] if findings else []),
        Section("Arm comparisons", [tables.comparisons_table(runs, summaries)]),
        *([Section("Across runs, paired by question", cross_run_blocks(runs, summaries, findings))] if len(runs) > 1 else []),
        Section("Scores per judge", [judge_tables.judge_means_table(runs, summaries)]),
        Section("Judge agreement", [*judge_tables.agreement_tables(runs, summaries), *figs.get("agreement", [])]),
        Section(
            "Judge controls",
            [
                Paragraph(
                    "Every judge also scored, for each question, the ground truth itself, an empty answer and the "
                    "ground truth of another question. "
                    + " ".join(dict.fromkeys(gate_rule(control_gate(run)) for run in runs))
                    + " Only the judges that pass make the headline panel (unless the config sets eval.headline_panel: all)."
                    + "".join(f" {note}" for note in dict.fromkeys(legacy_gate_note(run) for run in runs) if note)
                ),
                judge_tables.controls_table(runs, summaries),
                *figs.get("controls", []),
            ],
        ),
        Section(
            "Parse failures",
            [
                Paragraph(
                    "A judge reply that did not parse after its retries is a failure: counted here, "
                    "left out of the means, never scored as 0."
                ),
                judge_tables.failures_table(runs),
                *judge_tables.failure_examples(runs),
            ],
        ),
        Section("Per-question scores", figs.get("per_question", []) or [Paragraph("No scored answers.")]),
        Section("Answers by question", [question_table(runs, summaries, arm_order, model_order)]),
        Section("Biggest wins and losses", wins_and_losses(runs, summaries, arm_order)),
        Section(
            "Latency and tokens",
            [*latency.latency_probe_blocks(runs, summaries), *tables.latency_tokens_blocks(runs, summaries), *figs.get("latency", [])],
        ),
        Section("Retrieval", tables.artifact_blocks(runs, "retrieval", "No retrieval metrics recorded.", "model / arm")),
        Section("Reference metrics", tables.artifact_blocks(runs, "answer_metrics", "No reference metrics recorded.", "model / arm")),
        Section("Cost", tables.artifact_blocks(runs, "cost", "No cost estimate or spend recorded.")),
        Section(
            "Fine-tuning",
            [*tables.adapter_spread_blocks(runs, summaries), *(figs.get("finetune", []) or [Paragraph("No training loss recorded.")])],
        ),
        Section("Sample answers", [block for run in runs for block in tables.sample_blocks(run)]),
        Section("Config, models and environment", [block for run in runs for block in tables.provenance_blocks(run)]),
    ]


def _banner(runs: list[RunData]) -> str | None:
    simulated = [run.label for run in runs if run.simulated]
    if not simulated:
        return None
    return SIMULATED_BANNER if len(simulated) == len(runs) else f"{SIMULATED_BANNER} (runs: {', '.join(simulated)})"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# Characters that start Markdown structure anywhere in a line: emphasis, code, links, table
# cells, strike-through (and the backslash, so that text cannot escape our escapes). An
# underscore between two letters or digits never starts emphasis, so snake_case stays readable.
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
# What starts a heading, list item or thematic break at the start of a line: escaped before the
# marker (#, +, -, =) or, after a number, before its . or ). A leading > is an entity once
# escaped as HTML, which starts no quote.
_MARKDOWN_LINE_START = re.compile(r"^([#+=-]|\d{1,9}(?=[.)](\s|$)))")
# Every character a renderer or Python's splitlines takes as the end of a line.
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def markdown_cell(text: str) -> str:
    """Free text as the content of one Markdown table cell that shows as written: line breaks
    become spaces, HTML becomes entities, and every character Markdown would read as inline
    structure (a pipe included) is backslash-escaped."""
    one_line = _LINE_BREAKS.sub(" ", text).strip()
    return html.escape(_MARKDOWN_INLINE.sub(r"\\\1", one_line), quote=False)


def markdown_inline(text: str) -> str:
    """Free text (a question id, a judge's name, a note, a caption) as one paragraph line of
    Markdown that shows as written: as `markdown_cell`, and what would start a heading or a
    list at the line's start escaped too (leading spaces dropped: four make a code block)."""
    return _MARKDOWN_LINE_START.sub(lambda m: m.group(1) + "\\" if m.group(1)[0].isdigit() else "\\" + m.group(1), markdown_cell(text))


def fence(text: str) -> str:
    """A fenced code block that `text` cannot close early: the fence is longer than any run
    of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}text\n{text}\n{marks}"


def _markdown(title: str, banner: str | None, sections: list[Section], figure_dir: Path) -> str:
    lines = [f"# {markdown_inline(title)}", ""]
    figure_count = 0
    for section in sections:
        lines += [f"## {markdown_inline(section.title)}", ""]
        if banner:
            lines += [f"> **{markdown_inline(banner)}**", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [markdown_inline(block.text), ""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(markdown_cell(h) for h in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif isinstance(block, Preformatted):
                if block.caption:
                    lines += [f"*{markdown_inline(block.caption)}*", ""]
                lines += [fence(block.text), ""]
            elif isinstance(block, DataTable):
                lines += [markdown_inline(f"{block.caption} The table, {len(block.rows)} rows, is in report.html."), ""]
            elif isinstance(block, Figure):
                figure_count += 1
                name = f"figure-{figure_count}-{_anchor(section.title)}.svg"
                write_text_atomic(figure_dir / name, block.svg)
                caption = markdown_inline(block.caption)
                lines += [f"![{caption}]({figure_dir.name}/{name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _html_block(block: Any) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Preformatted):
        caption = f'<div class="caption">{html.escape(block.caption)}</div>' if block.caption else ""
        return f"{caption}<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, DataTable):
        return data_table_html(block)
    if isinstance(block, Figure):
        # The SVG comes from matplotlib, which escapes every text it draws.
        return f"<figure>{block.svg}<figcaption>{html.escape(block.caption)}</figcaption></figure>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _html(title: str, banner: str | None, sections: list[Section]) -> str:
    banner_html = f'<div class="banner">{html.escape(banner)}</div>' if banner else ""
    toc = "".join(f'<li><a href="#{_anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}{TABLE_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        banner_html,
        f"<nav><ul>{toc}</ul></nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{_anchor(section.title)}"><h2>{html.escape(section.title)}</h2>{banner_html}')
        parts += [_html_block(block) for block in section.blocks]
        parts.append("</section>")
    parts.append(f"<script>{TABLE_SCRIPT}</script></body></html>")
    return "\n".join(parts)


# Beside the report: the key of what it was written from (report_key). A cached rerun, which
# changes no result, then leaves the report as it is instead of spending seconds on
# statistics and figures to write the same thing again.
REPORT_KEY_FILE = "report.key"
# What a rerun changes without changing a result: its own finish time and call counts, and the
# record of the invocations before it (the report shows their sum, which the key holds).
RERUN_INFO = ("finished_at", "model_calls", "cached_calls")
RERUN_ARTIFACTS = (EARLIER_INVOCATIONS,)


def report_key(runs: list[RunData], findings: FindingsSet | None = None) -> str:
    """A hash of everything the report shows (each run's records, its run information less
    RERUN_INFO, the text of the findings it is set against) and of localnova's own code, which
    decides how it is shown."""
    content = [
        {
            "label": run.label,
            "info": {key: value for key, value in run.info.items() if key not in RERUN_INFO},
            "calls": [run.model_calls, run.calls_from_store],
            "answers": [dataclasses.asdict(answer) for answer in run.answers],
            "judgments": [dataclasses.asdict(judgment) for judgment in run.judgments],
            "artifacts": {name: value for name, value in run.artifacts.items() if name not in RERUN_ARTIFACTS},
            "eval_items": run.eval_items,
            "probe_timings": [dataclasses.asdict(timing) for timing in run.probe_timings],
        }
        for run in runs
    ]
    compared = {"name": findings.name, "text": findings.text} if findings else None
    return stable_hash({"runs": content, "findings": compared, "code": _code_fingerprint()})


@functools.cache
def _code_fingerprint() -> str:
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def write_report(runs: list[RunData], out_dir: Path, findings: str | None = None) -> tuple[Path, Path]:
    """Write report.md (with its figures in out_dir/figures) and a self-contained report.html
    for one or more runs, side by side, unless the ones there were written from the same
    records and findings by the same code. `findings` names the published findings to set the
    runs against (a bundled set, a file or 'none'); by default, those the first run's config
    names. Returns (md_path, html_path)."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path, key_path = out_dir / "report.md", out_dir / "report.html", out_dir / REPORT_KEY_FILE
    chosen, findings_note = report_findings(runs, findings)
    key = report_key(runs, chosen)
    written = [md_path, html_path, key_path]
    if all(path.is_file() for path in written) and (out_dir / "figures").is_dir() and key_path.read_text(encoding="utf-8") == key:
        return md_path, html_path
    key_path.unlink(missing_ok=True)  # a report stopped half-way is never taken as current
    studies = list(dict.fromkeys(str(run.info.get("study") or run.run_id) for run in runs))
    title = f"localnova report: {', '.join(studies)}"
    banner = _banner(runs)
    sections = build_sections(runs, chosen, findings_note)
    write_text_atomic(md_path, _markdown(title, banner, sections, out_dir / "figures"))
    write_text_atomic(html_path, _html(title, banner, sections))
    write_text_atomic(key_path, key)
    return md_path, html_path


def report_runs(specs: list[str], out_dir: Path | None = None, findings: str | None = None) -> tuple[Path, Path]:
    """What `localnova report RUN [RUN ...] [--out DIR] [--findings F]` does: each RUN is a study
    folder, optionally `folder:run_id` (default: its latest run). Without --out, a single run's
    report goes into its study folder and several runs' into `<first study folder>/comparison`."""
    runs = collect_runs(specs)
    if out_dir is None:
        out_dir = runs[0].study_dir if len(runs) == 1 else runs[0].study_dir / "comparison"
    return write_report(runs, Path(out_dir), findings)

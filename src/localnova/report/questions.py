"""The report's per-question view: every answer with its scores, the judges' reasons and the
passages it was given (and whether they held the source), as a table that report.html sorts
and filters in the browser, with no server; and each comparison's biggest wins and losses.

Built from the answer records (report/eval_log.py), so the table, the exported records and the
Inspect log say the same thing.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.report.eval_log import answer_records
from localnova.report.tables import Paragraph, Table

WINS_SHOWN = 3  # questions listed at each end of a comparison


@dataclass
class DataTable:
    """A table that report.html can sort (click a header) and filter (a text box, a select per
    column named in `filters`). `sort_keys[i][j]` is the value row i sorts by in column j (a
    number where the column holds numbers), else its text."""

    caption: str
    headers: list[str]
    rows: list[list[str]]
    sort_keys: list[list[Any]] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)  # headers of columns offered as a select


def _score(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _passages(record: dict[str, Any]) -> str:
    marks = {True: " (source)", False: "", None: ""}
    return "; ".join(f"{c.get('rank')}. {c.get('doc_id')}{marks[c.get('holds_source')]}" for c in record["retrieved"])


def question_table(runs: list[RunData], summaries: list[StudySummary], arm_order: list[str], model_order: list[str]) -> DataTable:
    """One row per answer: run (with several runs), model, arm, question, ground truth, answer,
    panel score, each judge's score and reason, the passages and whether one held the source."""
    several = len(runs) > 1
    headers = [*(["run"] if several else []), "model", "arm", "question", "ground truth", "answer", "panel score"]
    headers += ["judges: score, reason", "passages (rank. document)", "source retrieved"]
    rows, keys = [], []
    for run, summary in zip(runs, summaries, strict=True):
        records = answer_records(run, summary)
        records.sort(key=lambda r: (_index(model_order, r["model"]), _index(arm_order, r["arm"]), r["question_id"]))
        for record in records:
            judged = "; ".join(
                f"{j['judge']}: {_score(j['score']) or 'failed'}" + (f" ({j['reason']})" if j["reason"] else "")
                for j in record["judgments"]
            )
            source = {True: "yes", False: "no", None: ""}[record["source_retrieved"]]
            cells = [
                *([run.label] if several else []),
                record["model"],
                record["arm"],
                f"{record['question_id']}: {record['question']}",
                record["ground_truth"] or "",
                record["answer"],
                _score(record["panel_score"]),
                judged,
                _passages(record),
                source,
            ]
            sort = list(cells)
            sort[headers.index("panel score")] = record["panel_score"] if record["panel_score"] is not None else -1
            rows.append(cells)
            keys.append(sort)
    caption = (
        "Every answer, with its headline panel score, each judge's score and reason, and the passages it was given "
        "(marked where the passage's document holds the answer). Click a header to sort; type to filter."
    )
    return DataTable(caption, headers, rows, keys, filters=["model", "arm", "source retrieved"])


def _index(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def wins_and_losses(runs: list[RunData], summaries: list[StudySummary], arm_order: list[str]) -> list[Any]:
    """For each model and each arm against base, the questions where the arm's panel score rose
    most and fell most, with both answers: where a change in the mean comes from."""
    blocks: list[Any] = []
    rows = []
    for run, summary in zip(runs, summaries, strict=True):
        records = answer_records(run, summary)
        by_cell = {(r["model"], r["arm"], r["question_id"]): r for r in records}
        models = list(dict.fromkeys(r["model"] for r in records))
        for model in models:
            for arm in arm_order:
                if arm == "base":
                    continue
                pairs = []
                for (m, a, question_id), record in by_cell.items():
                    base = by_cell.get((model, "base", question_id))
                    if m != model or a != arm or base is None or record["panel_score"] is None or base["panel_score"] is None:
                        continue
                    pairs.append((record["panel_score"] - base["panel_score"], question_id, base, record))
                if not pairs:
                    continue
                pairs.sort(key=lambda pair: (-pair[0], pair[1]))
                wins = [p for p in pairs if p[0] > 0][:WINS_SHOWN]
                losses = [p for p in reversed(pairs) if p[0] < 0][:WINS_SHOWN]
                for kind, chosen in (("win", wins), ("loss", losses)):
                    for change, question_id, base, record in chosen:
                        label = f"{run.label} / {model}" if len(runs) > 1 else model
                        rows.append(
                            [
                                label,
                                f"{arm} vs base",
                                kind,
                                f"{change:+.2f}",
                                f"{question_id}: {record['question']}",
                                base["answer"],
                                record["answer"],
                            ]
                        )
    if not rows:
        return [Paragraph("No question was scored in both an arm and base.")]
    blocks.append(
        Paragraph(
            f"Per comparison with base, the {WINS_SHOWN} questions where the arm's panel score rose most (wins) and fell most "
            "(losses), with both answers."
        )
    )
    blocks.append(Table(["model", "comparison", "", "change (points)", "question", "base answer", "arm's answer"], rows))
    return blocks


# report.html's sorting and filtering: plain script inside the file, no server, no network.
TABLE_CSS = """
.datatable-tools { margin: .5em 0; } .datatable-tools input, .datatable-tools select { margin-right: .6em; }
table.datatable th { cursor: pointer; user-select: none; } table.datatable th[aria-sort=ascending]::after { content: " ▲"; }
table.datatable th[aria-sort=descending]::after { content: " ▼"; }
table.datatable td { max-width: 28em; }
"""
TABLE_SCRIPT = """
document.querySelectorAll('table.datatable').forEach(function (table) {
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var tools = table.previousElementSibling;
  function key(row, col) {
    var raw = row.cells[col].getAttribute('data-sort');
    var text = raw === null ? row.cells[col].textContent : raw;
    var number = Number(text);
    return text.trim() !== '' && !isNaN(number) ? number : text.toLowerCase();
  }
  headers.forEach(function (th, col) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      headers.forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col), y = key(b, col);
        var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  function applyFilters() {
    var text = tools.querySelector('input').value.toLowerCase();
    var selects = Array.prototype.slice.call(tools.querySelectorAll('select'));
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = row.textContent.toLowerCase().indexOf(text) !== -1 && selects.every(function (select) {
        return !select.value || row.cells[+select.getAttribute('data-col')].textContent === select.value;
      });
      row.style.display = ok ? '' : 'none';
      shown += ok ? 1 : 0;
    });
    tools.querySelector('.datatable-count').textContent = shown + ' of ' + body.rows.length + ' rows';
  }
  tools.querySelector('input').addEventListener('input', applyFilters);
  tools.querySelectorAll('select').forEach(function (select) { select.addEventListener('change', applyFilters); });
});
"""


def data_table_html(table: DataTable) -> str:
    """The table with its tools (a filter box, a select per filter column, a row count); cells
    escaped, each with its sort key where that differs from its text."""
    selects = []
    for name in table.filters:
        if name not in table.headers:
            continue
        column = table.headers.index(name)
        values = sorted({row[column] for row in table.rows if row[column]})
        options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
        label = html.escape(name)
        selects.append(f'<select data-col="{column}" aria-label="{label}"><option value="">all {label}</option>{options}</select>')
    tools = (
        '<div class="datatable-tools"><input type="search" placeholder="filter rows" aria-label="filter rows">'
        + "".join(selects)
        + f'<span class="datatable-count">{len(table.rows)} of {len(table.rows)} rows</span></div>'
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = []
    for index, row in enumerate(table.rows):
        keys = table.sort_keys[index] if index < len(table.sort_keys) else row
        cells = []
        for cell, sort in zip(row, keys, strict=True):
            attribute = f' data-sort="{html.escape(str(sort))}"' if str(sort) != cell else ""
            cells.append(f"<td{attribute}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<div class="caption">{html.escape(table.caption)}</div>'
    return f'{caption}{tools}<table class="datatable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'

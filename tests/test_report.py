"""The report and export read a store built here by hand, through the store's own API."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from localnova.backends.base import Backend
from localnova.errors import UserError
from localnova.report import judge_tables, tables
from localnova.report.collect import collect_run, parse_run_spec
from localnova.report.export import export_run
from localnova.report.render import SIMULATED_BANNER, fence, report_runs, write_report
from localnova.report.summarize import summarize_run
from localnova.store import JudgmentRecord, ProbeTiming, Store
from localnova.types import LATENCY_BATCH_WALL, ChatRequest, GenerationParams, GenerationResult

SCRIPT = "<script>alert(1)</script>"
QUESTIONS = {f"q{i}": (f"What is fact number {i}?", f"Fact {i} is that widgets weigh {i} kg.") for i in range(1, 7)}
MODELS = ("small", "large")
ARMS = ("base", "rag")


class FakeBackend(Backend):
    """Answers from a fixed function of the question; counts tokens as words."""

    def __init__(self, model: str, arm: str):
        self.identity = {"backend": "fake", "model": model, "arm": arm}
        self.model, self.arm = model, arm

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            question = request.messages[-1][1]
            number = re.search(r"number (\d+)", question).group(1)
            text = (
                SCRIPT
                if (self.model, self.arm, number) == ("small", "rag", "1")
                else f"{self.model} {self.arm} says widgets weigh {number} kg."
            )
            results.append(
                GenerationResult(
                    text=text,
                    input_tokens=len(question.split()) * 3,
                    output_tokens=len(text.split()),
                    latency_ms=100.0 * int(number) + (50 if self.arm == "rag" else 0),
                    latency_method=LATENCY_BATCH_WALL,
                    batch_size=len(requests),
                )
            )
        return results


def _score(judge: str, model: str, arm: str, question_number: int) -> float | None:
    if judge.startswith("judge-a") and model == "large" and question_number == 5:
        return None  # a parse failure: must be counted, never a 0
    bonus = (2 if arm == "rag" else 0) + (1 if model == "large" else 0)
    return float(min(10, 3 + bonus + question_number % 3 + (1 if judge.startswith("judge-a") else 0)))


def build_study(
    study_dir: Path,
    name: str,
    simulated: bool = False,
    judges: tuple[str, str] = ("judge-a", "judge-f1"),
    stored_ids: dict[str, str] | None = None,
    control_gate: dict | None = None,
) -> str:
    """A study of two models x two arms x six questions, judged by `judges` (the first behaves,
    the second rewards another question's truth as much as the truth). `stored_ids` renames
    question ids as the store holds them; `control_gate` goes into the stored config."""
    stored_ids = stored_ids or {}
    store = Store(study_dir)
    config = {
        "name": name,
        "seed": 0,
        "eval": {"bootstrap_samples": 200, **({"control_gate": control_gate} if control_gate else {})},
        "arms": list(ARMS),
        "models": [{"name": m, "backend": "simulated" if simulated else "transformers", "model": f"org/{m}"} for m in MODELS],
    }
    run_id = store.start_run(name, config, {"python": "3.x", "machine": "x86_64", "packages": {"numpy": "2.0"}})
    question_ids = sorted(QUESTIONS)
    for model in MODELS:
        for arm in ARMS:
            context = "Context: widgets.\n" if arm == "rag" else ""
            requests = [
                ChatRequest.from_messages(
                    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": context + QUESTIONS[q][0]}],
                    GenerationParams(max_new_tokens=32),
                )
                for q in question_ids
            ]
            keys, _ = store.generate_cached(FakeBackend(model, arm), requests, batch_size=4)
            retrieved = [[{"chunk_id": f"doc{q}#0", "doc_id": f"doc{q}", "score": 0.9}] if arm == "rag" else [] for q in question_ids]
            store.save_answers(model, arm, [stored_ids.get(q, q) for q in question_ids], keys, retrieved)
    judgments = []
    for judge, behaves in zip(judges, (True, False), strict=True):
        method = "parsed" if behaves else "token_f1"
        for model in MODELS:
            for arm in ARMS:
                for q in question_ids:
                    score = _score(judge, model, arm, int(q[1:]))
                    judgments.append(
                        JudgmentRecord(
                            judge,
                            model,
                            arm,
                            stored_ids.get(q, q),
                            "answer",
                            f"{judge}{model}{arm}{q}",
                            score,
                            method,
                            None if score is None else "ok",
                            "not json <b>at all</b>" if score is None else '{"score": 5}',
                            3 if score is None else 1,
                        )
                    )
        # judge-a behaves as the rubric asks; judge-f1 gives another question's truth what it
        # gives the truth itself, so it never ranks the truth first.
        control_scores = (9.0, 0.5, 1.5) if behaves else (10.0, 0.0, 10.0)
        for q in question_ids:
            for subject, score in zip(("control_ground_truth", "control_empty", "control_other"), control_scores, strict=True):
                stored = stored_ids.get(q, q)
                judgments.append(JudgmentRecord(judge, "", "", stored, subject, f"{judge}{subject}{q}", score, method, "ok", "{}", 1))
    store.save_judgments(judgments)
    eval_items = [{"question_id": stored_ids.get(q, q), "question": QUESTIONS[q][0], "answer": QUESTIONS[q][1]} for q in question_ids]
    store.save_artifact("eval_items", eval_items)
    store.save_artifact("loss_curve:small", [{"step": s, "loss": 2.0 / s} for s in range(1, 11)])
    store.save_artifact("retrieval", {"small/rag": {"recall@3": 0.83}, "large/rag": {"recall@3": 0.83}})
    store.save_artifact("cost_estimate", [{"item": "tokens", "estimate_usd": 0.12, "actual_usd": 0.1}])
    if simulated:
        store.save_artifact("simulated", True)
    store.finish_run(complete=True)
    store.close()
    return run_id


@pytest.fixture(scope="module")
def one_report(tmp_path_factory) -> tuple[str, str, Path]:
    root = tmp_path_factory.mktemp("report")
    build_study(root / "study", "local-demo")
    md_path, html_path = write_report([collect_run(root / "study")], root / "out")
    return md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8"), root


def test_report_files_are_written_and_html_is_self_contained(one_report):
    markdown, page, root = one_report
    assert (root / "out" / "report.md").is_file() and (root / "out" / "report.html").is_file()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "the html must not fetch anything"
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc\s*=", page)  # only the inline script that sorts tables
    assert page.count("<svg") >= 4
    # Markdown points at figure files that exist beside it.
    figure_links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.svg)\)", markdown)
    assert len(figure_links) >= 4 and all((root / "out" / link).is_file() for link in figure_links)
    assert "Fine-tuning loss" in page  # the loss_curve artifact became a figure


def test_model_text_is_escaped_in_html_and_fenced_in_markdown(one_report):
    markdown, page, _ = one_report
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Raw judge replies that failed to parse are shown too, escaped as well.
    assert "not json &lt;b&gt;at all&lt;/b&gt;" in page and "<b>at all" not in page
    assert f"```text\n{SCRIPT}\n```" in markdown
    # A fence inside the text cannot close the block early.
    assert fence("a\n```\nb").startswith("````text\n")


def test_summary_failures_and_controls_are_reported(one_report):
    markdown, page, root = one_report
    run = collect_run(root / "study")
    failures = {row[1]: row for row in judge_tables.failures_table([run]).rows}
    assert failures["judge-a"][3:6] == ["24", "2", "8.3%"]
    assert failures["judge-f1"][4] == "0"
    summary = summarize_run(run)
    verdicts = {row[1]: row[-2:] for row in judge_tables.controls_table([run], [summary]).rows}
    assert verdicts["judge-a"] == ["passes: truth first on 6 of 6 questions", "yes"]
    assert verdicts["judge-f1"] == ["fails: ranks the truth first on 0 of 6 questions (0%, needs 80%)", "no"]
    controls = {row[1]: row[6:9] for row in judge_tables.controls_table([run], [summary]).rows}
    assert controls["judge-a"] == ["6 of 6", "0 of 18", "1 of 6 (large / base)"]
    assert "Judge controls" in page and "on at least 80% of the questions" in page
    assert "Left out for failing their controls: judge-f1" in page
    # The failed judgments are left out of the mean, not counted as 0: judge-a on large/base
    # scored q1, q2, q3, q4, q6 = 6, 7, 5, 6, 5 (its failure on q5 is absent).
    judge_rows = [row for row in judge_tables.judge_means_table([run], [summary]).rows if row[1:4] == ["large", "base", "judge-a"]]
    assert judge_rows[0][4:7] == ["yes", "5", "1"] and judge_rows[0][7].startswith("5.80")
    f1_rows = [row for row in judge_tables.judge_means_table([run], [summary]).rows if row[3] == "judge-f1"]
    assert f1_rows[0][4] == "no: fails: ranks the truth first on 0 of 6 questions (0%, needs 80%)"
    assert "batch_wall_clock" in markdown and "recall@3" in markdown and "estimate_usd" in markdown
    # one headline judge: nothing to agree on
    assert "Fewer than two headline judges" in page and "p Wilcoxon (Holm)" in page


def test_two_runs_side_by_side_and_simulated_banner(tmp_path):
    local_id = build_study(tmp_path / "local", "local-study")
    bedrock_id = build_study(tmp_path / "bedrock", "bedrock-study", simulated=True)
    md_path, html_path = report_runs([str(tmp_path / "local"), f"{tmp_path / 'bedrock'}:{bedrock_id}"])
    assert md_path.parent == tmp_path / "local" / "comparison"
    markdown, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    summary_rows = [line for line in markdown.splitlines() if line.startswith(("| local-study", "| bedrock-study")) and "[" in line]
    assert any(line.startswith(f"| {local_id} | small | rag") for line in summary_rows)
    assert any(line.startswith(f"| {bedrock_id} | large | base") for line in summary_rows)
    # The banner names the simulated run and sits on every section.
    assert page.count(SIMULATED_BANNER) >= page.count("<section")
    assert bedrock_id in page.split(SIMULATED_BANNER, 1)[1].split("</div>", 1)[0]
    assert page.count("<svg") >= 4 and f"{local_id} / small" in page


def test_no_banner_when_not_simulated(one_report):
    markdown, page, _ = one_report
    assert SIMULATED_BANNER not in page and SIMULATED_BANNER not in markdown


def test_export_csv_and_parquet_round_trip(tmp_path):
    run_id = build_study(tmp_path / "study", "export-study")
    answers_csv, judgments_csv = export_run(tmp_path / "study", fmt="csv", out_dir=tmp_path / "csv")
    with answers_csv.open(encoding="utf-8", newline="") as handle:
        answers = list(csv.DictReader(handle))
    with judgments_csv.open(encoding="utf-8", newline="") as handle:
        judgments = list(csv.DictReader(handle))
    assert len(answers) == len(MODELS) * len(ARMS) * len(QUESTIONS)
    assert len(judgments) == 2 * (len(answers) + 3 * len(QUESTIONS))
    scripted = [row for row in answers if row["answer"] == SCRIPT]
    assert len(scripted) == 1 and scripted[0]["retrieved_chunk_ids"] == '["docq1#0"]' and scripted[0]["run_id"] == run_id
    failed = [row for row in judgments if row["failed"] == "True"]
    assert len(failed) == 2 and all(row["score"] == "" for row in failed)

    pq = pytest.importorskip("pyarrow.parquet")
    answers_pq, judgments_pq = export_run(tmp_path / "study", run_id=run_id, fmt="parquet", out_dir=tmp_path / "pq")
    answer_table = pq.read_table(answers_pq).to_pylist()
    judgment_table = pq.read_table(judgments_pq).to_pylist()
    assert len(answer_table) == len(answers) and len(judgment_table) == len(judgments)
    row = next(r for r in answer_table if r["answer"] == SCRIPT)
    assert row["retrieved_chunk_ids"] == ["docq1#0"] and row["latency_ms"] == 150.0
    assert sum(r["score"] is None for r in judgment_table) == 2


def test_collect_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        collect_run(tmp_path / "missing")
    build_study(tmp_path / "study", "errs")
    with pytest.raises(UserError, match="no run 'nope'"):
        collect_run(tmp_path / "study", "nope")
    with pytest.raises(UserError, match="expected csv, parquet, records, inspect"):
        export_run(tmp_path / "study", fmt="xlsx")
    assert parse_run_spec(f"{tmp_path / 'study'}:abc") == (tmp_path / "study", "abc")
    assert parse_run_spec(str(tmp_path / "study")) == (tmp_path / "study", None)


def test_markdown_cells_and_paragraphs_cannot_inject_html(tmp_path):
    from localnova.report import render

    hostile = "<script>alert(1)</script> a|b \\| c"
    sections = [tables.Section("S", [tables.Paragraph(f"model {hostile}"), tables.Table(["model"], [[hostile]])])]
    markdown = render._markdown("t", None, sections, tmp_path)
    assert "<script>" not in markdown
    assert "model &lt;script&gt;alert(1)&lt;/script&gt; a\\|b \\\\\\| c" in markdown
    # in a cell the pipe is escaped too, and a backslash cannot undo that escape
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; a\\|b \\\\\\| c |" in markdown


def _markdown_table(markdown: str, section: str) -> list[list[str]]:
    """The rows (header first) of the first table under `## section`."""
    lines = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_every_number_of_the_summary_table_is_the_summary_computed_from_the_store(one_report):
    from localnova.report.render import markdown_cell

    markdown, _, root = one_report
    summary = summarize_run(collect_run(root / "study"))
    header, *rows = _markdown_table(markdown, "Summary")
    assert header[:4] == ["run", "model", "arm", "questions"]
    versus_base = {(c.model, c.arm_b): c for c in summary.comparisons if c.arm_a == "base"}
    assert len(rows) == len(summary.panel_cells) == 4
    for row, cell in zip(rows, summary.panel_cells, strict=True):
        questions = str(cell.n_questions) if cell.n_questions == cell.n_answers else f"{cell.n_questions} of {cell.n_answers}"
        assert row[1:4] == [cell.model, cell.arm, questions]
        assert row[4] == markdown_cell(f"{cell.mean:.2f} [{cell.low:.2f}, {cell.high:.2f}]")
        if cell.arm == "base":
            assert row[5:] == ["(reference)", "(reference)", "", "", ""]
            continue
        assert row[5] == markdown_cell(f"{cell.diff_vs_base:+.2f} [{cell.diff_vs_base_low:+.2f}, {cell.diff_vs_base_high:+.2f}]")
        assert row[6] == markdown_cell(f"{cell.pct_vs_base:+.1f}% [{cell.pct_vs_base_low:+.1f}, {cell.pct_vs_base_high:+.1f}]")
        # 6 questions, 2 comparisons: a sign-flip test needs 2 / 2**k <= 0.025, k >= 7 questions
        assert cell.detectable_diff == math.inf and row[7] == "none: 80% power is out of reach"
        test = versus_base[(cell.model, cell.arm)]
        for shown, p in zip(row[8:], (test.wilcoxon_p_holm, test.permutation_p_holm), strict=True):
            assert shown == ("&lt;0.001" if p < 0.001 else f"{p:.3f}")
    # the headline is judge-a alone (judge-f1 fails its controls); on the large model judge-a
    # failed q5 in both arms, so q5 leaves every figure of that model: the level of each arm
    # and the % change are over the same five questions
    judgments = collect_run(root / "study").judgments
    for model, questions in (("small", [f"q{i}" for i in range(1, 7)]), ("large", ["q1", "q2", "q3", "q4", "q6"])):
        by_hand = {(j.arm, j.question_id): j.score for j in judgments if (j.judge, j.subject, j.model) == ("judge-a", "answer", model)}
        base, rag = (sum(by_hand[(arm, q)] for q in questions) / len(questions) for arm in ("base", "rag"))
        base_cell, rag_cell = (next(c for c in summary.panel_cells if (c.model, c.arm) == (model, arm)) for arm in ("base", "rag"))
        assert (base_cell.mean, rag_cell.mean, rag_cell.n_questions) == (pytest.approx(base), pytest.approx(rag), len(questions))
        assert rag_cell.pct_vs_base == pytest.approx(100 * (rag - base) / base)


def test_readme_table_comes_from_the_store(one_report, capsys):
    from localnova.cli import main
    from localnova.report.render import markdown_cell
    from localnova.report.tables import SUMMARY_HEADERS

    _, _, root = one_report
    assert main(["report", str(root / "study"), "--readme"]) == 0
    printed = capsys.readouterr().out
    # the summary table, then (tests/test_reproduction.py) the Reproduction rows
    comment, blank, note, _, clustering, _, header, rule, *rows = printed.split("\n\nSet against the findings of", 1)[0].splitlines()
    assert comment.startswith(f"<!-- generated by `localnova report {root / 'study'} --readme` from run local-demo-")
    assert note.startswith("Headline panel: judge-a.") and header == "| " + " | ".join(markdown_cell(h) for h in SUMMARY_HEADERS) + " |"
    # this store recorded no source documents: the README says its questions count as independent
    assert clustering.endswith("questions treated as independent: the eval set records no source document for them.")
    summary = summarize_run(collect_run(root / "study"))
    assert [row.split(" | ")[3] for row in rows] == [
        markdown_cell(f"{c.mean:.2f} [{c.low:.2f}, {c.high:.2f}]") for c in summary.panel_cells
    ]
    assert not (root / "study" / "report.md").exists()  # it only prints
    assert main(["report", str(root / "study"), str(root / "study"), "--readme"]) == 2


def test_readme_carries_the_generated_demo_table():
    from localnova.report.render import markdown_cell
    from localnova.report.tables import SUMMARY_HEADERS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- generated by `localnova report runs/demo --readme`", 1)[1].split("Set against the findings of", 1)[0]
    table = next(part for part in block.split("\n\n") if part.startswith("| model |")).splitlines()
    assert table[0] == "| " + " | ".join(markdown_cell(h) for h in SUMMARY_HEADERS) + " |" and table[1] == "|" + "---|" * len(
        SUMMARY_HEADERS
    )
    assert [row.split(" | ")[1] for row in table[2:]] == ["base", "rag", "ft", "ft_rag"]
    assert all(row.count(" | ") == len(SUMMARY_HEADERS) - 1 for row in table[2:])


def test_the_report_is_written_again_only_when_what_it_shows_changed(one_report, tmp_path):
    """A rerun that changed no result (only its finish time and call counts) keeps the report;
    a changed score, a missing key file or a missing report writes it again."""
    import dataclasses

    from localnova.report.render import REPORT_KEY_FILE
    from localnova.store import EARLIER_INVOCATIONS

    _, _, root = one_report
    run = collect_run(root / "study")
    out = tmp_path / "out"
    md_path, html_path = write_report([run], out)
    (out / "report.md").write_text("left as it was", encoding="utf-8")  # a rewrite would replace this
    # the store keeps the first invocation's calls when a rerun opens the run again (Store.start_run)
    first = {key: run.info[key] for key in ("status", "finished_at", "model_calls", "cached_calls")}
    again = {**run.info, "finished_at": "2099-01-01T00:00:00+00:00", "model_calls": 0, "cached_calls": 99}
    rerun = dataclasses.replace(run, info=again, artifacts={**run.artifacts, EARLIER_INVOCATIONS: [first]})
    write_report([rerun], out)
    assert md_path.read_text(encoding="utf-8") == "left as it was"

    changed = dataclasses.replace(
        run, judgments=[dataclasses.replace(run.judgments[0], score=(run.judgments[0].score or 0) + 1)] + run.judgments[1:]
    )
    write_report([changed], out)
    assert md_path.read_text(encoding="utf-8") != "left as it was"

    for missing in (out / REPORT_KEY_FILE, html_path):
        md_path.write_text("left as it was", encoding="utf-8")
        missing.unlink()
        write_report([changed], out)
        assert md_path.read_text(encoding="utf-8") != "left as it was" and html_path.is_file()

    # a rerun that measured the latency probe again changed what the report shows
    md_path.write_text("left as it was", encoding="utf-8")
    write_report([dataclasses.replace(changed, probe_timings=PROBE_TIMINGS)], out)
    assert md_path.read_text(encoding="utf-8") != "left as it was"


# The latency probe of the small model: rag 50 ms slower than base on each of 3 questions.
PROBE_TIMINGS = [
    ProbeTiming("small", arm, f"q{q}", 0, position, "k", 100.0 * q + (50.0 if arm == "rag" else 0.0), 10, 5)
    for q in (1, 2, 3)
    for position, arm in enumerate(("base", "rag") if q % 2 else ("rag", "base"))
]


def test_the_latency_comparison_comes_from_the_probe_and_says_so(one_report, tmp_path):
    import dataclasses

    _, _, root = one_report
    run = dataclasses.replace(collect_run(root / "study"), probe_timings=PROBE_TIMINGS)
    md_path, _ = write_report([run], tmp_path / "out")
    latency = md_path.read_text(encoding="utf-8").split("## Latency and tokens", 1)[1].split("\n## ", 1)[0]
    assert "Latency by arm, from the interleaved probe" in latency
    # base means 100, 200, 300 ms (mean 200); rag 150, 250, 350 (mean 250): +25.0%
    assert "| small | rag | 3 | 3 | 250 |" in latency and "+25.0%" in latency
    # the batched times stay, as throughput, and are no longer compared between arms
    assert "Throughput: the batched run's time per answer" in latency and "batched median ms" in latency
    assert "median % vs base" not in latency and "in the interleaved probe (one request at a time)" in latency
    # a run without a probe says that it has no latency comparison
    md_path, _ = write_report([collect_run(root / "study")], tmp_path / "without")
    assert "no latency probe in this run, so no latency comparison between arms" in md_path.read_text(encoding="utf-8")


def _outside_fences(markdown: str) -> list[str]:
    lines, fenced = [], None
    for line in markdown.splitlines():
        marks = re.match(r"^(`{3,})", line)
        if marks and (fenced is None or marks.group(1) == fenced):
            fenced = None if fenced else marks.group(1)
            continue
        if fenced is None:
            lines.append(line)
    return lines


def test_free_text_in_question_ids_and_judge_names_cannot_write_markdown_structure(tmp_path):
    """Before: a newline in a question id reached report.md's paragraphs and captions as it
    was, and what followed it became a heading."""
    build_study(
        tmp_path / "study",
        "hostile",
        judges=("judge-a\n# injected judge heading", "judge-f1 [click](http://example.com) *loud* _quiet_ snake_case"),
        stored_ids={"q1": "q1\n# injected question heading", "q5": "q5\r\n1. injected list item"},
    )
    md_path, html_path = write_report([collect_run(tmp_path / "study")], tmp_path / "out")
    lines = _outside_fences(md_path.read_text(encoding="utf-8"))
    headings = [line for line in lines if line.startswith("#")]
    assert headings[0] == "# localnova report: hostile" and all(line.startswith("## ") for line in headings[1:])
    assert not any("injected" in line for line in headings)
    assert not any(re.match(r"\s*\d+[.)]\s", line) for line in lines)  # no list item either
    text = "\n".join(lines)
    assert "q1 # injected question heading" in text and "q5 1. injected list item" in text
    assert "[click](http" not in text and "\\[click\\](http://example.com) \\*loud\\* \\_quiet\\_ snake_case" in text
    assert "judge-a # injected judge heading" in text
    page = html_path.read_text(encoding="utf-8")
    assert "judge-f1 [click](http://example.com) *loud* _quiet_ snake_case" in page  # HTML shows it as written


def test_a_run_stored_with_the_old_absolute_gate_still_summarises(tmp_path):
    build_study(tmp_path / "study", "old-gate", control_gate={"truth_min": 7.0, "empty_max": 2.0, "other_max": 3.0})
    run = collect_run(tmp_path / "study")
    summary = summarize_run(run)
    assert summary.settings["headline_judges"] == ["judge-a"] and [c.passed for c in summary.controls] == [True, False]
    md_path, _ = write_report([run], tmp_path / "out")
    markdown = md_path.read_text(encoding="utf-8")
    assert "was configured with absolute thresholds (truth_min 7.0, empty_max 2.0, other_max 3.0)" in markdown

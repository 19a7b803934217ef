"""Export one run's answers and judgments as flat tables (CSV or Parquet) for analysis elsewhere.

answers: one row per model x arm x question, with the prompt sent, the answer text, tokens,
latency and the retrieved chunk ids. judgments: one row per judge x subject, controls
included, failures with an empty score (never 0).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.files import atomic_path, write_jsonl_atomic, write_text_atomic
from localnova.report.collect import RunData, collect_run
from localnova.report.eval_log import answer_records, inspect_logs
from localnova.report.summarize import summarize_run

ANSWER_COLUMNS = (
    "run_id",
    "model",
    "arm",
    "question_id",
    "question",
    "ground_truth",
    "prompt",
    "generation_params",
    "answer",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "latency_method",
    "batch_size",
    "server_latency_ms",
    "finish_reason",
    "retrieved",
    "retrieved_chunk_ids",
    "generation_key",
)
JUDGMENT_COLUMNS = (
    "run_id",
    "judge",
    "model",
    "arm",
    "question_id",
    "subject",
    "score",
    "failed",
    "method",
    "reason",
    "raw_text",
    "attempts",
    "content_key",
)
# Columns that hold lists or mappings: JSON text in a CSV cell or a parquet string column
# (retrieved_chunk_ids is a real list column in parquet).
NESTED_COLUMNS = ("prompt", "generation_params", "retrieved")


def answer_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per answer, with the question and ground truth beside it: the one row shape of
    answers.jsonl and of the exported tables."""
    rows = []
    for answer in run.answers:
        rows.append(
            {
                "run_id": run.run_id,
                "model": answer.model,
                "arm": answer.arm,
                "question_id": answer.question_id,
                "question": run.question_text(answer),
                "ground_truth": run.ground_truth(answer.question_id),
                "prompt": answer.request.get("messages", []),
                "generation_params": answer.request.get("params", {}),
                "answer": answer.result.text,
                "input_tokens": answer.result.input_tokens,
                "output_tokens": answer.result.output_tokens,
                "latency_ms": answer.result.latency_ms,
                "latency_method": answer.result.latency_method,
                "batch_size": answer.result.batch_size,
                "server_latency_ms": answer.result.server_latency_ms,
                "finish_reason": answer.result.finish_reason,
                "retrieved": answer.retrieved,
                "retrieved_chunk_ids": [str(chunk.get("chunk_id")) for chunk in answer.retrieved],
                "generation_key": answer.generation_key,
            }
        )
    return rows


def write_answers_jsonl(run: RunData, path: Path) -> int:
    """answers.jsonl: one JSON object per answer; returns how many were written."""
    return write_jsonl_atomic(path, answer_rows(run))


def judgment_rows(run: RunData) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.run_id,
            "judge": j.judge,
            "model": j.model,
            "arm": j.arm,
            "question_id": j.question_id,
            "subject": j.subject,
            "score": j.score,
            "failed": j.score is None,
            "method": j.method,
            "reason": j.reason,
            "raw_text": j.raw_text,
            "attempts": j.attempts,
            "content_key": j.content_key,
        }
        for j in run.judgments
    ]


def _write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            # JSON keeps lists and ids that contain commas or semicolons intact in one cell.
            for column in (*NESTED_COLUMNS, "retrieved_chunk_ids"):
                if column in flat:
                    flat[column] = json.dumps(flat[column], ensure_ascii=False)
            writer.writerow({key: "" if value is None else value for key, value in flat.items()})


def _write_parquet(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("export to parquet needs the package 'pyarrow': pip install pyarrow") from None
    columns_data = {
        name: [json.dumps(row[name], ensure_ascii=False) if name in NESTED_COLUMNS else row.get(name) for row in rows] for name in columns
    }
    types = {
        "score": pa.float64(),
        "server_latency_ms": pa.float64(),
        "latency_ms": pa.float64(),
        "temperature": pa.float64(),
        "retrieved_chunk_ids": pa.list_(pa.string()),
    }
    arrays = {name: pa.array(values, type=types.get(name)) for name, values in columns_data.items()}
    with atomic_path(path) as temporary:
        pq.write_table(pa.table(arrays), temporary)


EXPORT_FORMATS = ("csv", "parquet", "records", "inspect")


def export_run(study_dir: Path, run_id: str | None = None, fmt: str = "csv", out_dir: Path | None = None) -> list[Path]:
    """Export one run (the latest when run_id is None) into out_dir (default: <study_dir>/export):
    csv or parquet, `<run_id>-answers.<fmt>` and `<run_id>-judgments.<fmt>`; records, the answer
    records of report/eval_log.py as `<run_id>-records.jsonl`; inspect, Inspect AI's eval log,
    `<run_id>-<model>.json` per answer model. Returns the paths written."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"export format {fmt!r}: expected {', '.join(EXPORT_FORMATS)}")
    run = collect_run(Path(study_dir), run_id)
    out_dir = Path(out_dir) if out_dir is not None else Path(study_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "records":
        path = out_dir / f"{run.run_id}-records.jsonl"
        write_jsonl_atomic(path, answer_records(run, summarize_run(run)))
        return [path]
    if fmt == "inspect":
        paths = []
        for model, log in inspect_logs(run, summarize_run(run)).items():
            path = out_dir / f"{run.run_id}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}.json"
            write_text_atomic(path, json.dumps(log, indent=1, ensure_ascii=False))
            paths.append(path)
        return paths
    write = _write_csv if fmt == "csv" else _write_parquet
    paths = []
    for name, rows, columns in (("answers", answer_rows(run), ANSWER_COLUMNS), ("judgments", judgment_rows(run), JUDGMENT_COLUMNS)):
        path = out_dir / f"{run.run_id}-{name}.{fmt}"
        write(rows, columns, path)
        paths.append(path)
    return paths

"""Export one run's answers and judgments as flat tables (CSV or Parquet) for analysis elsewhere.

answers: one row per model x arm x question, with the prompt sent, the answer text, tokens,
latency and the retrieved chunk ids. judgments: one row per judge x subject, controls
included, failures with an empty score (never 0).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.report.collect import RunData, collect_run

ANSWER_COLUMNS = (
    "run_id", "model", "arm", "question_id", "prompt_json", "answer", "input_tokens", "output_tokens",
    "latency_ms", "latency_method", "batch_size", "server_latency_ms", "finish_reason",
    "retrieved_chunk_ids", "max_new_tokens", "temperature", "generation_key",
)
JUDGMENT_COLUMNS = (
    "run_id", "judge", "model", "arm", "question_id", "subject", "score", "failed", "method",
    "reason", "raw_text", "attempts", "content_key",
)


def answer_rows(run: RunData) -> list[dict[str, Any]]:
    rows = []
    for answer in run.answers:
        params = answer.request.get("params", {})
        rows.append({
            "run_id": run.run_id, "model": answer.model, "arm": answer.arm, "question_id": answer.question_id,
            "prompt_json": json.dumps(answer.request.get("messages", []), ensure_ascii=False),
            "answer": answer.result.text,
            "input_tokens": answer.result.input_tokens, "output_tokens": answer.result.output_tokens,
            "latency_ms": answer.result.latency_ms, "latency_method": answer.result.latency_method,
            "batch_size": answer.result.batch_size, "server_latency_ms": answer.result.server_latency_ms,
            "finish_reason": answer.result.finish_reason,
            "retrieved_chunk_ids": [str(chunk.get("chunk_id")) for chunk in answer.retrieved],
            "max_new_tokens": params.get("max_new_tokens"), "temperature": params.get("temperature"),
            "generation_key": answer.generation_key,
        })
    return rows


def judgment_rows(run: RunData) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.run_id, "judge": j.judge, "model": j.model, "arm": j.arm, "question_id": j.question_id,
            "subject": j.subject, "score": j.score, "failed": j.score is None, "method": j.method,
            "reason": j.reason, "raw_text": j.raw_text, "attempts": j.attempts, "content_key": j.content_key,
        }
        for j in run.judgments
    ]


def _write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            if isinstance(flat.get("retrieved_chunk_ids"), list):
                # A JSON list keeps ids that contain commas or semicolons intact.
                flat["retrieved_chunk_ids"] = json.dumps(flat["retrieved_chunk_ids"])
            writer.writerow({key: "" if value is None else value for key, value in flat.items()})


def _write_parquet(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("export to parquet needs the package 'pyarrow': pip install pyarrow") from None
    columns_data = {name: [row.get(name) for row in rows] for name in columns}
    types = {"score": pa.float64(), "server_latency_ms": pa.float64(), "latency_ms": pa.float64(),
             "temperature": pa.float64(), "retrieved_chunk_ids": pa.list_(pa.string())}
    arrays = {name: pa.array(values, type=types.get(name)) for name, values in columns_data.items()}
    pq.write_table(pa.table(arrays), path)


def export_run(study_dir: Path, run_id: str | None = None, fmt: str = "csv", out_dir: Path | None = None) -> list[Path]:
    """Write `<run_id>-answers.<fmt>` and `<run_id>-judgments.<fmt>` for one run (the latest
    when run_id is None) into out_dir (default: <study_dir>/export). Returns the two paths."""
    if fmt not in ("csv", "parquet"):
        raise UserError(f"export format {fmt!r}: expected csv or parquet")
    run = collect_run(Path(study_dir), run_id)
    out_dir = Path(out_dir) if out_dir is not None else Path(study_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    write = _write_csv if fmt == "csv" else _write_parquet
    paths = []
    for name, rows, columns in (("answers", answer_rows(run), ANSWER_COLUMNS), ("judgments", judgment_rows(run), JUDGMENT_COLUMNS)):
        path = out_dir / f"{run.run_id}-{name}.{fmt}"
        write(rows, columns, path)
        paths.append(path)
    return paths

"""The eval log others read: one record per answer in a documented, versioned schema, and the
same records as Inspect AI's eval log (`inspect view` opens it).

The answer record (`localnova.answer-record`, version 1; docs/eval-log.md describes each
field) holds what one model answered in one arm to one question, with everything needed to
read it without the store: the question and its ground truth, the prompt sent, the answer,
tokens and latency, the retrieved passages (and whether each came from a document that holds
the answer), every judge's score and reason, and the headline panel's score.

The Inspect log is written as Inspect's JSON log format (version 2) by hand, with no import of
inspect_ai: one log per answer model (Inspect's log is per task and model), one sample per
question and arm, each judge a scorer and the panel score one more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from localnova.evaluate.judges import SUBJECT_ANSWER
from localnova.evaluate.panel import answer_scores, cell_scores
from localnova.evaluate.summary import StudySummary
from localnova.report.collect import RunData
from localnova.types import stable_hash

RECORD_SCHEMA = "localnova.answer-record"
RECORD_VERSION = 1
INSPECT_LOG_VERSION = 2  # the version of Inspect's JSON log format written here
PANEL_SCORER = "panel"  # the Inspect scorer that holds the headline panel's score


def answer_records(run: RunData, summary: StudySummary) -> list[dict[str, Any]]:
    """One record per answer of the run, in the store's order (model, arm, question)."""
    headline = list(summary.settings.get("headline_judges") or [])
    panel = {cell: answer_scores(scores) for cell, scores in cell_scores(run.score_rows, headline).items()}
    judged: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for judgment in run.judgments:
        if judgment.subject != SUBJECT_ANSWER:
            continue
        judged.setdefault((judgment.model, judgment.arm, judgment.question_id), []).append(
            {
                "judge": judgment.judge,
                "score": judgment.score,
                "failed": judgment.score is None,
                "reason": judgment.reason,
                "method": judgment.method,
                "attempts": judgment.attempts,
                "headline": judgment.judge in headline,
            }
        )
    records = []
    for answer in run.answers:
        item = run.eval_items.get(answer.question_id) or {}
        sources = set(item.get("doc_ids") or [])
        retrieved = [
            {**chunk, "holds_source": (str(chunk.get("doc_id")) in sources) if sources else None, "rank": rank}
            for rank, chunk in enumerate(answer.retrieved, 1)
        ]
        score = panel.get((answer.model, answer.arm), {}).get(answer.question_id)
        records.append(
            {
                "schema": RECORD_SCHEMA,
                "version": RECORD_VERSION,
                "run_id": run.run_id,
                "study": run.info.get("study"),
                "model": answer.model,
                "arm": answer.arm,
                "question_id": answer.question_id,
                "question": run.question_text(answer),
                "ground_truth": run.ground_truth(answer.question_id),
                "source_doc_ids": sorted(sources),
                "prompt": answer.request.get("messages", []),
                "generation_params": answer.request.get("params", {}),
                "answer": answer.result.text,
                "finish_reason": answer.result.finish_reason,
                "input_tokens": answer.result.input_tokens,
                "output_tokens": answer.result.output_tokens,
                "latency_ms": answer.result.latency_ms,
                "latency_method": answer.result.latency_method,
                "retrieved": retrieved,
                "source_retrieved": any(chunk["holds_source"] for chunk in retrieved) if sources and retrieved else None,
                "judgments": judged.get((answer.model, answer.arm, answer.question_id), []),
                "panel_score": None if score is None or math.isnan(score) else round(score, 4),
                "generation_key": answer.generation_key,
            }
        )
    return records


def _message(role: str, content: str, key: str) -> dict[str, Any]:
    # Inspect's messages carry an id; a stable one keeps a rewritten log the same bytes
    return {"id": stable_hash([key, role, content], 22), "content": content, "role": role}


def _sample(record: dict[str, Any], model_name: str) -> dict[str, Any]:
    key = f"{record['model']}/{record['arm']}/{record['question_id']}"
    messages = [_message(m.get("role", "user"), m.get("content", ""), key) for m in record["prompt"]]
    answer = {**_message("assistant", record["answer"], key), "source": "generate", "model": model_name}
    # a failed judgment has no score (never 0): it is named in the metadata instead
    scores = {
        j["judge"]: {"value": j["score"], "explanation": j["reason"], "history": []} for j in record["judgments"] if j["score"] is not None
    }
    if record["panel_score"] is not None:
        scores[PANEL_SCORER] = {"value": record["panel_score"], "explanation": "mean of the headline judges' scores", "history": []}
    metadata = {
        key: record[key] for key in ("arm", "model", "question_id", "retrieved", "source_retrieved", "source_doc_ids", "latency_ms")
    }
    metadata["failed_judges"] = [j["judge"] for j in record["judgments"] if j["score"] is None]
    return {
        "id": f"{record['question_id']}/{record['arm']}",
        "epoch": 1,
        "input": record["question"],
        "target": record["ground_truth"] or "",
        "messages": [*messages, answer],
        "output": {
            "model": model_name,
            "choices": [{"message": answer, "stop_reason": "max_tokens" if record["finish_reason"] == "length" else "stop"}],
            "completion": record["answer"],
            "usage": {
                "input_tokens": record["input_tokens"],
                "output_tokens": record["output_tokens"],
                "total_tokens": record["input_tokens"] + record["output_tokens"],
            },
        },
        "scores": scores,
        "metadata": metadata,
        "store": {},
        "events": [],
        "model_usage": {},
        "attachments": {},
    }


def _mean_metric(name: str, values: Iterable[float | None]) -> dict[str, Any]:
    found = [value for value in values if value is not None]
    return {
        "name": name,
        "scorer": name,
        "params": {},
        "metrics": {"mean": {"name": "mean", "value": sum(found) / len(found) if found else 0.0, "params": {}}},
    }


def inspect_logs(run: RunData, summary: StudySummary) -> dict[str, dict[str, Any]]:
    """Inspect AI eval logs of the run, one per answer model: model name -> the log as JSON data."""
    records = answer_records(run, summary)
    created = str(run.info.get("started_at") or "")
    judges = list(dict.fromkeys(j["judge"] for record in records for j in record["judgments"]))
    logs = {}
    for model in dict.fromkeys(record["model"] for record in records):
        mine = [record for record in records if record["model"] == model]
        model_name = f"localnova/{model}"
        scores = [_mean_metric(judge, (j["score"] for r in mine for j in r["judgments"] if j["judge"] == judge)) for judge in judges]
        scores.append(_mean_metric(PANEL_SCORER, (r["panel_score"] for r in mine)))
        logs[model] = {
            "version": INSPECT_LOG_VERSION,
            "status": "success" if run.info.get("status") == "complete" else "error",
            "eval": {
                "eval_id": stable_hash([run.run_id, model], 22),
                "run_id": run.run_id,
                "created": created,
                "task": str(run.info.get("study") or run.run_id),
                "task_id": run.run_id,
                "task_version": 0,
                "task_attribs": {},
                "task_args": {},
                "task_args_passed": {},
                "solver_args_passed": {},
                "dataset": {"name": "eval", "samples": len({r["question_id"] for r in mine})},
                "model": model_name,
                "model_generate_config": {},
                "model_args": {},
                "config": {},
                "packages": {},
                "metadata": {
                    "localnova_record_schema": f"{RECORD_SCHEMA}/{RECORD_VERSION}",
                    "arms": list(dict.fromkeys(r["arm"] for r in mine)),
                },
            },
            "plan": {"name": "plan", "steps": [], "config": {}},
            "results": {"total_samples": len(mine), "completed_samples": len(mine), "scores": scores},
            "stats": {"started_at": run.info.get("started_at") or "", "completed_at": run.info.get("finished_at") or "", "model_usage": {}},
            "samples": [_sample(record, model_name) for record in mine],
        }
    return logs

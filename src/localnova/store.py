"""The results store: one SQLite database (WAL) per study folder, one schema for every path.

Every model call goes through `generate_cached`, keyed by a content hash of everything that
determines its result (the backend's identity: backend, model id and revision or file hash,
adapter hash; the full request: messages and generation parameters). Answers and judgments
are stored per run and point at those calls. Each result is committed as soon as the backend
hands it over (a whole batch for a local model, each call for Bedrock), so a process killed at
any moment loses at most what is in flight, and the same command run again makes exactly the
calls that are missing. The latency probe, which sends answers' requests again on purpose to
time them, keeps its timings and a ledger of its paid calls in tables of its own
(store_probe.py); `generation_usage` counts both.

The database records its schema version (SQLite's user_version). A store this code cannot
read, older or newer, is refused when opened, with one line that names it and says what to
do, rather than failing later with "no such column".

Plain Python and sqlite3 only: no model code here.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import platform
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localnova import threads
from localnova.errors import PartialBatch, UserError
from localnova.store_probe import PROBE_TIMED, PROBE_WARM_UP, ProbeCall, ProbeTables, ProbeTiming
from localnova.store_schema import now_iso, open_schema
from localnova.types import ChatRequest, GenerationResult, stable_hash

if TYPE_CHECKING:
    from localnova.backends.base import Backend

# the latency probe's records live in store_probe.py and are the store's too: import them from here
__all__ = [
    "DB_NAME",
    "PROBE_TIMED",
    "PROBE_WARM_UP",
    "AnswerRecord",
    "JudgmentRecord",
    "ProbeCall",
    "ProbeTiming",
    "Store",
    "environment_info",
    "generation_key",
    "run_id_of",
]

DB_NAME = "store.sqlite"
# The artifact that keeps each earlier invocation of a run: its status, finish time and calls
# (the runs table holds the latest invocation's, and resets them when the run is opened again).
EARLIER_INVOCATIONS = "earlier_invocations"


def generation_key(backend_identity: dict[str, str], request: ChatRequest) -> str:
    return stable_hash({"backend": backend_identity, "request": request.to_dict()}, length=32)


def run_id_of(study: str, run_config: dict[str, Any]) -> str:
    """The id of the run this config defines (run_identity.run_identity): the same one on a rerun."""
    return f"{study}-{stable_hash(run_config, length=10)}"


@dataclass
class AnswerRecord:
    run_id: str
    model: str
    arm: str
    question_id: str
    generation_key: str
    retrieved: list[dict[str, Any]]
    request: dict[str, Any]
    result: GenerationResult


@dataclass
class JudgmentRecord:
    judge: str
    model: str
    arm: str
    question_id: str
    subject: str
    content_key: str
    score: float | None
    method: str
    reason: str | None
    raw_text: str | None
    attempts: int


class Store(ProbeTables):
    """The study's database. Open one per process; commits after every write batch. The
    latency probe's tables are read and written through ProbeTables (store_probe.py)."""

    def __init__(self, study_dir: Path):
        study_dir.mkdir(parents=True, exist_ok=True)
        self.path = study_dir / DB_NAME
        self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (not a power cut), which is what
        # resuming after kill -9 needs, at a fraction of FULL's fsync cost.
        self.connection.execute("PRAGMA synchronous=NORMAL")
        try:
            open_schema(self.connection, self.path)
        except UserError:
            self.connection.close()
            raise
        self.run_id: str | None = None
        # Whether calls count in the run's model_calls and cached_calls. `localnova judge` puts a
        # panel on a run later: its calls are its own (`calls_made`), not the run's.
        self.count_in_run = True
        self.calls_made = {"model_calls": 0, "cached_calls": 0}  # by this Store object, whatever count_in_run says
        self._environment: dict[str, Any] = {}  # the open run's, recorded if it makes a model call

    def close(self) -> None:
        self.connection.close()

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        """Run statements in one transaction: all of them land or none."""
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self.connection.execute(sql, params)

    # runs

    def start_run(self, study: str, config: dict[str, Any], environment: dict[str, Any]) -> str:
        """Open the run that this config defines. The same config gives the same run id, so a
        command run again after an interruption resumes that run instead of starting anew. The
        invocation that opened it before (finished, stopped or killed) is kept in the
        EARLIER_INVOCATIONS artifact with its calls, so no call is lost from the record. The
        run's environment is this invocation's only once it makes a model call (`finish_run`):
        a rerun answered from the store changes nothing the run measured, nor where."""
        run_id = run_id_of(study, config)
        existing = self.connection.execute(
            "SELECT status, finished_at, model_calls, cached_calls FROM runs WHERE run_id=?", (run_id,)
        ).fetchone()
        if existing is None:
            self._write(
                [
                    (
                        "INSERT INTO runs(run_id, study, config_json, environment_json, status, started_at) VALUES (?,?,?,?,?,?)",
                        (run_id, study, json.dumps(config, sort_keys=True), json.dumps(environment, sort_keys=True), "running", now_iso()),
                    )
                ]
            )
        else:
            status, finished_at, model_calls, cached_calls = existing
            earlier = self.artifacts(run_id).get(EARLIER_INVOCATIONS, [])
            earlier.append({"status": status, "finished_at": finished_at, "model_calls": model_calls, "cached_calls": cached_calls})
            self._write(
                [
                    ("UPDATE runs SET status='running', finished_at=NULL, model_calls=0, cached_calls=0 WHERE run_id=?", (run_id,)),
                    (
                        "INSERT OR REPLACE INTO artifacts(run_id, name, value_json) VALUES (?,?,?)",
                        (run_id, EARLIER_INVOCATIONS, json.dumps(earlier)),
                    ),
                ]
            )
        self.run_id = run_id
        self._environment = environment
        return run_id

    def finish_run(self, complete: bool) -> None:
        """Mark the run complete or not; an invocation that made model calls records its environment."""
        status = "complete" if complete else "incomplete"
        self._write(
            [
                ("UPDATE runs SET status=?, finished_at=? WHERE run_id=?", (status, now_iso(), self.run_id)),
                (
                    "UPDATE runs SET environment_json=? WHERE run_id=? AND model_calls > 0",
                    (json.dumps(self._environment, sort_keys=True), self.run_id),
                ),
            ]
        )

    def run_info(self, run_id: str | None = None) -> dict[str, Any]:
        row = self.connection.execute(
            "SELECT run_id, study, config_json, environment_json, status, started_at, finished_at, model_calls, cached_calls "
            "FROM runs WHERE run_id=?",
            (run_id or self.run_id,),
        ).fetchone()
        if row is None:
            raise KeyError(run_id)
        keys = ("run_id", "study", "config", "environment", "status", "started_at", "finished_at", "model_calls", "cached_calls")
        info = dict(zip(keys, row, strict=True))
        info["config"] = json.loads(info["config"])
        info["environment"] = json.loads(info["environment"])
        return info

    def run_ids(self) -> list[str]:
        return [row[0] for row in self.connection.execute("SELECT run_id FROM runs ORDER BY started_at, run_id")]

    # model calls

    def cached_results(self, keys: list[str]) -> dict[str, GenerationResult]:
        """The stored results of these keys that can be served again: a result whose backend
        said the generation failed (GenerationResult.failed) is kept for the record, never served."""
        found: dict[str, GenerationResult] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, result_json in self.connection.execute(f"SELECT key, result_json FROM generations WHERE key IN ({marks})", part):
                result = GenerationResult.from_dict(json.loads(result_json))
                if not result.failed:
                    found[key] = result
        return found

    def generate_cached(
        self, backend: "Backend", requests: list[ChatRequest], batch_size: int, progress=None, fresh: bool = False
    ) -> tuple[list[str], list[GenerationResult]]:
        """Answer `requests` from the store where it holds them, the rest through `backend` in
        batches of `batch_size`, committing each result as the backend hands it over
        (Backend.generate_each). Returns the generation keys and results in request order.
        With `fresh`, nothing is served from the store: every request is made again and its
        result replaces the stored one (the runner asks this for a judgment that failed before,
        so a rerun can mend it rather than replay it)."""
        keys = [generation_key(backend.identity, request) for request in requests]
        results: dict[str, GenerationResult] = {} if fresh else self.cached_results(list(dict.fromkeys(keys)))
        pending = [index for index, key in enumerate(keys) if key not in results]
        # Identical requests in one call are sent once.
        pending = list({keys[index]: index for index in pending}.values())
        cached_count = len(requests) - len(pending)
        if progress is not None:
            progress.update(cached_count)
        self._add_counts(model_calls=0, cached_calls=cached_count)
        backend_json = json.dumps(backend.identity, sort_keys=True)

        def commit(pairs: list[tuple[int, GenerationResult]]) -> None:
            statements = []
            for index, result in pairs:
                # a stored call that this one replaces (a failure made again) was paid for too
                statements.append(
                    (
                        "INSERT INTO replaced_generations(key, backend_json, result_json, created_by_run, created_at, replaced_at) "
                        "SELECT key, backend_json, result_json, created_by_run, created_at, ? FROM generations WHERE key=?",
                        (now_iso(), keys[index]),
                    )
                )
                statements.append(
                    (
                        "INSERT OR REPLACE INTO generations(key, backend_json, request_json, result_json, created_by_run, created_at) "
                        "VALUES (?,?,?,?,?,?)",
                        (
                            keys[index],
                            backend_json,
                            json.dumps(requests[index].to_dict()),
                            json.dumps(result.to_dict()),
                            self.run_id,
                            now_iso(),
                        ),
                    )
                )
            if self.count_in_run:
                statements.append(("UPDATE runs SET model_calls = model_calls + ? WHERE run_id=?", (len(pairs), self.run_id)))
            self._write(statements)
            self.calls_made["model_calls"] += len(pairs)
            for index, result in pairs:
                results[keys[index]] = result
            if progress is not None:
                progress.update(len(pairs))

        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            failure: BaseException | None = None
            try:
                # each result is committed as the backend hands it over: one per call for a
                # backend that answers call by call, the whole batch for one that does not
                batch_requests = [requests[index] for index in batch]
                each = getattr(backend, "generate_each", None)  # Backend's default answers the batch at once
                for position, result in each(batch_requests) if each else enumerate(backend.generate(batch_requests)):
                    commit([(batch[position], result)])
            except PartialBatch as partial:
                # keep what was answered (and paid for) before the failure, then raise it
                commit([(batch[i], partial.results[i]) for i in sorted(partial.results) if keys[batch[i]] not in results])
                failure = partial.error
            if failure is not None:
                raise failure
        return keys, [results[key] for key in keys]

    def generation_usage(self) -> list[tuple[dict[str, Any], int, int]]:
        """(backend identity, input tokens, output tokens) of every generation stored for
        this study, in any run, the latency probe's and those a later call replaced included:
        what a paid backend has been paid for so far."""
        rows = self.connection.execute(
            "SELECT backend_json, result_json FROM generations UNION ALL SELECT backend_json, result_json FROM replaced_generations"
        ).fetchall()
        usage = []
        for backend_json, result_json in rows:
            result = json.loads(result_json)
            usage.append((json.loads(backend_json), int(result.get("input_tokens", 0)), int(result.get("output_tokens", 0))))
        # the probe's ledger: every call it paid for, once (a reused round made none; a timing
        # measured again keeps its first call here)
        probed = self.connection.execute("SELECT backend_json, input_tokens, output_tokens FROM latency_probe_calls").fetchall()
        usage += [(json.loads(backend_json), int(input_tokens), int(output_tokens)) for backend_json, input_tokens, output_tokens in probed]
        return usage

    def _add_counts(self, model_calls: int, cached_calls: int) -> None:
        self.calls_made["model_calls"] += model_calls
        self.calls_made["cached_calls"] += cached_calls
        if self.count_in_run and self.run_id is not None and (model_calls or cached_calls):
            self._write(
                [
                    (
                        "UPDATE runs SET model_calls=model_calls+?, cached_calls=cached_calls+? WHERE run_id=?",
                        (model_calls, cached_calls, self.run_id),
                    )
                ]
            )

    # answers

    def save_answers(self, model: str, arm: str, question_ids: list[str], keys: list[str], retrieved: list[list[dict[str, Any]]]) -> None:
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO answers(run_id, model, arm, question_id, generation_key, retrieved_json) VALUES (?,?,?,?,?,?)",
                    (self.run_id, model, arm, question_id, key, json.dumps(chunks)),
                )
                for question_id, key, chunks in zip(question_ids, keys, retrieved, strict=True)
            ]
        )

    def answers(self, run_id: str | None = None) -> Iterator[AnswerRecord]:
        rows = self.connection.execute(
            "SELECT a.run_id, a.model, a.arm, a.question_id, a.generation_key, a.retrieved_json, g.request_json, g.result_json "
            "FROM answers a JOIN generations g ON g.key = a.generation_key WHERE a.run_id=? ORDER BY a.model, a.arm, a.question_id",
            (run_id or self.run_id,),
        )
        for run, model, arm, question_id, key, retrieved_json, request_json, result_json in rows:
            yield AnswerRecord(
                run,
                model,
                arm,
                question_id,
                key,
                json.loads(retrieved_json),
                json.loads(request_json),
                GenerationResult.from_dict(json.loads(result_json)),
            )

    # judgments

    def judgment_by_content(self, content_keys: list[str]) -> dict[str, JudgmentRecord]:
        """Judgments already made for the same content, in any run of this study: one per key,
        a scored one where there is one, else the failure that made the most attempts."""
        found: dict[str, JudgmentRecord] = {}
        for start in range(0, len(content_keys), 500):
            part = content_keys[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.connection.execute(
                f"SELECT judge, model, arm, question_id, subject, content_key, score, method, reason, raw_text, attempts "
                f"FROM judgments WHERE content_key IN ({marks})",
                part,
            )
            for row in rows:
                record, previous = JudgmentRecord(*row), found.get(row[5])
                if previous is None or (previous.score is None and (record.score is not None or record.attempts > previous.attempts)):
                    found[row[5]] = record
        return found

    def save_judgments(self, judgments: list[JudgmentRecord]) -> None:
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO judgments(run_id, judge, model, arm, question_id, subject, content_key, score, method, "
                    "reason, raw_text, attempts) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        self.run_id,
                        j.judge,
                        j.model,
                        j.arm,
                        j.question_id,
                        j.subject,
                        j.content_key,
                        j.score,
                        j.method,
                        j.reason,
                        j.raw_text,
                        j.attempts,
                    ),
                )
                for j in judgments
            ]
        )

    def judgments(self, run_id: str | None = None) -> list[JudgmentRecord]:
        rows = self.connection.execute(
            "SELECT judge, model, arm, question_id, subject, content_key, score, method, reason, raw_text, attempts "
            "FROM judgments WHERE run_id=? ORDER BY judge, model, arm, question_id, subject",
            (run_id or self.run_id,),
        )
        return [JudgmentRecord(*row) for row in rows]

    # artifacts: loss curves, data reports, cost estimates

    def save_artifact(self, name: str, value: Any) -> None:
        self._write([("INSERT OR REPLACE INTO artifacts(run_id, name, value_json) VALUES (?,?,?)", (self.run_id, name, json.dumps(value)))])

    def artifacts(self, run_id: str | None = None) -> dict[str, Any]:
        rows = self.connection.execute("SELECT name, value_json FROM artifacts WHERE run_id=?", (run_id or self.run_id,))
        return {name: json.loads(value) for name, value in rows}


def environment_info() -> dict[str, Any]:
    """Hardware and package versions, recorded with every run."""
    versions = {}
    for package in (
        "localnova",
        "torch",
        "transformers",
        "peft",
        "trl",
        "sentence-transformers",
        "faiss-cpu",
        "faiss-gpu-cu12",
        "datasets",
        "accelerate",
        "bitsandbytes",
        "liger-kernel",
        "vllm",
        "boto3",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "time_zone_offset_s": -time.timezone,
        "packages": versions,
        "threads": threads.describe(),  # how OpenMP threads wait (threads.py), and how many
    }

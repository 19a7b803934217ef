"""Read a run out of a study's store into plain rows for the statistics, figures and tables.

Nothing here computes a statistic: it only turns the store's records into the rows that
`localnova.evaluate.summary.summarize` takes (answers only) and keeps judge controls apart,
since a control is not an arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.evaluate.clustered import clusters_from_items
from localnova.evaluate.judges import SUBJECT_ANSWER
from localnova.evaluate.statistics import GenerationRow, ScoreRow
from localnova.store import DB_NAME, EARLIER_INVOCATIONS, AnswerRecord, JudgmentRecord, ProbeTiming, Store


@dataclass
class RunData:
    """One run of one study, as the report sees it."""

    study_dir: Path
    run_id: str
    info: dict[str, Any]  # Store.run_info: study, config, environment, status, call counts
    answers: list[AnswerRecord]
    judgments: list[JudgmentRecord]
    artifacts: dict[str, Any]
    label: str = ""  # how the report names this run; the run id unless set
    eval_items: dict[str, dict[str, Any]] = field(default_factory=dict)  # question_id -> {question, answer, doc_ids}
    probe_timings: list[ProbeTiming] = field(default_factory=list)  # the latency probe's, when it ran

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.run_id

    @property
    def simulated(self) -> bool:
        return bool(self.artifacts.get("simulated"))

    @property
    def invocations(self) -> list[dict[str, Any]]:
        """Every invocation of the run, first to latest: status, finish time, model calls and
        calls answered from the store."""
        latest = {key: self.info.get(key) for key in ("status", "finished_at", "model_calls", "cached_calls")}
        return [*self.artifacts.get(EARLIER_INVOCATIONS, []), latest]

    @property
    def model_calls(self) -> int:
        """The model calls of every invocation of the run together: a rerun adds its own."""
        return sum(int(invocation.get("model_calls") or 0) for invocation in self.invocations)

    @property
    def calls_from_store(self) -> int:
        """The calls the run's first invocation answered from the store (what it took from earlier
        runs); later invocations read back the run's own."""
        return int(self.invocations[0].get("cached_calls") or 0)

    @property
    def study_config(self) -> dict[str, Any]:
        """The study config the run used (a run stores {config, arms, limit, simulated})."""
        stored = self.info.get("config") or {}
        return stored.get("config", stored)

    @property
    def clusters(self) -> dict[str, str] | None:
        """{question_id: source document} when the run recorded one for every question it
        asked (the first of its doc_ids), else None: its questions are then independent."""
        asked = {answer.question_id for answer in self.answers} | {j.question_id for j in self.judgments if j.subject == SUBJECT_ANSWER}
        items = [item for question_id, item in self.eval_items.items() if question_id in asked]
        found = clusters_from_items(items)
        return found if found is not None and asked <= set(found) else None

    @property
    def score_rows(self) -> list[ScoreRow]:
        """Judgments of real answers only (controls excluded), failures kept as None."""
        return [ScoreRow(j.model, j.arm, j.question_id, j.judge, j.score) for j in self.judgments if j.subject == SUBJECT_ANSWER]

    @property
    def generation_rows(self) -> list[GenerationRow]:
        return [
            GenerationRow(a.model, a.arm, a.question_id, a.result.latency_ms, a.result.input_tokens, a.result.output_tokens)
            for a in self.answers
        ]

    @property
    def judges(self) -> list[str]:
        return list(dict.fromkeys(j.judge for j in self.judgments))

    def question_text(self, answer: AnswerRecord) -> str:
        """The question as the eval set words it, else the last user message sent."""
        item = self.eval_items.get(answer.question_id)
        if item and item.get("question"):
            return item["question"]
        user_messages = [m["content"] for m in answer.request.get("messages", []) if m.get("role") == "user"]
        return user_messages[-1] if user_messages else ""

    def ground_truth(self, question_id: str) -> str | None:
        item = self.eval_items.get(question_id)
        return item.get("answer") if item else None


def parse_run_spec(spec: str) -> tuple[Path, str | None]:
    """`folder` or `folder:run_id` -> (folder, run_id or None). A folder whose own name holds
    a colon is taken whole when it exists."""
    if Path(spec).is_dir() or ":" not in spec:
        return Path(spec), None
    folder, run_id = spec.rsplit(":", 1)
    return Path(folder), (run_id or None)


def _eval_items(artifacts: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Questions, ground truths and source documents, from the run's 'eval_items' artifact when
    it saved one (a list of {question_id, question, answer, doc_ids} or a dict keyed by question
    id; runs stored before issue 27 have no doc_ids)."""
    raw = artifacts.get("eval_items")
    if isinstance(raw, dict):
        return {str(qid): dict(item) for qid, item in raw.items() if isinstance(item, dict)}
    if isinstance(raw, list):
        return {str(item["question_id"]): dict(item) for item in raw if isinstance(item, dict) and "question_id" in item}
    return {}


def collect_run(study_dir: Path, run_id: str | None = None) -> RunData:
    """Load one run (the latest one when `run_id` is None) from the store in `study_dir`."""
    study_dir = Path(study_dir)
    if not (study_dir / DB_NAME).is_file():
        raise UserError(f"{study_dir}: no results store here (expected {study_dir / DB_NAME}); pass a study folder")
    store = Store(study_dir)
    try:
        run_ids = store.run_ids()
        if not run_ids:
            raise UserError(f"{study_dir / DB_NAME}: the store holds no runs yet")
        if run_id is None:
            run_id = run_ids[-1]
        elif run_id not in run_ids:
            raise UserError(f"{study_dir / DB_NAME}: no run {run_id!r}; runs here: {', '.join(run_ids)}")
        artifacts = store.artifacts(run_id)
        return RunData(
            study_dir=study_dir,
            run_id=run_id,
            info=store.run_info(run_id),
            answers=list(store.answers(run_id)),
            judgments=store.judgments(run_id),
            artifacts=artifacts,
            eval_items=_eval_items(artifacts),
            probe_timings=store.probe_timings(run_id),
        )
    finally:
        store.close()


def collect_runs(specs: list[str]) -> list[RunData]:
    """Load every `folder[:run_id]` spec; runs are labelled by run id, which is unique
    across studies since it starts with the study's name."""
    runs = [collect_run(*parse_run_spec(spec)) for spec in specs]
    seen: dict[str, int] = {}
    for run in runs:
        # The same run named twice (or two copies of a study folder) still gets two columns.
        count = seen.get(run.label, 0)
        seen[run.label] = count + 1
        if count:
            run.label = f"{run.label} ({count + 1})"
    return runs

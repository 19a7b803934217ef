"""`localnova judge --config CONFIG RUN [RUN ...]`: a config's judges over the answers already
stored in other runs, so that runs judged apart can be set on one scale.

Each RUN keeps its answers, its generation records and its own call counts; the config's
judges score every answer it holds, and, as in `localnova run`, the controls (the ground
truth, an empty answer, another question's truth) that gate the headline panel. Everything
goes through the run's own store: a judgment made before for the same content by the same
judge is reused, a model call is answered from the store where it holds it, and each slice
of judgments is committed as it is made, so the same command after a kill -9 makes only
what is missing. The calls it makes are its own (`Store.count_in_run`), never added to the
run's.

A RUN is judged only on the config's questions: every question it asked must be in the
config's eval set (up to eval.limit) with the same text and ground truth, else the command
stops in one line before anything is loaded. A judge whose name the run already uses for
another judge (another model, host or setting) is stored as `<name>@<config name>` and said
so, never over the run's own; what was added is recorded in the run's `added_judges`
artifact. Judges on Bedrock go through bedrock_study/judge.py first (preflight, estimate,
budget, the spend guard).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.config import LOCAL_BACKENDS, JudgeConfig, StudyConfig
from localnova.console import say, stage
from localnova.data.eval_set import load_eval_set
from localnova.errors import UserError
from localnova.evaluate.judge_settings import ADDED_JUDGES_ARTIFACT, config_identity, differences
from localnova.evaluate.judges import JUDGE_IDENTITY_ARTIFACT, SUBJECT_ANSWER, JudgeInput, build_panel, control_inputs
from localnova.evaluate.runner import run_judge
from localnova.models import hub_access_problem, resolve_model, server_problem
from localnova.store import DB_NAME, Store
from localnova.study_parts import stored_judge
from localnova.types import EvalItem

log = logging.getLogger("localnova")


@dataclass(frozen=True)
class RunTarget:
    """A run to judge: a study folder and a run id (None: the folder's latest run)."""

    study_dir: Path
    run_id: str | None = None


@dataclass
class JudgedRun:
    """What the command did to one run: the name each judge is stored under, how many
    judgments the run held before and after, how many of them were made now (by judge), and
    the model calls made and answered from the store."""

    study_dir: Path
    run_id: str
    stored_as: dict[str, str]
    answers: int
    judgments_before: int
    judgments_after: int
    made: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)


def select_judges(config: StudyConfig, names: list[str] | None) -> StudyConfig:
    """The config with only the judges `names` lists (all of them when None), in its order."""
    if names is None:
        selected = list(config.judges)
    else:
        known = [judge.name for judge in config.judges]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise UserError(f"--judges {','.join(unknown) or '(none)'}: not among the config's judges ({', '.join(known) or 'none'})")
        selected = [judge for judge in config.judges if judge.name in names]
    if not selected:
        raise UserError("judges: the config has no judge to put on the runs")
    return config.model_copy(update={"judges": selected})


def check_judge_models(config: StudyConfig) -> None:
    """Resolve every locally loaded judge model (and embedding model) before any run is touched:
    an unknown name or a gated model without access is one line now, not after other runs
    were judged."""
    for judge in config.judges:
        problem = server_problem(judge.model) if judge.model is not None else None
        if problem:
            raise UserError(problem)
        if judge.model is not None and judge.model.backend in LOCAL_BACKENDS:
            resolve_model(judge.model.model, judge.model.revision)
            problem = hub_access_problem(judge.model.model)
            if problem:
                raise UserError(problem)
        if judge.kind == "embedding_similarity":
            resolve_model(judge.embedding_model)


def _open(target: RunTarget) -> tuple[Store, str]:
    if not (target.study_dir / DB_NAME).is_file():
        raise UserError(f"{target.study_dir}: no results store here (expected {target.study_dir / DB_NAME}); pass a study folder")
    store = Store(target.study_dir)
    run_ids = store.run_ids()
    if not run_ids:
        store.close()
        raise UserError(f"{target.study_dir / DB_NAME}: the store holds no runs yet")
    if target.run_id is not None and target.run_id not in run_ids:
        store.close()
        raise UserError(f"{target.study_dir / DB_NAME}: no run {target.run_id!r}; runs here: {', '.join(run_ids)}")
    return store, target.run_id or run_ids[-1]


def run_questions(artifacts: dict[str, Any], where: str) -> list[EvalItem]:
    """The questions a run asked, in its order, as it recorded them (its `eval_items`)."""
    raw = artifacts.get("eval_items")
    rows = list(raw.values()) if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{where}: the run recorded no questions (no eval_items), so its answers cannot be matched to the config's")
    return [EvalItem(str(row["question_id"]), str(row.get("question", "")).strip(), str(row.get("answer", "")).strip()) for row in rows]


def check_questions(items: list[EvalItem], config: StudyConfig, where: str) -> None:
    """One line, and nothing judged, when the run asked a question the config's eval set (up to
    eval.limit) does not hold with the same text and ground truth."""
    expected = {item.question_id: item for item in load_eval_set(config.eval.path, config.eval.limit)}
    for item in items:
        found = expected.get(item.question_id)
        if found is None:
            why = f"{item.question_id} is not in {config.eval.path}" + (
                f" (up to eval.limit {config.eval.limit})" if config.eval.limit else ""
            )
        elif found.question.strip() != item.question:
            why = f"{item.question_id} asks another question in {config.eval.path}"
        elif found.answer.strip() != item.answer:
            why = f"{item.question_id} has another ground truth in {config.eval.path}"
        else:
            continue
        raise UserError(f"{where}: its questions are not the config's ({why}); judge it with a config whose eval set it was run on")


def _run_judges(store: Store, run_id: str) -> tuple[set[str], dict[str, dict[str, Any]], set[str]]:
    """The judge names with judgments in the run; what its config (and any judge added later)
    says of each judge, as `config_identity`; and the names its own config gave."""
    names = {row[0] for row in store.connection.execute("SELECT DISTINCT judge FROM judgments WHERE run_id=?", (run_id,))}
    stored = store.run_info(run_id)["config"]
    study_config = stored.get("config", stored)
    seed = int(study_config.get("seed") or 0)
    settings = {judge["name"]: config_identity(judge, seed) for judge in study_config.get("judges") or []}
    own = set(settings)
    for name, added in (store.artifacts(run_id).get(ADDED_JUDGES_ARTIFACT) or {}).items():
        settings[name] = config_identity(added["judge"], int(added.get("seed", 0)))
    return names, settings, own


def _with_controls(store: Store, run_id: str, config: StudyConfig) -> bool:
    """Judge the controls when the config asks for them or the run's own judges scored them (a
    judge without them could not be gated beside those that have them)."""
    found = store.connection.execute("SELECT 1 FROM judgments WHERE run_id=? AND subject<>? LIMIT 1", (run_id, SUBJECT_ANSWER))
    return config.eval.controls or found.fetchone() is not None


def stored_names(config: StudyConfig, names: set[str], settings: dict[str, dict[str, Any]], where: str) -> dict[str, str]:
    """Config judge name -> the name it is stored under in the run: its own, unless the run
    has another judge of that name, then `<name>@<config name>`."""
    found = {}
    for judge in config.judges:
        for candidate in (judge.name, f"{judge.name}@{config.name}"):
            theirs = settings.get(candidate)
            mine = config_identity({**stored_judge(judge), "name": candidate}, config.seed)
            if (candidate not in names and theirs is None) or theirs == mine:
                found[judge.name] = candidate
                break
        else:
            raise UserError(
                f"{where}: already holds other judges named {judge.name} and {judge.name}@{config.name}; "
                f"rename this one (--set judges.N.name=...)"
            )
    return found


def answers_to_judge(store: Store, run_id: str, items: list[EvalItem], with_controls: bool) -> tuple[list[JudgeInput], int]:
    """Every stored answer of the run as a judge input, then (with controls) the three controls
    of each question in the run's order; and how many answers there are."""
    by_id = {item.question_id: item for item in items}
    answers = list(store.answers(run_id))
    inputs = [
        JudgeInput(a.model, a.arm, a.question_id, SUBJECT_ANSWER, by_id[a.question_id].question, by_id[a.question_id].answer, a.result.text)
        for a in answers
        if a.question_id in by_id
    ]
    if with_controls:
        inputs += control_inputs([(item.question_id, item.question, item.answer) for item in items])
    return inputs, len(answers)


def judge_run(config: StudyConfig, target: RunTarget, timings: dict[str, float] | None = None) -> JudgedRun:
    """Put `config`'s judges on one stored run (see the module's docstring)."""
    timings = timings if timings is not None else {}
    store, run_id = _open(target)
    try:
        where = f"{target.study_dir}:{run_id}"
        artifacts = store.artifacts(run_id)
        items = run_questions(artifacts, where)
        check_questions(items, config, where)
        simulated = [j.name for j in config.judges if j.model is not None and j.model.backend == "simulated"]
        if simulated and not artifacts.get("simulated"):
            raise UserError(
                f"{where}: judge {simulated[0]} is simulated and the run is not: its scores would pass for real ones in the report"
            )
        names, settings, own = _run_judges(store, run_id)
        renamed = stored_names(config, names, settings, where)
        inputs, n_answers = answers_to_judge(store, run_id, items, _with_controls(store, run_id, config))
        if not n_answers:
            raise UserError(f"{where}: the run holds no answers to judge")
        store.run_id = run_id
        store.count_in_run = False  # the run's call counts stay what its own study made
        judges = [j.model_copy(update={"name": renamed[j.name]}) for j in config.judges]
        added = dict(artifacts.get(ADDED_JUDGES_ARTIFACT) or {})
        for judge in judges:
            if judge.name in own:  # the run's own judge, with the same settings: nothing added
                continue
            added[judge.name] = {
                "judge": stored_judge(judge),
                "seed": config.seed,
                "config": config.name,
                "as": _origin(judge, renamed),
            }
        store.save_artifact(ADDED_JUDGES_ARTIFACT, added)  # before judging: a killed command leaves its record too
        before = _count_judgments(store, run_id)
        made = _judge(store, config.model_copy(update={"judges": judges}), inputs, renamed, where, timings)
        return JudgedRun(
            target.study_dir, run_id, renamed, n_answers, before, _count_judgments(store, run_id), made, dict(store.calls_made)
        )
    finally:
        store.close()


def _origin(judge: JudgeConfig, renamed: dict[str, str]) -> str:
    return next(original for original, stored in renamed.items() if stored == judge.name)


def _count_judgments(store: Store, run_id: str) -> int:
    return int(store.connection.execute("SELECT count(*) FROM judgments WHERE run_id=?", (run_id,)).fetchone()[0])


def _judge(
    store: Store, config: StudyConfig, inputs: list[JudgeInput], renamed: dict[str, str], where: str, timings: dict[str, float]
) -> dict[str, int]:
    """Each judge, one at a time (its model loaded, run, closed), as `run_panel` does; a judge
    stored under a name the run already holds must judge as that one did."""
    made = {}
    known = store.artifacts()
    for judge in build_panel(config):
        with stage(f"judge {judge.name} ({where})", timings), judge.opened():
            before = known.get(JUDGE_IDENTITY_ARTIFACT + judge.name)
            if before is not None and before != judge.identity:
                changed = ", ".join(differences(before, judge.identity)[:6])
                raise UserError(
                    f"{where}: judge {judge.name} has the run's settings but judges otherwise now ({changed}); "
                    "rename it (--set judges.N.name=...) to keep both"
                )
            original = _origin(judge.config, renamed)
            if judge.name != original:
                say(f"{where}: the run has another judge named {original}: this one is stored as {judge.name}")
            store.save_artifact(JUDGE_IDENTITY_ARTIFACT + judge.name, judge.identity)
            made[judge.name] = run_judge(store, judge, inputs)[1]
    return made


def stored_inputs(config: StudyConfig, target: RunTarget) -> list[JudgeInput]:
    """What the config's judges would score in one run (its answers and, with controls, the
    controls), after checking that its questions are the config's: for the estimate of a paid
    panel, and to refuse a wrong run before any other is judged."""
    store, run_id = _open(target)
    try:
        where = f"{target.study_dir}:{run_id}"
        items = run_questions(store.artifacts(run_id), where)
        check_questions(items, config, where)
        return answers_to_judge(store, run_id, items, _with_controls(store, run_id, config))[0]
    finally:
        store.close()


def judge_runs(config: StudyConfig, targets: list[RunTarget]) -> list[JudgedRun]:
    """Put `config`'s judges on every run of `targets`, one run after another; every run's
    questions are checked, and every local judge model resolved, before any judge loads."""
    check_judge_models(config)
    for target in targets:
        stored_inputs(config, target)
    done = []
    for target in targets:
        judged = judge_run(config, target)
        say(
            f"{judged.study_dir}:{judged.run_id}: {sum(judged.made.values())} judgments made now "
            f"({', '.join(f'{name} {count}' for name, count in judged.made.items())}), the rest from the store; the run holds "
            f"{judged.judgments_after} judgments (was {judged.judgments_before}) and its {judged.answers} answers, unchanged; "
            f"{judged.calls.get('model_calls', 0)} model calls, {judged.calls.get('cached_calls', 0)} answered from the store"
        )
        done.append(judged)
    return done

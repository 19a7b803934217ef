"""The grid runner: answers for arms x questions, then the judge panel, all through the store.

It talks to backends only through the Backend interface, and every call goes through
`Store.generate_cached`, so a rerun makes no call that the store already holds. The panel's
judges are opened one after another, so at most one judge model is loaded at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from localnova.backends import create_backend
from localnova.backends.base import Backend
from localnova.config import ModelConfig
from localnova.console import progress, stage
from localnova.evaluate.arms import ArmInputs, generation_params
from localnova.evaluate.judges import JUDGE_IDENTITY_ARTIFACT, SUBJECT_ANSWER, Judge, JudgeInput, control_inputs
from localnova.evaluate.seeds import split_replicate
from localnova.store import JudgmentRecord, Store
from localnova.types import EvalItem, GenerationParams


@dataclass
class ArmAnswers:
    model: str
    arm: str
    question_ids: list[str]
    texts: list[str]


def answer_arm(
    store: Store,
    backend: Backend,
    model_name: str,
    arm: str,
    items: list[EvalItem],
    arm_inputs: ArmInputs,
    params: GenerationParams,
    batch_size: int,
) -> ArmAnswers:
    """Generate (or read back) one arm's answers for every question and record them."""
    contexts = arm_inputs.contexts
    requests = arm_inputs.requests(items, params)
    # Similar prompt lengths in one batch waste less compute on padding.
    order = sorted(range(len(requests)), key=lambda index: len(requests[index].messages[-1][1]))
    with progress(len(requests), f"{model_name}/{arm}", unit="answer") as bar:
        per_call = backend.requests_per_call(batch_size)
        keys, results = store.generate_cached(backend, [requests[i] for i in order], per_call, progress=bar)
    by_index = {index: (key, result) for index, key, result in zip(order, keys, results, strict=True)}
    retrieved_records = [
        [{"chunk_id": c.chunk_id, "doc_id": c.doc_id, "score": round(c.score, 6)} for c in (contexts[i] or [])] for i in range(len(items))
    ]
    question_ids = [item.question_id for item in items]
    store.save_answers(model_name, arm, question_ids, [by_index[i][0] for i in range(len(items))], retrieved_records)
    return ArmAnswers(model_name, arm, question_ids, [by_index[i][1].text for i in range(len(items))])


def answer_arms(
    store: Store,
    backend: Backend,
    model: ModelConfig,
    arms: list[str],
    items: list[EvalItem],
    arm_inputs: dict[str, ArmInputs],
    seed: int,
    timings: dict[str, float],
) -> list[ArmAnswers]:
    """One model's arms through one backend, which loads on the first answer not in the store;
    each arm's seconds go to `timings["answers <model>/<arm>"]`."""
    params = generation_params(model, seed)
    answers = []
    for arm in arms:
        with stage(f"answers {model.name}/{arm}", timings):
            answers.append(answer_arm(store, backend, model.name, arm, items, arm_inputs[arm], params, model.generation.batch_size))
    return answers


def answer_replicates(
    store: Store,
    model: ModelConfig,
    arms: list[str],
    items: list[EvalItem],
    arm_inputs: dict[str, ArmInputs],
    seed: int,
    timings: dict[str, float],
    adapters: dict[str, str],
) -> list[ArmAnswers]:
    """The fine-tuned `arms` once more for each further adapter of `model` (one per training
    seed after the first: `adapters` names them `seeds.replicate_name(model, seed)`), stored
    under that name; each adapter's model is loaded, answers and is closed before the next."""
    answers = []
    for name, path in adapters.items():
        if not arms or name == model.name or split_replicate(name)[0] != model.name:
            continue
        backend = create_backend(model, adapter_path=path)
        try:
            answers += answer_arms(store, backend, model.model_copy(update={"name": name}), arms, items, arm_inputs, seed, timings)
        finally:
            backend.close()
    return answers


def judge_inputs(items: list[EvalItem], answers: list[ArmAnswers], with_controls: bool) -> list[JudgeInput]:
    by_id = {item.question_id: item for item in items}
    inputs = [
        JudgeInput(
            arm_answers.model, arm_answers.arm, question_id, SUBJECT_ANSWER, by_id[question_id].question, by_id[question_id].answer, text
        )
        for arm_answers in answers
        for question_id, text in zip(arm_answers.question_ids, arm_answers.texts, strict=True)
    ]
    if with_controls:
        inputs += control_inputs([(item.question_id, item.question, item.answer) for item in items])
    return inputs


def run_judge(store: Store, judge: Judge, inputs: list[JudgeInput], retry_failed: bool = False) -> tuple[list[JudgmentRecord], int]:
    """Score `inputs` with one opened judge; judgments already made of the same content by the
    same judge identity (in any run of this study) are reused, and model calls go through the
    store in batches of the judge's batch size. Returns the judgments and how many of them were
    made now.

    A judgment that failed before stays a failure (a finished study reruns with no model call,
    and its panel cannot change under it), unless `retry_failed` asks for another try: it is
    then judged with new model calls, never from the store's cache of model calls (replaying
    the calls would replay the failure), going on from the attempts the failure made
    (`Judge.run`'s `tries_before`)."""
    keys = [judge.content_key(item) for item in inputs]
    stored = store.judgment_by_content(keys)
    known = {key: record for key, record in stored.items() if record.score is not None or not retry_failed}
    tries_before = {key: record.attempts for key, record in stored.items() if key not in known}
    missing = [index for index, key in enumerate(keys) if key not in known]
    records: dict[int, JudgmentRecord] = {}
    for index, key in enumerate(keys):
        if key in known:
            previous = known[key]
            item = inputs[index]
            records[index] = JudgmentRecord(
                judge.name,
                item.model,
                item.arm,
                item.question_id,
                item.subject,
                key,
                previous.score,
                previous.method,
                previous.reason,
                previous.raw_text,
                previous.attempts,
            )
    if records:
        store.save_judgments(list(records.values()))
    if missing:
        backend = judge.backend
        batch_size = backend.requests_per_call(judge.batch_size) if backend is not None else judge.batch_size
        bar = progress(len(missing), f"judge {judge.name}", unit="judgment")

        def generator(fresh: bool):
            if backend is None:
                return None
            return lambda requests: store.generate_cached(backend, requests, batch_size, fresh=fresh)[1]

        # Judge in slices so that a killed process keeps the judgments already made. The bar
        # counts judgments as each slice ends: a judgment can take several requests (retries,
        # the logprob judge's second round), so counting requests would overshoot. New items
        # and items that failed before go in separate slices: only the latter bypass the cache.
        slice_size = max(batch_size, 16)
        for retrying in (False, True):
            todo = [index for index in missing if (keys[index] in tries_before) == retrying]
            for start in range(0, len(todo), slice_size):
                part = todo[start : start + slice_size]
                before = [tries_before.get(keys[index], 0) for index in part]
                outcomes = judge.run([inputs[index] for index in part], generator(retrying), before)
                bar.update(len(part))
                new_records = []
                for index, outcome in zip(part, outcomes, strict=True):
                    item = inputs[index]
                    new_records.append(
                        JudgmentRecord(
                            judge.name,
                            item.model,
                            item.arm,
                            item.question_id,
                            item.subject,
                            keys[index],
                            outcome.score,
                            outcome.method,
                            outcome.reason,
                            outcome.raw_text,
                            outcome.attempts,
                        )
                    )
                store.save_judgments(new_records)
                records.update(zip(part, new_records, strict=True))
        bar.close()
    return [records[index] for index in range(len(inputs))], len(missing)


def run_panel(
    store: Store, panel: list[Judge], judge_items: list[JudgeInput], timings: dict[str, float], retry_failed: bool = False
) -> dict[str, int]:
    """Every judge of `panel` over `judge_items`, one at a time: each is opened (its model
    loaded), run and closed before the next opens. Adds each judge's seconds, loading included,
    to `timings["judge <name>"]`; returns how many judgments each made now. Stored failures
    are judged again only with `retry_failed` (`run_judge`)."""
    made: dict[str, int] = {}
    for judge in panel:
        with stage(f"judge {judge.name}", timings), judge.opened():
            store.save_artifact(JUDGE_IDENTITY_ARTIFACT + judge.name, judge.identity)  # what cross-run pairing compares
            made[judge.name] = run_judge(store, judge, judge_items, retry_failed)[1]
    return made

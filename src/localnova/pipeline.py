"""The local study, stage by stage: eval set -> retrieval -> adapters -> answers -> judges -> metrics.

This module only calls the stages in order and writes the study's store, config.yaml and
summary.json; each stage lives in its own module. The Bedrock study (bedrock/study.py) sits
above this one and hands it what the cloud provides instead: a Knowledge Base retriever and
the custom models' ARNs. The report is written from the store afterwards (report/).

A run that stops early is left marked incomplete in the store and in `summary.json`, never
passed off as finished.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from localnova.backends import create_backend
from localnova.chunking import chunk_documents
from localnova.config import LOCAL_BACKENDS, StudyConfig, config_to_dict
from localnova.console import format_seconds, say, stage
from localnova.corpus import load_documents
from localnova.data.eval_set import load_study_eval_set
from localnova.data.gen_qa import GEN_QA_DIR, gen_qa_command, generated_train_file
from localnova.embedder import Embedder
from localnova.evaluate import metrics as metrics_module
from localnova.evaluate.judges import build_panel
from localnova.evaluate.latency_probe import probe_model
from localnova.evaluate.metrics import answer_metrics
from localnova.evaluate.runner import ArmAnswers, answer_arms, answer_replicates, judge_inputs, run_panel
from localnova.files import json_text, write_text_atomic
from localnova.finetune.presets import check_hyperparameters
from localnova.finetune.raft import raft_adapters_for_study
from localnova.finetune.stage import adapter_artifacts, adapter_hashes, adapters_for_study
from localnova.models import check_models
from localnova.optional import cpu_supports_bf16, gpu_description
from localnova.retrieval import Retriever
from localnova.run_identity import run_identity
from localnova.store import Store, environment_info
from localnova.study_inputs import INDEX_DIR, StudyInputs, build_index, needs_embedder, prepare_inputs  # noqa: F401 (read from here)
from localnova.types import EvalItem, stable_hash

log = logging.getLogger("localnova")

# What the pipeline writes into the study folder besides the store (and the index: study_inputs.py).
CONFIG_FILE, SUMMARY_FILE = "config.yaml", "summary.json"

# Computes more artifacts from the finished answers (the Bedrock study prices them).
ArtifactsFromStore = Callable[[Store], dict[str, Any]]
# Hosts a model's adapter only while its ft arms run (the Bedrock study: deploy, answer, delete).
AdapterHosting = Callable[[str, str | None], AbstractContextManager[str | None]]


def answer_groups(config: StudyConfig) -> dict[str, list[str]]:
    """The config's arms grouped by what answers them: 'none' (the base model), then each
    adapter recipe (sft, raft) in the order the arms first name it."""
    groups: dict[str, list[str]] = {}
    for arm in config.arms:
        groups.setdefault(config.arm_config(arm).adapter, []).append(arm)
    return {recipe: groups[recipe] for recipe in sorted(groups, key=lambda recipe: recipe != "none")}


def run_answers(
    config: StudyConfig,
    store: Store,
    inputs: StudyInputs,
    adapters: dict[str, dict[str, str]],
    timings: dict[str, float],
    hosting: AdapterHosting | None = None,
) -> list[ArmAnswers]:
    """Every answer model over its arms: the base model once for its arms, then the model with
    each recipe's adapter (`adapters[recipe][model]`) for that recipe's arms, and with each
    further adapter of the sft recipe (one per training seed after the first, `adapters["sft"]`
    names them `<model>@seed<N>`) for the same arms; each closed before the next loads. With
    `hosting`, a model's adapter is hosted only around its arms. A model's loading time counts
    in the first stage that needs it. The latency probe of a model runs after the arms of its
    first adapter (or its base arms, without one), while what answers them is still loaded (and
    hosted): it is the one time two models are loaded together, the base model beside its
    adapter, unless the adapter's backend can answer as the base model too
    (`Backend.base_model_view`: vllm). Arms of a second recipe, and further seeds, are not probed."""
    all_answers = []
    groups = answer_groups(config)
    base_arms = groups.pop("none", [])
    probe_on = config.eval.latency_probe.enabled
    for model in config.models:
        if base_arms:
            backend = create_backend(model)  # loads nothing yet
            try:
                all_answers += answer_arms(store, backend, model, base_arms, inputs.items, inputs.arms, config.seed, timings)
                if not groups:
                    probe_model(config, store, model, inputs.items, inputs.arms, dict.fromkeys(base_arms, backend), timings)
            finally:
                backend.close()  # its memory goes back before the adapter's model loads
        for position, (recipe, ft_arms) in enumerate(groups.items()):
            adapter = adapters.get(recipe, {}).get(model.name)
            if recipe == "sft":  # the further training seeds' adapters, each loaded, answering and closed in turn
                found = adapters.get(recipe, {})
                all_answers += answer_replicates(store, model, ft_arms, inputs.items, inputs.arms, config.seed, timings, found)
            with hosting(model.name, adapter) if hosting else nullcontext(adapter) as adapter_path:
                ft_backend = create_backend(model, adapter_path=adapter_path)
                try:
                    all_answers += answer_arms(store, ft_backend, model, ft_arms, inputs.items, inputs.arms, config.seed, timings)
                    if position > 0:
                        continue
                    if not (probe_on and base_arms):
                        probe_model(config, store, model, inputs.items, inputs.arms, dict.fromkeys(ft_arms, ft_backend), timings)
                        continue
                    # The probe times base arms beside ft arms: from the adapter's engine where it
                    # can answer without the adapter (vllm), else from the base model loaded again.
                    base_view = ft_backend.base_model_view()
                    base_backend = base_view or create_backend(model)
                    try:
                        probed = {**dict.fromkeys(base_arms, base_backend), **dict.fromkeys(ft_arms, ft_backend)}
                        probe_model(config, store, model, inputs.items, inputs.arms, probed, timings)
                    finally:
                        if base_view is None:
                            base_backend.close()
                finally:
                    ft_backend.close()
    return all_answers


def local_adapters(config: StudyConfig, inputs: StudyInputs, timings: dict[str, float]) -> dict[str, dict[str, str]]:
    """Train (or reuse) one LoRA adapter per local answer model and recipe its arms need (sft on
    the question-answer pairs, raft on RAFT rows built from them); the training pairs are
    decontaminated against the whole eval set, not only the questions of this run. Without a
    training file (finetune.train_path null) the gen-qa stage writes one first, once: a later
    run reuses it. Returns recipe -> model name -> adapter folder."""
    if not config.fine_tunes:
        return {}
    needs_training = any(model.backend in LOCAL_BACKENDS and model.adapter is None for model in config.models)
    if needs_training and config.finetune.train_path is None and not generated_train_file(config.study_dir).is_file():
        log.info("no finetune.train_path: generating training pairs from the corpus first (gen-qa)")
        with stage("gen-qa: training pairs from the corpus", timings):
            gen_qa_for_study(config, inputs.embedder)
    adapters = {}
    if "sft" in config.adapter_recipes:
        with stage("fine-tuning (or reuse)", timings):
            adapters["sft"] = adapters_for_study(config, config.models, embed=inputs.embedder)
    if "raft" in config.adapter_recipes:
        with stage("RAFT fine-tuning (or reuse)", timings):
            adapters["raft"] = raft_adapters_for_study(config, config.models, inputs.embedder, build_index(config, inputs.embedder)[0])
    return adapters


def run_study(
    config: StudyConfig,
    adapters: dict[str, str] | None = None,
    retriever: Retriever | None = None,
    artifacts: dict[str, Any] | None = None,
    artifacts_from_store: ArtifactsFromStore | None = None,
    hosting: AdapterHosting | None = None,
    retry_failed: bool = False,
) -> tuple[Path, str]:
    """Run the study the config describes (its arms, its eval set up to eval.limit); return its
    folder and run id. `adapters` maps a model name to what its ft arms load (an adapter
    folder, or a Bedrock ARN); without it local adapters are trained or reused. `retriever`
    replaces the local index. `artifacts` are saved with the run (cost estimates), and so is
    what `artifacts_from_store` computes from the finished answers. Judgments that failed in an
    earlier invocation stay failures unless `retry_failed` (`--retry-failed`) asks again."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if config.fine_tunes and adapters is None:
        check_hyperparameters(config.finetune)  # a bound broken: one line, before any model loads
    model_sources = check_models(config)
    with stage("eval set, corpus and index", timings):
        inputs = prepare_inputs(config, retriever)
    panel = build_panel(config, inputs.embedder)  # loads nothing yet; a judge that cannot work stops here
    by_recipe = local_adapters(config, inputs, timings) if adapters is None else {"sft": adapters}

    study_dir = config.study_dir
    store = Store(study_dir)
    # every adapter's files are in the run's identity: another adapter is another measurement
    named = {name if recipe == "sft" else f"{name}:{recipe}": path for recipe, found in by_recipe.items() for name, path in found.items()}
    run_config = run_identity(config, adapter_hashes(named))
    environment = {**environment_info(), "gpu": gpu_description(), "cpu_supports_bf16": cpu_supports_bf16(), "models": model_sources}
    run_id = store.start_run(config.name, run_config, environment)
    write_text_atomic(study_dir / CONFIG_FILE, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    log.info("study %s, run %s, in %s", config.name, run_id, study_dir)
    judgments_made: dict[str, int] = {}
    complete = False
    try:
        if config.simulated:
            store.save_artifact("simulated", True)
        run_artifacts = {
            **(artifacts or {}),
            "retrieval": {k: v for k, v in inputs.retrieval_info.items() if k != "index_rebuilt"},  # a rerun's rebuild is no result
            "eval_items": [
                {
                    "question_id": i.question_id,
                    "question": i.question,
                    "answer": i.answer,
                    **({"doc_ids": list(i.doc_ids)} if i.doc_ids else {}),
                }
                for i in inputs.items
            ],
            **{name: value for recipe, found in by_recipe.items() for name, value in adapter_artifacts(config, found, recipe).items()},
        }
        for name, value in run_artifacts.items():
            store.save_artifact(name, value)
        answers = run_answers(config, store, inputs, by_recipe, timings, hosting)
        judge_items = judge_inputs(inputs.items, answers, config.eval.controls)
        judgments_made = run_panel(store, panel, judge_items, timings, retry_failed)
        with stage("answer metrics", timings):
            save_answer_metrics(store, inputs.items, config.retrieval.top_k)
            for name, value in (artifacts_from_store(store) if artifacts_from_store else {}).items():
                store.save_artifact(name, value)
        complete = True
    finally:
        store.finish_run(complete)
        summary = write_summary(store, inputs, judgments_made, timings, study_dir / SUMMARY_FILE)
        store.close()
    log.info("stage timings (s): %s", timings)
    say(
        f"study {config.name}: run {run_id} {summary['status']} in {format_seconds(time.perf_counter() - started)}: "
        f"{summary['model_calls']} model calls, {summary['cached_calls']} answered from the store"
    )
    return study_dir, run_id


def save_answer_metrics(store: Store, items: list[EvalItem], top_k: int) -> None:
    """The per model x arm reference metrics, recomputed only when an answer, the eval set or
    the metrics code changed: ROUGE-L alone imports nltk, seconds that a cached rerun skips."""
    answers = list(store.answers())
    key = stable_hash(
        {
            "answers": sorted([a.model, a.arm, a.question_id, a.generation_key, a.retrieved] for a in answers),
            "items": [[item.question_id, item.answer, item.doc_ids] for item in items],
            "top_k": top_k,
            "code": hashlib.sha256(Path(metrics_module.__file__).read_bytes()).hexdigest(),
        }
    )
    known = store.artifacts()
    if known.get("answer_metrics_key") == key and "answer_metrics" in known:
        return
    store.save_artifact("answer_metrics", answer_metrics(items, answers, top_k))
    store.save_artifact("answer_metrics_key", key)


def write_summary(
    store: Store, inputs: StudyInputs, judgments_made: dict[str, int], timings: dict[str, float], path: Path
) -> dict[str, Any]:
    info = store.run_info()
    run_config = info["config"]
    summary = {
        "run_id": info["run_id"],
        "status": info["status"],
        "model_calls": info["model_calls"],
        "cached_calls": info["cached_calls"],
        "questions": len(inputs.items),
        "arms": run_config["arms"],
        "simulated": run_config["simulated"],
        "retrieval": inputs.retrieval_info,
        "answer_metrics": store.artifacts().get("answer_metrics", {}),
        "judgments_made": judgments_made,
        "timings_s": timings,
    }
    write_text_atomic(path, json_text(summary))
    return summary


def gen_qa_for_study(config: StudyConfig, embedder: Embedder | None = None) -> int:
    """The gen-qa stage (`localnova gen-qa`, or `run` without a training file): Q&A pairs from
    the corpus chunks by the configured generator (or the first answer model), filtered,
    decontaminated against the whole eval set and split, into <study>/gen_qa/. The generator is
    closed before anything else loads."""
    eval_items = load_study_eval_set(config.eval)
    documents = load_documents(config.corpus.path)
    embedder = embedder or Embedder(config.retrieval.embedding_model)
    chunks = chunk_documents(documents, config.corpus.chunking, embedder.tokenizer, embed=embedder)
    backend = create_backend(config.gen_qa.generator or config.models[0])
    try:
        return gen_qa_command(config, chunks, eval_items, backend, embedder, config.study_dir / GEN_QA_DIR)
    finally:
        backend.close()

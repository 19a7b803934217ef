"""The study, stage by stage: corpus -> index -> (adapters) -> answers -> judges -> summary -> report.

This module only calls the stages in order and writes the study folder; each stage lives in
its own module. A run that stops early is left marked incomplete in the store and in
`summary.json`, never passed off as finished.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localnova.config import FT_ARMS, LOCAL_BACKENDS, RAG_ARMS, ModelConfig, StudyConfig, config_to_dict
from localnova.errors import UserError
from localnova.evaluate.arms import uses_adapter
from localnova.timing import timed
from localnova.types import EvalItem, GenerationParams, RetrievedChunk

log = logging.getLogger("localnova")


def write_atomically(path: Path, text: str) -> None:
    """Write a file under a temporary name and rename it, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; results are for sharing
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class StudyInputs:
    """What every model and arm share: the questions and, for rag arms, what was retrieved."""

    items: list[EvalItem]
    retrieved: list[list[RetrievedChunk]] | None = None
    retrieval_info: dict[str, Any] = field(default_factory=dict)
    embedder: Any = None


def generation_params(model: ModelConfig, seed: int) -> GenerationParams:
    generation = model.generation
    return GenerationParams(max_new_tokens=generation.max_new_tokens, temperature=generation.temperature, top_p=generation.top_p, seed=seed)


def _needs_embedder(config: StudyConfig, arms: list[str], local_rag: bool) -> bool:
    wants_ft = any(arm in FT_ARMS for arm in arms)  # decontaminating the training set embeds it
    return local_rag or wants_ft or any(judge.kind == "embedding_similarity" for judge in config.judges)


def prepare_inputs(config: StudyConfig, arms: list[str], limit: int | None, simulate: bool = False) -> StudyInputs:
    """Load the eval set, and where an arm retrieves, the corpus and its index."""
    from localnova.data.eval_set import load_eval_set

    items = load_eval_set(config.eval.path, limit or config.eval.limit)
    inputs = StudyInputs(items)
    local_rag = any(arm in RAG_ARMS for arm in arms) and (simulate or not config.retrieval.knowledge_base_id)
    documents = None
    if local_rag:
        from localnova.corpus import load_documents

        documents = load_documents(config.corpus.path)  # before any model loads: a bad corpus fails fast
    if _needs_embedder(config, arms, local_rag):
        from localnova.embedder import Embedder

        inputs.embedder = Embedder(config.retrieval.embedding_model)
    if any(arm in RAG_ARMS for arm in arms) and config.retrieval.knowledge_base_id and not simulate:
        from localnova.bedrock.knowledge_base import KnowledgeBaseRetriever, corpus_prefix

        retriever = KnowledgeBaseRetriever(config.retrieval.knowledge_base_id, corpus_prefix(config), config.bedrock.region)
        inputs.retrieved = retriever.search([item.question for item in items], config.retrieval.top_k)
        inputs.retrieval_info = {"knowledge_base_id": config.retrieval.knowledge_base_id, "top_k": config.retrieval.top_k}
    elif local_rag:
        # A dry run of the Bedrock path retrieves from the local index over the same corpus,
        # so its simulated rag prompts are of realistic size.
        index, rebuilt = build_index(config, inputs.embedder, documents)
        inputs.retrieved = index.search([item.question for item in items], config.retrieval.top_k)
        inputs.retrieval_info = {"index_rebuilt": rebuilt, "chunks": len(index), "top_k": config.retrieval.top_k}
    return inputs


def build_index(config: StudyConfig, embedder=None, documents=None):
    """Build the study's FAISS index, or load it when corpus, chunking and embedder are unchanged."""
    from localnova.corpus import chunk_documents, corpus_hash, load_documents
    from localnova.embedder import Embedder
    from localnova.retrieval import build_or_load_index

    documents = documents if documents is not None else load_documents(config.corpus.path)
    embedder = embedder or Embedder(config.retrieval.embedding_model)
    chunking = config.corpus.chunking
    manifest_inputs = {"corpus_hash": corpus_hash(documents), "chunking": chunking.model_dump(mode="json")}

    def make_chunks():
        return chunk_documents(documents, chunking, embedder.tokenizer, embed=embedder)

    return build_or_load_index(
        make_chunks, config.study_dir / "index", embedder, config.retrieval.index, manifest_inputs, batch_size=config.retrieval.batch_size
    )


def answer_metrics(items: list[EvalItem], store, top_k: int) -> dict[str, Any]:
    """Per model x arm: recall@k, token F1, ROUGE-L, mean latency and tokens."""
    from localnova.evaluate.metrics import rouge_l, token_f1
    from localnova.retrieval import recall_at_k

    truth = {item.question_id: item for item in items}
    cells: dict[str, dict[str, Any]] = {}
    grouped: dict[tuple[str, str], list] = {}
    for answer in store.answers():
        grouped.setdefault((answer.model, answer.arm), []).append(answer)
    for (model, arm), answers in sorted(grouped.items()):
        count = len(answers)
        cell = {
            "model": model,
            "arm": arm,
            "questions": count,
            "token_f1": sum(token_f1(a.result.text, truth[a.question_id].answer) for a in answers) / count,
            "rouge_l": sum(rouge_l(a.result.text, truth[a.question_id].answer) for a in answers) / count,
            "mean_latency_ms": sum(a.result.latency_ms for a in answers) / count,
            "latency_method": answers[0].result.latency_method,
            "mean_input_tokens": sum(a.result.input_tokens for a in answers) / count,
            "mean_output_tokens": sum(a.result.output_tokens for a in answers) / count,
        }
        if answers[0].retrieved:
            cell[f"recall_at_{top_k}"] = recall_at_k(
                [[chunk["doc_id"] for chunk in a.retrieved] for a in answers], [truth[a.question_id].doc_ids for a in answers]
            )
        cells[f"{model}/{arm}"] = cell
    return cells


def write_answers_jsonl(store, items: list[EvalItem], path: Path) -> int:
    truth = {item.question_id: item for item in items}
    lines = []
    for answer in store.answers():
        lines.append(json.dumps({
            "run_id": answer.run_id,
            "model": answer.model,
            "arm": answer.arm,
            "question_id": answer.question_id,
            "question": truth[answer.question_id].question,
            "ground_truth": truth[answer.question_id].answer,
            "prompt": answer.request["messages"],
            "generation_params": answer.request["params"],
            "answer": answer.result.text,
            "input_tokens": answer.result.input_tokens,
            "output_tokens": answer.result.output_tokens,
            "latency_ms": answer.result.latency_ms,
            "latency_method": answer.result.latency_method,
            "batch_size": answer.result.batch_size,
            "server_latency_ms": answer.result.server_latency_ms,
            "retrieved": answer.retrieved,
            "generation_key": answer.generation_key,
        }, ensure_ascii=False))
    write_atomically(path, "\n".join(lines) + "\n")
    return len(lines)


def check_models(config: StudyConfig) -> dict[str, dict[str, str]]:
    """Resolve every locally loaded model before anything is written, so an unknown name or an
    unwritable cache stops the run with one line and no half-made study folder. Returns where
    each came from, for the run's record."""
    from localnova.models import resolve_model

    local = [m for m in config.models if m.backend in LOCAL_BACKENDS]
    local += [j.model for j in config.judges if j.model is not None and j.model.backend in LOCAL_BACKENDS]
    sources = {}
    for model in local:
        resolved = resolve_model(model.model, model.revision)
        sources[model.name] = {"model": model.model, "source": resolved.source, "fingerprint": resolved.fingerprint}
    embedder = resolve_model(config.retrieval.embedding_model)
    sources["embedding"] = {"model": embedder.name, "source": embedder.source, "fingerprint": embedder.fingerprint}
    return sources


def simulated_model(model: ModelConfig) -> ModelConfig:
    """The same model answered by the deterministic simulated backend (dry runs)."""
    return model.model_copy(update={"backend": "simulated"})


def build_judges(config: StudyConfig, inputs: StudyInputs, simulate: bool):
    """(judge, backend or None) for every judge of the panel."""
    from localnova.backends import create_backend
    from localnova.evaluate.judges import EmbeddingSimilarityJudge, LLMJudge, TokenF1Judge

    panel = []
    for judge_config in config.judges:
        if judge_config.kind == "token_f1":
            panel.append((TokenF1Judge(judge_config), None))
        elif judge_config.kind == "embedding_similarity":
            from localnova.embedder import Embedder

            embedder = inputs.embedder
            if embedder is None or judge_config.embedding_model != config.retrieval.embedding_model:
                embedder = Embedder(judge_config.embedding_model)
            panel.append((EmbeddingSimilarityJudge(judge_config, embedder, json.dumps(embedder.identity, sort_keys=True)), None))
        else:
            model = simulated_model(judge_config.model) if simulate else judge_config.model
            backend = create_backend(model)
            panel.append((LLMJudge(judge_config, backend.identity), backend))
    return panel


def run_answers(
    config: StudyConfig, store, inputs: StudyInputs, arms: list[str], adapters: dict[str, str], simulate: bool, timings: dict[str, float]
) -> list:
    from localnova.backends import create_backend
    from localnova.evaluate.runner import answer_arm

    all_answers = []
    for model in config.models:
        params = generation_params(model, config.seed)
        backend_model = simulated_model(model) if simulate else model
        for with_adapter in (False, True):
            group = [arm for arm in arms if uses_adapter(arm) == with_adapter]
            if not group:
                continue
            with timed(timings, f"load {model.name}" + (" + adapter" if with_adapter else "")):
                backend = create_backend(backend_model, adapter_path=adapters.get(model.name) if with_adapter else None)
            try:
                for arm in group:
                    with timed(timings, f"answers {model.name}/{arm}"):
                        all_answers.append(
                            answer_arm(store, backend, model.name, arm, inputs.items, inputs.retrieved, params, model.generation.batch_size)
                        )
            finally:
                backend.close()
    return all_answers


def run_judges(config: StudyConfig, store, inputs: StudyInputs, answers: list, simulate: bool, timings: dict[str, float]) -> dict[str, int]:
    """Every judge over every answer and control; returns how many judgments each made now."""
    from localnova.evaluate.runner import judge_inputs, run_judge

    judge_items = judge_inputs(inputs.items, answers, config.eval.controls)
    made = {}
    with timed(timings, "load judges"):
        panel = build_judges(config, inputs, simulate)
    for judge, backend in panel:
        batch_size = 16
        if backend is not None:
            batch_size = next(j.model.generation.batch_size for j in config.judges if j.name == judge.name)
        try:
            with timed(timings, f"judge {judge.name}"):
                made[judge.name] = run_judge(store, judge, judge_items, backend, batch_size)[1]
        finally:
            if backend is not None:
                backend.close()
    return made


def prepare_adapters(config: StudyConfig, models: list[ModelConfig], embedder=None) -> dict[str, str]:
    """Train (or reuse) one LoRA adapter per local answer model, for the ft arms; the training
    pairs are decontaminated against the whole eval set, not only the questions of this run."""
    from localnova.finetune.stage import adapters_for_study

    return adapters_for_study(config, models, embed=embedder)


def run_study(
    config: StudyConfig,
    arms: list[str] | None = None,
    limit: int | None = None,
    simulate: bool = False,
    report: bool = True,
    adapters: dict[str, str] | None = None,
    artifacts: dict[str, Any] | None = None,
) -> Path:
    """Run the study the config describes; return its folder. `simulate` answers every model
    call with the deterministic simulated backend (the offline dry run). `adapters` maps a
    model name to what its ft arms load (an adapter folder, or a Bedrock ARN); without it the
    local adapters are trained or reused. `artifacts` are saved with the run (cost estimates)."""
    from localnova.optional import cpu_supports_bf16, gpu_description
    from localnova.store import Store, environment_info

    arms = arms or list(config.arms)
    unknown = [arm for arm in arms if arm not in config.arms]
    if unknown:
        raise UserError(f"--arms {','.join(unknown)}: not among the config's arms ({', '.join(config.arms)})")
    study_dir = config.study_dir
    timings: dict[str, float] = {}
    if any(arm in FT_ARMS for arm in arms) and not simulate:
        from localnova.finetune.presets import check_hyperparameters

        check_hyperparameters(config.finetune)  # a bound broken: one line, before any model loads
    model_sources = {} if simulate else check_models(config)
    with timed(timings, "eval set, corpus and index"):
        inputs = prepare_inputs(config, arms, limit, simulate)
    if adapters is None:
        adapters = {}
        if any(arm in FT_ARMS for arm in arms):
            with timed(timings, "fine-tuning (or reuse)"):
                adapters = {m.name: "simulated-adapter" for m in config.models} if simulate else prepare_adapters(config, config.models, inputs.embedder)
    judgments_made: dict[str, int] = {}

    store = Store(study_dir)
    run_config = {"config": config_to_dict(config), "arms": arms, "limit": limit, "simulated": simulate}
    environment = {**environment_info(), "gpu": gpu_description(), "cpu_supports_bf16": cpu_supports_bf16(), "models": model_sources}
    run_id = store.start_run(config.name, run_config, environment)
    write_atomically(study_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    log.info("study %s, run %s, in %s", config.name, run_id, study_dir)
    complete = False
    try:
        if simulate:
            store.save_artifact("simulated", True)
        for name, value in (artifacts or {}).items():
            store.save_artifact(name, value)
        store.save_artifact("retrieval", inputs.retrieval_info)
        store.save_artifact("eval_items", [{"question_id": i.question_id, "question": i.question, "answer": i.answer} for i in inputs.items])
        data_report = study_dir / "data" / "training_data_report.json"
        if adapters and data_report.is_file():
            store.save_artifact("training_data", json.loads(data_report.read_text()))
        for model_name, adapter_path in adapters.items():
            curve_file = Path(adapter_path) / "localnova_adapter.json"
            if curve_file.is_file():
                store.save_artifact(f"loss_curve:{model_name}", json.loads(curve_file.read_text()).get("loss_curve", []))
        answers = run_answers(config, store, inputs, arms, adapters, simulate, timings)
        judgments_made = run_judges(config, store, inputs, answers, simulate, timings)
        metrics = answer_metrics(inputs.items, store, config.retrieval.top_k)
        store.save_artifact("answer_metrics", metrics)
        if config.bedrock is not None:
            from localnova.bedrock.study import actual_spend

            store.save_artifact("cost_actual" + ("_simulated" if simulate else ""), actual_spend(store, config))
        write_answers_jsonl(store, inputs.items, study_dir / "answers.jsonl")
        complete = True
    finally:
        store.finish_run(complete)
        info = store.run_info()
        summary = {
            "run_id": run_id,
            "status": info["status"],
            "model_calls": info["model_calls"],
            "cached_calls": info["cached_calls"],
            "questions": len(inputs.items),
            "arms": arms,
            "simulated": simulate,
            "retrieval": inputs.retrieval_info,
            "answer_metrics": store.artifacts().get("answer_metrics", {}),
            "judgments_made": judgments_made,
            "timings_s": timings,
        }
        write_atomically(study_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        store.close()
    if report:
        from localnova.report.collect import collect_run
        from localnova.report.render import write_report

        with timed(timings, "report"):
            write_report([collect_run(study_dir, run_id)], study_dir)
        log.info("stage timings (s): %s", timings)
    return study_dir


def gen_qa_for_study(config: StudyConfig) -> int:
    """`localnova gen-qa`: Q&A pairs from the corpus chunks by the configured generator (or the
    first answer model), filtered, decontaminated and split, into <study>/gen_qa/."""
    from localnova.backends import create_backend
    from localnova.corpus import chunk_documents, load_documents
    from localnova.data.eval_set import load_eval_set
    from localnova.data.gen_qa import gen_qa_command
    from localnova.embedder import Embedder

    eval_items = load_eval_set(config.eval.path)
    documents = load_documents(config.corpus.path)
    embedder = Embedder(config.retrieval.embedding_model)
    chunks = chunk_documents(documents, config.corpus.chunking, embedder.tokenizer, embed=embedder)
    backend = create_backend(config.gen_qa.generator or config.models[0])
    try:
        return gen_qa_command(config, chunks, eval_items, backend, embedder, config.study_dir / "gen_qa")
    finally:
        backend.close()

"""The fine-tuning stage of a study: training data checked against the eval set, then one LoRA
adapter per local answer model, trained or reused.

The training pairs are decontaminated against the evaluation questions first (n-gram overlap
and embedding similarity): a fine-tuned arm must not score well by having seen the test.
Every pair gets the same system prompt the answer arms use, so the fine-tuned model is trained
in the context it is asked in.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from localnova.config import LOCAL_BACKENDS, StudyConfig
from localnova.data.eval_set import load_eval_set
from localnova.data.formats import read_training_pairs
from localnova.data.gen_qa import generated_train_file
from localnova.data.qa_filters import DataReport, EmptyTrainingSet, decontaminate
from localnova.embedder import Embedder, EmbedFn
from localnova.errors import UserError
from localnova.evaluate.arms import SYSTEM_PROMPT
from localnova.files import json_text, write_text_atomic
from localnova.finetune.lora import METADATA_FILE, find_or_train_adapter, load_adapter_check
from localnova.finetune.presets import check_hyperparameters
from localnova.models import resolve_model

log = logging.getLogger("localnova.finetune")

TRAINING_REPORT_FILE = "training_data_report.json"


def training_file(config: StudyConfig) -> Path:
    """The training set, for local LoRA and Bedrock customization alike: the configured file,
    else what `localnova gen-qa` wrote."""
    path = Path(config.finetune.train_path or generated_train_file(config.study_dir))
    if not path.is_file():
        raise UserError(f"finetune.train_path: {path} not found; set it or run `localnova gen-qa CONFIG` first")
    return path


def training_report_path(config: StudyConfig) -> Path:
    """Where the stage writes what it did to the training set (kept, dropped, sampled)."""
    return config.study_dir / "data" / TRAINING_REPORT_FILE


def training_records(config: StudyConfig, eval_items, embed: EmbedFn) -> tuple[list[dict], list[dict] | None, dict[str, Any]]:
    """(train records, validation records or None, data report) for local training."""
    train_path = training_file(config)
    pairs = read_training_pairs(train_path)
    report = DataReport(source=str(train_path), grounding_checked=False, input_pairs=len(pairs), parsed_pairs=len(pairs))
    gen_qa = config.gen_qa
    report.settings.update(decontam_ngram=gen_qa.decontam_ngram, decontam_similarity=gen_qa.decontam_similarity)
    pairs, _ = decontaminate(pairs, eval_items, embed, gen_qa.decontam_ngram, gen_qa.decontam_similarity, report=report)
    if not pairs:
        report.status = "empty"
        raise EmptyTrainingSet(report, str(train_path))
    limit = config.finetune.max_train_pairs
    if limit is not None and len(pairs) > limit:
        kept = sorted(random.Random(config.seed).sample(range(len(pairs)), limit))
        report.settings["sampled"] = f"{limit} of {len(pairs)} pairs (finetune.max_train_pairs, seed {config.seed})"
        pairs = [pairs[index] for index in kept]
    report.train_pairs = len(pairs)
    train = [pair.to_record(system_prompt=SYSTEM_PROMPT).to_dict() for pair in pairs]
    validation = None
    if config.finetune.validation_path:
        validation = [p.to_record(system_prompt=SYSTEM_PROMPT).to_dict() for p in read_training_pairs(config.finetune.validation_path)]
    return train, validation, report.to_dict()


def adapters_for_study(config: StudyConfig, models, eval_items=None, embed=None) -> dict[str, str]:
    """Train or reuse one adapter per local answer model; returns model name -> adapter folder.
    Bedrock models are fine-tuned by customization jobs instead (bedrock/study.py)."""
    local_models = [model for model in models if model.backend in LOCAL_BACKENDS]
    adapters = {}
    for model in [m for m in local_models if m.adapter is not None]:
        # A given adapter must have been trained on this very base model.
        load_adapter_check(resolve_model(model.model, model.revision), model.adapter)
        adapters[model.name] = str(model.adapter)
    local_models = [model for model in local_models if model.adapter is None]
    if not local_models:
        return adapters
    check_hyperparameters(config.finetune)  # out-of-bounds settings stop before anything loads
    if eval_items is None:
        eval_items = load_eval_set(config.eval.path)
    if embed is None:
        embed = Embedder(config.retrieval.embedding_model)
    train, validation, report = training_records(config, eval_items, embed)
    write_text_atomic(training_report_path(config), json_text(report))
    log.info("training pairs: %d kept, %d dropped as too close to the eval set", report["train_pairs"], report["dropped_contaminated"])
    for model in local_models:
        base = resolve_model(model.model, model.revision)
        info = find_or_train_adapter(base, train, validation, config.finetune, config.study_dir / "adapters" / model.name, config.seed)
        adapters[model.name] = str(info.path)
    return adapters


def adapter_artifacts(config: StudyConfig, adapters: dict[str, str]) -> dict[str, Any]:
    """What the report shows of the fine-tuning: the training-data report, and each trained
    adapter's loss curve (adapters trained elsewhere, or Bedrock ARNs, have none here)."""
    artifacts: dict[str, Any] = {}
    report_path = training_report_path(config)
    if adapters and report_path.is_file():
        artifacts["training_data"] = json.loads(report_path.read_text(encoding="utf-8"))
    for model_name, adapter in adapters.items():
        metadata = Path(adapter) / METADATA_FILE
        if metadata.is_file():
            artifacts[f"loss_curve:{model_name}"] = json.loads(metadata.read_text(encoding="utf-8")).get("loss_curve", [])
    return artifacts

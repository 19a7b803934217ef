"""The fine-tuning stage of a study: training data checked against the eval set, then one LoRA
adapter per local answer model, trained or reused.

The training pairs are decontaminated against the evaluation questions first (n-gram overlap
and embedding similarity): a fine-tuned arm must not score well by having seen the test.
Every pair gets the same system prompt the answer arms use, so the fine-tuned model is trained
in the context it is asked in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from localnova.config import LOCAL_BACKENDS, StudyConfig
from localnova.data.eval_set import load_study_eval_set
from localnova.data.formats import read_training_pairs
from localnova.data.gen_qa import generated_train_file
from localnova.data.qa_filters import DataReport, EmptyTrainingSet, decontaminate
from localnova.data.tables import source_exists, source_fingerprint
from localnova.embedder import Embedder, EmbedFn
from localnova.errors import UserError
from localnova.evaluate.arms import SYSTEM_PROMPT
from localnova.evaluate.seeds import replicate_name
from localnova.files import json_text, write_text_atomic
from localnova.finetune.lora import (
    METADATA_FILE,
    AdapterInfo,
    find_or_train_adapter,
    load_adapter_check,
    read_adapter_info,
    trained_alike,
)
from localnova.finetune.presets import check_hyperparameters
from localnova.models import resolve_model
from localnova.types import stable_hash

log = logging.getLogger("localnova.finetune")

TRAINING_REPORT_FILE = "training_data_report.json"


def training_file(config: StudyConfig) -> Path:
    """The training set, for local LoRA and Bedrock customization alike: the configured file,
    else what `localnova gen-qa` wrote."""
    path = Path(config.finetune.train_path or generated_train_file(config.study_dir))
    if not source_exists(path):
        raise UserError(f"finetune.train_path: {path} not found; set it or run `localnova gen-qa CONFIG` first")
    return path


def sample_training_pairs(pairs: list, limit: int | None, seed: int) -> tuple[list, str]:
    """At most `limit` pairs (finetune.max_train_pairs), a seeded sample kept in file order,
    and what was done ('' when nothing was dropped): the local and the Bedrock path alike."""
    if limit is None or len(pairs) <= limit:
        return pairs, ""
    kept = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    return [pairs[index] for index in kept], f"{limit} of {len(pairs)} pairs (finetune.max_train_pairs, seed {seed})"


def training_report_path(config: StudyConfig) -> Path:
    """Where the stage writes what it did to the training set (kept, dropped, sampled)."""
    return config.study_dir / "data" / TRAINING_REPORT_FILE


def training_records(config: StudyConfig, eval_items, embed: EmbedFn) -> tuple[list[dict], list[dict] | None, dict[str, Any]]:
    """(train records, validation records or None, data report) for local training."""
    train_path = training_file(config)
    pairs = read_training_pairs(train_path, config.finetune.train_fields, config.finetune.train_split)
    report = DataReport(source=str(train_path), grounding_checked=False, input_pairs=len(pairs), parsed_pairs=len(pairs))
    gen_qa = config.gen_qa
    report.settings.update(decontam_ngram=gen_qa.decontam_ngram, decontam_similarity=gen_qa.decontam_similarity)
    pairs, _ = decontaminate(pairs, eval_items, embed, gen_qa.decontam_ngram, gen_qa.decontam_similarity, report=report)
    if not pairs:
        report.status = "empty"
        raise EmptyTrainingSet(report, str(train_path))
    pairs, sampled = sample_training_pairs(pairs, config.finetune.max_train_pairs, config.seed)
    if sampled:
        report.settings["sampled"] = sampled
    report.train_pairs = len(pairs)
    train = [pair.to_record(system_prompt=SYSTEM_PROMPT).to_dict() for pair in pairs]
    validation = None
    if config.finetune.validation_path:
        validation_pairs = read_training_pairs(config.finetune.validation_path, config.finetune.train_fields, config.finetune.train_split)
        validation = [p.to_record(system_prompt=SYSTEM_PROMPT).to_dict() for p in validation_pairs]
    return train, validation, report.to_dict()


def training_source_key(config: StudyConfig, embed) -> str:
    """A key over everything the training records are made from: the training and validation
    files, the eval set they are decontaminated against, the filters, the sample size, the seed
    and the embedder. "" when the embedder cannot say what it is (then nothing is reused on it)."""
    identity = getattr(embed, "identity", None)
    if identity is None:
        return ""
    files = [training_file(config), Path(config.eval.path)]
    if config.finetune.validation_path:
        files.append(Path(config.finetune.validation_path))
    gen_qa = config.gen_qa
    # the field maps and splits decide which columns and rows are read; in the key only when
    # set, so adapters trained before they existed are still reused
    reading = {
        "train_fields": config.finetune.train_fields,
        "train_split": config.finetune.train_split,
        "eval_fields": config.eval.fields,
        "eval_split": config.eval.split,
    }
    field_maps = {"reading": reading} if any(reading.values()) else {}
    return stable_hash(
        {
            "files": [source_fingerprint(path) for path in files],
            **field_maps,
            "filters": [gen_qa.decontam_ngram, gen_qa.decontam_similarity],
            "max_train_pairs": config.finetune.max_train_pairs,
            "seed": config.seed,
            "system_prompt": SYSTEM_PROMPT,
            "embedder": identity,
        }
    )


def reusable_adapter(base_model, config, out_dir: Path, seed: int, source_key: str) -> AdapterInfo | None:
    """The adapter at `out_dir` when it was trained on `base_model` with these settings and seed
    from records of the same `source_key`: reusable without rebuilding (or even reading) them."""
    existing = read_adapter_info(Path(out_dir))
    if not source_key or not trained_alike(existing, base_model, config, seed) or existing.source_key != source_key:
        return None
    existing.reused = True
    return existing


def training_seeds(config: StudyConfig) -> list[int]:
    """The seeds local training trains an adapter with, one each: finetune.seeds, else the study's."""
    return list(config.finetune.seeds or [config.seed])


def adapter_folder(config: StudyConfig, model_name: str, seed: int) -> Path:
    """Where a model's adapter for `seed` lives: adapters/<model> for the first training seed
    (as with a single seed), adapters/<model>-seed<seed> for the others."""
    first = seed == training_seeds(config)[0]
    return config.study_dir / "adapters" / (model_name if first else f"{model_name}-seed{seed}")


def adapter_hashes(adapters: dict[str, str]) -> dict[str, str]:
    """{name: sha256 of its files} of the adapters that are folders here (trained or given):
    a run's identity holds them. A Bedrock custom model (an ARN) is left out: its study keys
    its runs by config, and its resumption looks them up that way."""
    hashes = {}
    for name, adapter in adapters.items():
        folder = Path(adapter)
        if folder.is_dir():
            digest = hashlib.sha256()
            # the adapter's own files (weights, adapter config, tokenizer), not localnova's notes on it
            for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != METADATA_FILE):
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
            hashes[name] = digest.hexdigest()[:16]
    return hashes


def adapters_for_study(config: StudyConfig, models, eval_items=None, embed=None) -> dict[str, str]:
    """Train or reuse one adapter per local answer model and training seed (`training_seeds`);
    returns name -> adapter folder, the name being the model's for its first seed and
    `seeds.replicate_name(model, seed)` for the others. An adapter trained from the same
    sources is reused before the training records are rebuilt, so a rerun loads no embedder
    for decontamination. Bedrock models are fine-tuned by customization jobs instead
    (bedrock/study.py), one each."""
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
    if embed is None:
        embed = Embedder(config.retrieval.embedding_model)
    source_key = training_source_key(config, embed)
    to_train = []
    seeds = training_seeds(config)
    for model in local_models:
        base = resolve_model(model.model, model.revision)
        for seed in seeds:
            name = model.name if seed == seeds[0] else replicate_name(model.name, seed)
            reused = reusable_adapter(base, config.finetune, adapter_folder(config, model.name, seed), seed, source_key)
            if reused is not None:
                log.info("reusing adapter at %s (trained from the same data, settings and seed)", reused.path)
                adapters[name] = reused.path
            else:
                to_train.append((name, model, base, seed))
    if not to_train:
        return adapters
    if eval_items is None:
        eval_items = load_study_eval_set(config.eval)
    train, validation, report = training_records(config, eval_items, embed)
    write_text_atomic(training_report_path(config), json_text(report))
    log.info("training pairs: %d kept, %d dropped as too close to the eval set", report["train_pairs"], report["dropped_contaminated"])
    for name, model, base, seed in to_train:
        out_dir = adapter_folder(config, model.name, seed)
        info = find_or_train_adapter(base, train, validation, config.finetune, out_dir, seed, source_key=source_key)
        adapters[name] = str(info.path)
    return adapters


def adapter_artifacts(config: StudyConfig, adapters: dict[str, str], recipe: str = "sft") -> dict[str, Any]:
    """What the report shows of the fine-tuning of one recipe: the training-data report, and
    each trained adapter's loss curve (adapters trained elsewhere, or Bedrock ARNs, have none
    here). The sft recipe's keep the names they always had; another recipe's carry its name."""
    artifacts: dict[str, Any] = {}
    suffix = "" if recipe == "sft" else f"_{recipe}"
    report_path = training_report_path(config).with_name(TRAINING_REPORT_FILE.replace(".json", f"{suffix}.json"))
    if adapters and report_path.is_file():
        artifacts[f"training_data{suffix}"] = json.loads(report_path.read_text(encoding="utf-8"))
    for model_name, adapter in adapters.items():
        metadata = Path(adapter) / METADATA_FILE
        if metadata.is_file():
            name = model_name if recipe == "sft" else f"{model_name} ({recipe})"
            artifacts[f"loss_curve:{name}"] = json.loads(metadata.read_text(encoding="utf-8")).get("loss_curve", [])
    return artifacts

"""Local LoRA and QLoRA fine-tuning with TRL's SFTTrainer (finetune/trainer.py) and peft.

One function trains (`train_adapter`), one reuses or trains (`find_or_train_adapter`) and one
checks that an adapter belongs to a base model (`load_adapter_check`). The same training
function runs alone or under `accelerate launch` (DDP; gloo on CPU), where only rank 0 writes.

The loss covers the assistant turns only. We build the labels ourselves from the model's own
chat template instead of using TRL's `assistant_only_loss`, which needs `{% generation %}`
markers that most templates (SmolLM2's among them) lack.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.files import write_text_atomic
from localnova.finetune.chat_data import build_dataset
from localnova.finetune.presets import check_hyperparameters
from localnova.finetune.trainer import build_trainer, check_trainer_settings, training_settings
from localnova.optional import Precision, cuda_available, pick_precision, require, version_problems
from localnova.types import stable_hash

log = logging.getLogger(__name__)

METADATA_FILE = "localnova_adapter.json"
# Whose versions training depends on (optional.VERSION_FLOORS); bitsandbytes too for QLoRA.
TRAINING_PACKAGES = {"transformers", "peft", "trl", "datasets", "accelerate"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class AdapterInfo:
    """A trained adapter and how it came to be; `localnova_adapter.json` holds the same fields."""

    path: str
    base_model: str
    base_fingerprint: str
    data_hash: str
    settings: dict[str, Any]
    seed: int
    dtype: str = ""
    device: str = ""
    world_size: int = 1
    distributed_backend: str | None = None  # "nccl" or "gloo" when trained on several processes
    # How accelerate ran the training ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP", ...) and the class
    # the model was wrapped in for it: a launch that fell back (accelerate never shards with FSDP
    # on a CPU) still trains to the right loss, so only these say what ran.
    distributed_type: str = ""
    wrapped_as: str = ""
    # bitsandbytes Linear4bit layers in the loaded base (QLoRA): a 4-bit load that quietly
    # stayed in full precision has none
    linear_4bit_layers: int = 0
    train_examples: int = 0
    validation_hash: str | None = None
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0
    train_tokens_per_s: float = 0.0
    resumed_from_step: int | None = None
    # What the training records were made from (files, eval set, filters, embedder), so a rerun
    # can reuse the adapter without rebuilding the records; "" when not known.
    source_key: str = ""
    reused: bool = False  # set on return, never saved

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("reused")
        return data

    @staticmethod
    def from_json(data: dict[str, Any], path: Path) -> "AdapterInfo":
        known = {name for name in AdapterInfo.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        values["path"] = str(path)
        return AdapterInfo(**values)


def choose_precision(config) -> Precision:
    """Device, weights' dtype and autocast for training, from the hardware; `config.precision`
    other than 'auto' wins. The table is optional.precision_for, shared with inference and
    the memory plan."""
    return pick_precision(config.precision, "training")


def check_4bit_backend(device: str) -> None:
    """QLoRA trains where bitsandbytes can quantize: on a CUDA GPU, and on the CPU with a
    bitsandbytes that has a CPU backend (0.50 has one). Asked of bitsandbytes itself, by
    quantizing a small tensor on the device, before any model loads."""
    require("bitsandbytes", "4-bit QLoRA (finetune.quantization: 4bit)")
    import torch
    from bitsandbytes.functional import quantize_4bit

    try:
        quantize_4bit(torch.ones(64, dtype=torch.bfloat16, device=device), quant_type="nf4")
    except (RuntimeError, NotImplementedError, ValueError) as error:
        where = "this GPU" if device.startswith("cuda") else "the CPU"
        raise UserError(
            f"4-bit QLoRA: bitsandbytes cannot quantize on {where} ({str(error).splitlines()[0][:160]}); "
            "install bitsandbytes 0.50 or newer, or train without finetune.quantization"
        ) from None


def data_hash(records: list[dict]) -> str:
    return stable_hash(records)


def check_before_loading(config, train_records: list[dict]) -> None:
    """Everything a user can get wrong that is knowable without loading a model."""
    check_hyperparameters(config)
    if config.quantization == "4bit":
        check_4bit_backend(choose_precision(config).device)
    check_trainer_settings(config, on_cuda=cuda_available())
    problems = version_problems(only=TRAINING_PACKAGES | ({"bitsandbytes"} if config.quantization == "4bit" else set()))
    if problems:
        raise UserError("; ".join(problems))
    if not train_records:
        raise UserError("the training set is empty: nothing to fine-tune on")
    for index, record in enumerate(train_records):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise UserError(f"training record {index + 1}: expected {{'messages': [...]}} with at least one message")
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            raise UserError(f"training record {index + 1}: no assistant message to learn from")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
                raise UserError(f"training record {index + 1}: each message needs a 'role' and a string 'content'")


def load_base(base_model, config, precision: Precision):
    """The tokenizer and the peft-wrapped base model (4-bit for QLoRA), LoRA from config.lora."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path, revision=base_model.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load_kwargs: dict[str, Any] = {"dtype": getattr(torch, precision.dtype), "revision": base_model.revision}  # the keyed commit
    if config.quantization == "4bit":
        require("bitsandbytes", "4-bit QLoRA")
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        load_kwargs["dtype"] = torch.bfloat16
        # The quantized weights are made where they load: each DDP rank puts its whole copy on
        # its own GPU, or on the CPU when that is where training runs.
        load_kwargs["device_map"] = {"": quantized_device(precision.device)}
    model = AutoModelForCausalLM.from_pretrained(base_model.path, **load_kwargs)
    if config.quantization == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model, lora)


def quantized_device(device: str) -> int | str:
    """Where a 4-bit model loads (from_pretrained's device_map): the GPU of this process's
    local rank, or "cpu"."""
    return int(os.environ.get("LOCAL_RANK", "0")) if device.startswith("cuda") else device


def checkpoint_dir(out_dir: Path, run_key: str) -> Path:
    """Checkpoints live beside the adapter, keyed by what they were trained from."""
    return out_dir.parent / "checkpoints" / f"{out_dir.name}-{run_key}"


def _last_checkpoint(folder: Path) -> Path | None:
    steps = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    complete = [(step, p) for step, p in steps if (p / "trainer_state.json").exists()]
    return max(complete)[1] if complete else None


def _curves(log_history: list[dict]) -> tuple[list[dict], list[dict]]:
    loss_curve = [{"step": e["step"], "loss": e["loss"], "epoch": e.get("epoch")} for e in log_history if "loss" in e]
    eval_curve = [{"step": e["step"], "eval_loss": e["eval_loss"], "epoch": e.get("epoch")} for e in log_history if "eval_loss" in e]
    return loss_curve, eval_curve


def _save_adapter_atomically(trainer, info: AdapterInfo, out_dir: Path, run_key: str) -> None:
    """Save into a staging folder beside out_dir, then swap it in, so an interrupted run never
    leaves half an adapter at out_dir. Every rank calls this: under FSDP, gathering the
    adapter's shards is collective; the Trainer writes files on rank 0 only."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}-{run_key}-staging"
    try:
        if trainer.is_world_process_zero() and staging.exists():
            shutil.rmtree(staging)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(staging))  # the adapter (peft's save_pretrained) and the tokenizer
        if trainer.is_world_process_zero():
            (staging / "training_args.bin").unlink(missing_ok=True)
            (staging / METADATA_FILE).write_text(json.dumps(info.to_json(), indent=2), encoding="utf-8")
            old = None
            if out_dir.exists():
                old = out_dir.parent / f".{out_dir.name}-old-{os.getpid()}"
                os.replace(out_dir, old)
            os.replace(staging, out_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        raise


def train_adapter(
    base_model,
    train_records: list[dict],
    validation_records: list[dict] | None,
    config,
    out_dir: Path,
    seed: int,
    max_steps: int | None = None,
    save_steps: int | None = None,
    callbacks: list | None = None,
    source_key: str = "",
) -> AdapterInfo:
    """Train a LoRA (or QLoRA) adapter on chat records and save it at `out_dir`.

    `base_model` is a ResolvedModel, `config` a FinetuneConfig. Bad settings or data raise a
    UserError before anything loads. Resumes from the last checkpoint of an interrupted run on
    the same data and settings. `max_steps` caps the run (tests, smoke runs); `save_steps`
    checkpoints every so many steps instead of once per epoch; `callbacks` go to the Trainer.
    """
    check_before_loading(config, train_records)
    precision = choose_precision(config)
    import transformers

    out_dir = Path(out_dir)
    settings = training_settings(config, max_steps)
    train_hash = data_hash(train_records)
    run_key = stable_hash({"base": base_model.fingerprint, "data": train_hash, "settings": settings, "seed": seed}, 12)
    checkpoints = checkpoint_dir(out_dir, run_key)

    transformers.set_seed(seed)  # before the model: LoRA's initial weights are random
    tokenizer, model = load_base(base_model, config, precision)
    # bitsandbytes' own layers: peft's LoRA wrapper around each is also named Linear4bit
    linear_4bit_layers = sum(
        type(module).__name__ == "Linear4bit" and type(module).__module__.startswith("bitsandbytes") for module in model.modules()
    )
    train_dataset = build_dataset(tokenizer, train_records, config.max_seq_length)
    eval_dataset = build_dataset(tokenizer, validation_records, config.max_seq_length, "validation") if validation_records else None
    trainer = build_trainer(
        model,
        tokenizer,
        train_dataset,
        eval_dataset,
        config,
        precision,
        checkpoints,
        seed,
        max_steps,
        save_steps,
        callbacks,
        run_name=out_dir.name,
        tracker_dir=out_dir.parent / "tensorboard" / out_dir.name,
    )
    del model  # the trainer holds it from here, and release_trainer lets it go

    resume_from = _last_checkpoint(checkpoints) if checkpoints.exists() else None
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if eval_dataset is not None:
        evaluated_steps = {e["step"] for e in trainer.state.log_history if "eval_loss" in e}
        if trainer.state.global_step not in evaluated_steps:
            trainer.evaluate()
    train_seconds = time.perf_counter() - started

    loss_curve, eval_curve = _curves(trainer.state.log_history)
    # TRL counts the non-padding tokens it trained on, summed over every rank.
    train_tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
    info = AdapterInfo(
        path=str(out_dir),
        base_model=base_model.name,
        base_fingerprint=base_model.fingerprint,
        data_hash=train_hash,
        settings=settings,
        seed=seed,
        dtype=precision.dtype + ("+bf16-autocast" if precision.bf16 and precision.dtype == "float32" else ""),
        device=precision.device,
        world_size=trainer.args.world_size,
        distributed_backend=getattr(trainer.accelerator.state, "backend", None) if trainer.args.world_size > 1 else None,
        distributed_type=str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)),
        wrapped_as=type(trainer.model_wrapped).__name__,
        linear_4bit_layers=linear_4bit_layers,
        train_examples=len(train_dataset),
        validation_hash=data_hash(validation_records) if validation_records else None,
        loss_curve=loss_curve,
        eval_curve=eval_curve,
        train_tokens=train_tokens,
        train_seconds=round(train_seconds, 3),
        train_tokens_per_s=round(train_tokens / train_seconds, 2) if train_seconds > 0 else 0.0,
        resumed_from_step=int(resume_from.name.split("-")[1]) if resume_from else None,
        source_key=source_key,
    )
    _save_adapter_atomically(trainer, info, out_dir, run_key)
    if trainer.is_world_process_zero():
        shutil.rmtree(checkpoints, ignore_errors=True)
        if checkpoints.parent.is_dir() and not any(checkpoints.parent.iterdir()):
            checkpoints.parent.rmdir()
    trainer.accelerator.wait_for_everyone()
    release_trainer(trainer)
    return info


def release_trainer(trainer) -> None:
    """Free the trained model now, not at some later garbage collection: accelerate's forward
    wrapper and the trainer hold it in reference cycles, and the next model to load (a vLLM
    engine in another process sees only what the CUDA cache gives back) needs the memory."""
    import torch

    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    trainer.callback_handler.model = trainer.callback_handler.optimizer = trainer.callback_handler.lr_scheduler = None
    gc.collect()
    if cuda_available():
        torch.cuda.empty_cache()


def read_adapter_info(adapter_dir: Path) -> AdapterInfo | None:
    """The saved metadata of a complete adapter folder, or None."""
    adapter_dir = Path(adapter_dir)
    metadata = adapter_dir / METADATA_FILE
    if not metadata.is_file() or not all((adapter_dir / name).is_file() for name in ADAPTER_FILES):
        return None
    try:
        return AdapterInfo.from_json(json.loads(metadata.read_text(encoding="utf-8")), adapter_dir)
    except (json.JSONDecodeError, TypeError):
        return None


def trained_alike(existing: AdapterInfo | None, base_model, config, seed: int, max_steps: int | None = None) -> bool:
    """Whether `existing` was trained on `base_model` with these settings and seed; which
    records it was trained on, each caller checks its own way."""
    settings_match = existing is not None and existing.settings == training_settings(config, max_steps)
    return settings_match and existing.base_fingerprint == base_model.fingerprint and existing.seed == seed


def find_or_train_adapter(
    base_model,
    train_records: list[dict],
    validation_records: list[dict] | None,
    config,
    out_dir: Path,
    seed: int,
    max_steps: int | None = None,
    save_steps: int | None = None,
    callbacks: list | None = None,
    source_key: str = "",
) -> AdapterInfo:
    """Return the adapter at `out_dir` if it was trained from the same base model, data,
    settings and seed; train it otherwise."""
    check_before_loading(config, train_records)
    existing = read_adapter_info(Path(out_dir))
    if trained_alike(existing, base_model, config, seed, max_steps) and existing.data_hash == data_hash(train_records):
        log.info("reusing adapter at %s (same base model, data hash %s and settings)", out_dir, existing.data_hash)
        if source_key and existing.source_key != source_key:
            # The same records came from these sources: note it, so the next run skips rebuilding them.
            existing.source_key = source_key
            write_text_atomic(Path(out_dir) / METADATA_FILE, json.dumps(existing.to_json(), indent=2))
        existing.reused = True
        return existing
    return train_adapter(base_model, train_records, validation_records, config, out_dir, seed, max_steps, save_steps, callbacks, source_key)


def load_adapter_check(base, adapter_dir: Path) -> AdapterInfo:
    """Check that `adapter_dir` is a LoRA adapter for the base model `base` (a ResolvedModel).

    Ours carry the base fingerprint in localnova_adapter.json; an adapter from elsewhere is
    matched on the base_model_name_or_path that peft wrote.
    """
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not adapter_dir.is_dir() or not config_file.is_file():
        raise UserError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)")
    if not any(adapter_dir.glob("adapter_model.*")):
        raise UserError(f"{adapter_dir}: not an adapter folder (no adapter_model.safetensors)")
    try:
        adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{config_file}:{error.lineno}: malformed JSON") from None
    info = read_adapter_info(adapter_dir)
    if info is not None:
        if info.base_fingerprint != base.fingerprint:
            raise UserError(
                f"{adapter_dir}: adapter was trained on {info.base_model} (fingerprint {info.base_fingerprint}), "
                f"not on {base.name} (fingerprint {base.fingerprint})"
            )
        return info
    trained_on = adapter_config.get("base_model_name_or_path")
    if trained_on not in (base.name, base.path):
        raise UserError(f"{adapter_dir}: adapter was trained on {trained_on!r}, not on {base.name!r}")
    return AdapterInfo(
        path=str(adapter_dir), base_model=str(trained_on), base_fingerprint=base.fingerprint, data_hash="", settings={}, seed=-1
    )

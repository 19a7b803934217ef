"""The SFTTrainer as the study runs it, its arguments read from the finetune config.

`training_settings` lists what changes the adapter's weights (the key for reuse and resume).
Two speed settings, each off unless the finetune config turns it on:

- `liger_kernels`: the Trainer's `use_liger_kernel` switch, which patches the model with
  Liger's Triton kernels for RMSNorm, RoPE and SwiGLU. Liger's fused linear cross-entropy is
  not among them: TRL 1.16 forces `fused_linear_cross_entropy: False` (and deprecates the
  switch) because SFTTrainer puts its own tiled head on every model, Liger or not, so the
  logits are never held whole either way. CUDA only, and it needs the liger-kernel package; a
  CPU run that asks for it stops before loading.
- `padding_free`: TRL's collator lays the rows of a batch end to end as one row, each keeping
  its own positions, so no compute goes to padding. Attention stays within a row: flash
  attention's varlen kernel reads the boundaries, and on sdpa transformers builds a block mask
  from the positions when the model runs without a cache, as TRL's compute_loss runs it
  (tests/test_trainer.py compares each packed row's logits with the row alone). Rows are
  already cut to max_seq_length when they are tokenized.

`report_to` sends the Trainer's metrics to a tracker the user runs (tensorboard, wandb, mlflow);
TensorBoard's event files go beside the adapter (`<adapters>/tensorboard/<model>`), since the
Trainer's own output folder holds checkpoints that are deleted after training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localnova.console import route_library_logs
from localnova.errors import UserError
from localnova.finetune.progress import console_callback
from localnova.optional import Precision, require

# Batches are drawn from groups of rows of about one length (transformers' LengthGroupedSampler),
# so a batch pads little: random batches of the demo's rows spent 17% of their tokens on padding.
BATCH_SAMPLING = "group_by_length"
# finetune.report_to name -> the package its Trainer callback needs
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def training_settings(config, max_steps: int | None = None) -> dict[str, Any]:
    """The settings that change the adapter's weights: part of the reuse and resume key. The
    speed settings join the key only when on, so adapters trained before they existed keep
    their keys."""
    settings = {
        "preset": config.preset,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "max_seq_length": config.max_seq_length,
        "lora": config.lora.model_dump(mode="json"),
        "quantization": config.quantization,
        "precision": config.precision,
        "sampling": BATCH_SAMPLING,
    }
    for speed_setting in ("liger_kernels", "padding_free"):
        if getattr(config, speed_setting):
            settings[speed_setting] = True  # other kernels and batch shapes: other rounding
    if max_steps is not None:
        settings["max_steps"] = max_steps
    return settings


def check_trainer_settings(config, on_cuda: bool) -> None:
    """What the speed settings and the trackers need, checked before any model loads."""
    if config.liger_kernels:
        if not on_cuda:
            raise UserError("finetune.liger_kernels=true needs a CUDA GPU (Liger's kernels are Triton kernels); set it to false on CPU")
        require("liger_kernel", "finetune.liger_kernels")
    for tracker in config.report_to:
        require(TRACKER_PACKAGES[tracker], f"finetune.report_to: {tracker}")


@contextmanager
def _tensorboard_folder(config, folder: Path) -> Iterator[None]:
    """TensorBoard's callback reads its folder from TENSORBOARD_LOGGING_DIR when the Trainer is
    built; set it for that moment only, unless the user set it."""
    if "tensorboard" not in config.report_to or "TENSORBOARD_LOGGING_DIR" in os.environ:
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)


def build_trainer(
    model,
    tokenizer,
    train_dataset,
    eval_dataset,
    config,
    precision: Precision,
    output_dir: Path,
    seed: int,
    max_steps: int | None = None,
    save_steps: int | None = None,
    callbacks: list | None = None,
    run_name: str | None = None,
    tracker_dir: Path | None = None,
):
    """The SFTTrainer exactly as `train_adapter` runs it (the benchmarks time this one too)."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if eval_dataset is not None:
        extra: dict[str, Any] = {"eval_strategy": "epoch", "per_device_eval_batch_size": config.batch_size}
    else:
        extra = {"eval_strategy": "no"}
    # transformers 5 calls it train_sampling_strategy; older ones have a group_by_length flag
    sampling = "train_sampling_strategy" in SFTConfig.__dataclass_fields__
    extra.update({"train_sampling_strategy": BATCH_SAMPLING} if sampling else {"group_by_length": True})
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=max_steps if max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        # TRL refuses a max_length with padding-free batches that it does not pack itself; the
        # rows are cut to max_seq_length when tokenized (chat_data.py), either way.
        max_length=None if config.padding_free else config.max_seq_length,
        padding_free=config.padding_free,
        use_liger_kernel=config.liger_kernels,
        # Inherited defaults would turn on bf16 autocast and gradient checkpointing; both are
        # chosen here, from the hardware and the model's size.
        bf16=precision.bf16,
        fp16=precision.fp16,
        gradient_checkpointing=config.quantization == "4bit",
        use_cpu=precision.device == "cpu",
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        save_total_limit=2,
        report_to=list(config.report_to) or "none",
        run_name=run_name,
        disable_tqdm=True,  # finetune/progress.py shows the steps
        dataset_kwargs={"skip_prepare_dataset": True},  # already tokenized, labelled and truncated
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        **extra,
    )
    with _tensorboard_folder(config, tracker_dir or Path(output_dir) / "tensorboard"):
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks
        )
    # The Trainer prints one dict per logged step; ours logs them and shows one bar instead.
    trainer.remove_callback(PrinterCallback)
    if trainer.is_world_process_zero():
        trainer.add_callback(console_callback())
    route_library_logs()
    return trainer

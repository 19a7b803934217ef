"""Fine-tune from a study config, on one process or many.

    python -m localnova.finetune.launch --config configs/demo.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m localnova.finetune.launch --config CONFIG
    accelerate launch --multi_gpu --num_processes 2 -m localnova.finetune.launch --config CONFIG
        (on a machine without CUDA the same command starts 2 CPU processes that talk over gloo;
        `accelerate launch --cpu` starts only one process unless MPI is set up)
    torchrun --nproc_per_node 2 -m localnova.finetune.launch --config CONFIG   # the same, without accelerate

Every rank runs the same `train_adapter`; the Trainer shards the data across ranks and only
rank 0 writes the adapter. The training data is `finetune.train_path` (chat or Nova JSONL), decontaminated
against the eval set exactly as the study's own fine-tuning stage does (finetune/stage.py), with the
embedder on the rank's own GPU (`cuda:$LOCAL_RANK`), not all of them on GPU 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from localnova.config import StudyConfig, load_config
from localnova.data.eval_set import load_study_eval_set
from localnova.embedder import Embedder
from localnova.errors import UserError, exit_on_user_error
from localnova.finetune.lora import AdapterInfo, find_or_train_adapter, train_adapter
from localnova.finetune.presets import check_hyperparameters
from localnova.finetune.stage import training_records
from localnova.models import resolve_model
from localnova.optional import cuda_available

log = logging.getLogger(__name__)

# How long a rank waits at a collective: rank 0 may read a 70B checkpoint alone (below) while the
# others wait for its weights. The Trainer's own default (ddp_timeout), since the group is ours.
PROCESS_GROUP_TIMEOUT = timedelta(seconds=1800)


def default_adapter_dir(config: StudyConfig, model_name: str) -> Path:
    return config.study_dir / "adapters" / model_name


def embedder_device() -> str:
    """The device this process embeds on: under a launcher, the GPU of its local rank
    (`cuda:$LOCAL_RANK`), so eight ranks do not all load the embedder onto GPU 0; the CPU
    without CUDA."""
    if not cuda_available():
        return "cpu"
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise UserError(
            f"LOCAL_RANK={local_rank} but this process sees {visible} CUDA device(s): start one process per GPU "
            f"(accelerate launch --num_processes {visible}, or set CUDA_VISIBLE_DEVICES to match)"
        )
    return f"cuda:{local_rank}"


def start_process_group_for_fsdp_loading() -> bool:
    """Start torch.distributed now when FSDP's cpu_ram_efficient_loading is on; True if it did.

    transformers reads the checkpoint on local rank 0 only (the other ranks build empty
    tensors and later receive the shards) only if the process group exists when the model
    loads; otherwise every rank reads the whole checkpoint into CPU memory, eight copies of a
    70B model on an eight-GPU node. The Trainer would start the group only after the model is
    loaded, so start it first; the Trainer then reuses it.

    Only where FSDP will run: the other ranks get their weights when FSDP wraps the model
    (sync_module_states), and accelerate wraps with FSDP on an accelerator only. On a CPU the
    same launch trains data-parallel, nothing sends rank 0's weights to the others, and every
    rank must read the checkpoint itself: two ranks launched with configs/accelerate/fsdp.yaml
    on a CPU drifted from one rank by 0.014 in three steps, and match it once they all load
    (tests/engines/test_engine_ranks.py).
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    if not cuda_available():
        if int(os.environ.get("RANK", "0")) == 0:
            log.warning(
                "an FSDP launch on a machine without CUDA: accelerate shards with FSDP on an accelerator only, so this trains data-parallel"
            )
        return False
    if os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false").lower() != "true":
        return False
    from accelerate import PartialState

    PartialState(timeout=PROCESS_GROUP_TIMEOUT)
    return True


def finetune_from_config(
    config: StudyConfig, model_name: str | None = None, out_dir: Path | None = None, max_steps: int | None = None, reuse: bool = True
) -> AdapterInfo:
    """Train (or reuse) the adapter for one answer model of a study config."""
    check_hyperparameters(config.finetune)
    models = {model.name: model for model in config.models}
    model_config = models.get(model_name) if model_name else config.models[0]
    if model_config is None:
        raise UserError(f"--model {model_name!r}: not one of the config's models ({', '.join(models)})")
    # The same decontaminated records, with the arms' system prompt, as a single-process run.
    eval_items = load_study_eval_set(config.eval)
    start_process_group_for_fsdp_loading()
    embedder = Embedder(config.retrieval.embedding_model, device=embedder_device())
    train_records, validation_records, _ = training_records(config, eval_items, embedder)
    del embedder  # its GPU memory goes back to the allocator before the base model loads
    base = resolve_model(model_config.model, model_config.revision)
    target = Path(out_dir) if out_dir else default_adapter_dir(config, model_config.name)
    train = find_or_train_adapter if reuse else train_adapter
    return train(base, train_records, validation_records, config.finetune, target, config.seed, max_steps=max_steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localnova.finetune.launch", description="Fine-tune a LoRA adapter from a study config."
    )
    parser.add_argument("--config", required=True, help="study config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--model", help="which answer model of the config (default: the first)")
    parser.add_argument("--out", type=Path, help="adapter folder (default: <output_dir>/<name>/adapters/<model>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
    parser.add_argument("--retrain", action="store_true", help="train even if a matching adapter exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return exit_on_user_error(_finetune_and_report, args)


def _finetune_and_report(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    info = finetune_from_config(config, args.model, args.out, args.max_steps, reuse=not args.retrain)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    state = "reused" if info.reused else f"trained in {info.train_seconds:.1f} s on {info.world_size} process(es)"
    print(f"adapter {info.path} ({state}); final loss {info.loss_curve[-1]['loss'] if info.loss_curve else 'n/a'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

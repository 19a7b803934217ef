"""Fine-tune from a study config, on one process or many.

    python -m localnova.finetune.launch --config configs/demo.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m localnova.finetune.launch --config CONFIG
    accelerate launch --cpu --num_processes 2 -m localnova.finetune.launch --config CONFIG   # gloo, no GPU

Every rank runs the same `train_adapter`; the Trainer shards the data across ranks and only
rank 0 writes the adapter. The training data is the chat JSONL at `finetune.train_path`
(one {"messages": [...]} object per line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from localnova.errors import UserError


def read_chat_jsonl(path: Path) -> list[dict]:
    """Chat records from a JSONL file; a bad line raises a UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: training file not found")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            hint = " (a Nova bedrock-conversation file: convert it to chat JSONL first)" if isinstance(record, dict) and "schemaVersion" in record else ""
            raise UserError(f"{path}:{line_number}: expected an object with a 'messages' list{hint}")
        records.append({"messages": record["messages"]})
    return records


def default_adapter_dir(config, model_name: str) -> Path:
    return config.study_dir / "adapters" / model_name


def finetune_from_config(config, model_name: str | None = None, out_dir: Path | None = None,
                         max_steps: int | None = None, reuse: bool = True):
    """Train (or reuse) the adapter for one answer model of a study config; returns AdapterInfo."""
    from localnova.finetune.lora import find_or_train_adapter, train_adapter
    from localnova.finetune.presets import check_hyperparameters
    from localnova.models import resolve_model

    check_hyperparameters(config.finetune)
    if config.finetune.train_path is None:
        raise UserError("finetune.train_path is not set: give a chat JSONL file (or run gen-qa first)")
    models = {model.name: model for model in config.models}
    model_config = models.get(model_name) if model_name else config.models[0]
    if model_config is None:
        raise UserError(f"--model {model_name!r}: not one of the config's models ({', '.join(models)})")
    train_records = read_chat_jsonl(config.finetune.train_path)
    validation_records = read_chat_jsonl(config.finetune.validation_path) if config.finetune.validation_path else None
    base = resolve_model(model_config.model, model_config.revision)
    target = Path(out_dir) if out_dir else default_adapter_dir(config, model_config.name)
    train = find_or_train_adapter if reuse else train_adapter
    return train(base, train_records, validation_records, config.finetune, target, config.seed, max_steps=max_steps)


def main(argv: list[str] | None = None) -> int:
    from localnova.config import load_config

    parser = argparse.ArgumentParser(prog="python -m localnova.finetune.launch", description="Fine-tune a LoRA adapter from a study config.")
    parser.add_argument("--config", required=True, help="study config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--model", help="which answer model of the config (default: the first)")
    parser.add_argument("--out", type=Path, help="adapter folder (default: <output_dir>/<name>/adapters/<model>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
    parser.add_argument("--retrain", action="store_true", help="train even if a matching adapter exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        info = finetune_from_config(config, args.model, args.out, args.max_steps, reuse=not args.retrain)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    state = "reused" if info.reused else f"trained in {info.train_seconds:.1f} s on {info.world_size} process(es)"
    print(f"adapter {info.path} ({state}); final loss {info.loss_curve[-1]['loss'] if info.loss_curve else 'n/a'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time one LoRA training step through our SFTTrainer setup against a plain peft loop.

Both sides use the same model, LoRA config, learning rate, batches (same token ids, same
collator) and dtype, in one process. Ours is timed between consecutive optimizer steps of
`build_trainer` (the Trainer that `train_adapter` runs, with its logging, scheduler and
gradient clipping included); the plain loop does forward, backward, AdamW step and zero_grad.
Warm-up steps are left out and the median step is reported. The plain loop runs before and
after ours so that a change in machine load hits both sides.

    HF_HUB_OFFLINE=1 LOCALNOVA_CACHE=/tmp/lncache .venv/bin/python scripts/bench_finetune.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from itertools import pairwise
from pathlib import Path


def synthetic_records(count: int, seq_len: int) -> list[dict]:
    """Chat records long enough to be truncated to exactly `seq_len` tokens."""
    filler = " ".join(f"fact{i} holds that the river runs north past the old mill" for i in range(seq_len))
    return [
        {"messages": [{"role": "user", "content": f"Question {n}: what does the record say?"}, {"role": "assistant", "content": filler}]}
        for n in range(count)
    ]


def time_ours(base, config, rows_dataset, tokenizer_and_model, precision, steps: int, warmup: int, seed: int) -> list[float]:
    from transformers import TrainerCallback

    from localnova.finetune.lora import build_trainer

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    tokenizer, model = tokenizer_and_model
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(
            model, tokenizer, rows_dataset, None, config, precision, Path(scratch), seed, max_steps=warmup + steps, callbacks=[StepClock()]
        )
        trainer.train()
    intervals = [later - earlier for earlier, later in pairwise(step_ends)]
    return intervals[warmup - 1 :] if warmup > 0 else intervals


def time_plain(config, rows: list[dict], tokenizer_and_model, collator, steps: int, warmup: int) -> list[float]:
    import torch

    _, model = tokenizer_and_model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    batch_size = config.batch_size
    seconds: list[float] = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = collator(rows[step * batch_size : (step + 1) * batch_size])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side (the plain loop runs twice this)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=None, help="LoRA dropout (default: FinetuneConfig's)")
    args = parser.parse_args()

    import torch
    import transformers

    from localnova.config import FinetuneConfig
    from localnova.finetune.chat_data import build_dataset
    from localnova.finetune.lora import choose_precision, load_base
    from localnova.models import resolve_model

    base = resolve_model(args.model)
    lora = {} if args.dropout is None else {"lora": {"dropout": args.dropout}}
    config = FinetuneConfig(
        batch_size=args.batch_size, max_seq_length=args.seq_len, learning_rate=1e-4, epochs=1, precision=args.precision, **lora
    )
    precision = choose_precision(config)
    total_steps = args.warmup + args.steps
    records = synthetic_records(args.batch_size * total_steps, args.seq_len)

    def fresh():
        transformers.set_seed(args.seed)
        return load_base(base, config, precision)

    ours_setup = fresh()
    dataset = build_dataset(ours_setup[0], records, args.seq_len)
    rows = [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in dataset]
    tokens_per_step = sum(len(row["input_ids"]) for row in rows[: args.batch_size])

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=ours_setup[0].pad_token_id)

    device = "cuda" if precision.device == "cuda" else "cpu"
    print(
        f"model {base.name}, batch {args.batch_size} x {args.seq_len} tokens ({tokens_per_step} tokens/step), "
        f"LoRA dropout {config.lora.dropout}, dtype {precision.dtype}, bf16 autocast {precision.bf16}, device {device}, "
        f"torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    plain_setup = fresh()
    plain_seconds = time_plain(config, rows, plain_setup, collator, args.steps, args.warmup)
    ours_seconds = time_ours(base, config, dataset, ours_setup, precision, args.steps, args.warmup, args.seed)
    plain_setup = fresh()
    plain_seconds += time_plain(config, rows, plain_setup, collator, args.steps, args.warmup)

    ours_median = statistics.median(ours_seconds)
    plain_median = statistics.median(plain_seconds)
    print(
        f"ours (SFTTrainer as train_adapter builds it): median {ours_median * 1000:.0f} ms/step over {len(ours_seconds)} steps, "
        f"{tokens_per_step / ours_median:.0f} training tokens/s"
    )
    print(
        f"plain peft loop (AdamW):                      median {plain_median * 1000:.0f} ms/step over {len(plain_seconds)} steps, "
        f"{tokens_per_step / plain_median:.0f} training tokens/s"
    )
    print(f"ratio ours / plain: {ours_median / plain_median:.2f}x (aim <= 1.3x)")


if __name__ == "__main__":
    main()

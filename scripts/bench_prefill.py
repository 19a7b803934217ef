"""Prompt tokens per second of one prefill forward of the bundled SmolLM2-135M, by how many
prompts go through it together (random token ids, one padded row, as the refill decoder sends
them). It sizes batch_decoding.MAX_PREFILL_TOKENS.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_prefill.py --length 560
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=560, help="tokens per prompt")
    parser.add_argument("--rows", default="32,16,8,4,2", help="prompts per forward, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="timed forwards per size (the best is kept)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from localnova.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct", None).path, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    print("| prompts per forward | prompt tokens | tokens/s |\n|---|---|---|")
    for rows in [int(value) for value in args.rows.split(",")]:
        input_ids = torch.randint(100, 40000, (rows, args.length), generator=generator)
        mask = torch.ones_like(input_ids)
        mask[0, : args.length // 10] = 0  # one left-padded row: the mask is explicit, as in the decoder
        with torch.inference_mode():
            model(input_ids=input_ids[:, :32], attention_mask=mask[:, :32], logits_to_keep=1)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1)
                best = min(best, time.perf_counter() - started)
        print(f"| {rows} | {rows * args.length} | {rows * args.length / best:.0f} |", flush=True)


if __name__ == "__main__":
    main()

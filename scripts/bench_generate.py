"""Benchmark: the demo prompts through the transformers backend one at a time and batched.

Everything runs in one process on the same loaded model, so the ratios compare like with like.
Prints output tokens/s for batch 1, 16 and 32, the speed-up against batch 1, how many greedy
answers differ from batch 1's, and the index build speed in chunks/s.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_generate.py [--questions 32] [--arm rag]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--questions", type=int, default=32, help="how many demo questions (prompts) to time")
    parser.add_argument("--arm", choices=("base", "rag"), default="base")
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    import torch

    from localnova.backends import create_backend
    from localnova.config import load_config
    from localnova.data.eval_set import load_eval_set
    from localnova.evaluate.arms import build_request, generation_params
    from localnova.pipeline import build_index

    config = load_config(args.config)
    model = config.models[0]
    items = load_eval_set(config.eval.path, args.questions)
    with tempfile.TemporaryDirectory() as scratch:
        config = config.model_copy(update={"output_dir": Path(scratch)})
        started = time.perf_counter()
        index, _ = build_index(config)
        index_seconds = time.perf_counter() - started
        retrieved = index.search([item.question for item in items], config.retrieval.top_k) if args.arm == "rag" else [None] * len(items)
    params = generation_params(model, config.seed)
    requests = [build_request(item, context, params) for item, context in zip(items, retrieved)]
    backend = create_backend(model)

    def timed(batch_size: int):
        texts, output_tokens = [], 0
        started = time.perf_counter()
        for start in range(0, len(requests), batch_size):
            results = backend.generate(requests[start : start + batch_size])
            texts += [result.text for result in results]
            output_tokens += sum(result.output_tokens for result in results)
        seconds = time.perf_counter() - started
        return texts, output_tokens, seconds

    backend.generate(requests[:2])  # warm-up: first-call allocations are not what we measure
    figures = {
        "model": model.model,
        "arm": args.arm,
        "prompts": len(requests),
        "threads": torch.get_num_threads(),
        "index_chunks": len(index),
        "index_build_chunks_per_s": round(len(index) / index_seconds, 1),
    }
    single_texts, single_tokens, single_seconds = timed(1)
    figures["batch_1"] = {
        "output_tokens": single_tokens,
        "seconds": round(single_seconds, 2),
        "tokens_per_s": round(single_tokens / single_seconds, 1),
    }
    for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
        texts, tokens, seconds = timed(batch_size)
        differ = [index for index, (a, b) in enumerate(zip(single_texts, texts)) if a != b]
        figures[f"batch_{batch_size}"] = {
            "output_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
            "speedup_vs_batch_1": round((tokens / seconds) / (single_tokens / single_seconds), 2),
            "answers_differing_from_batch_1": len(differ),
        }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

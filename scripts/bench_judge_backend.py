"""Time the logprob judge's calls on the transformers backend: 64 requests of the demo's shape
(a two-token reply with the top 20 log probabilities), in batches of 16, after one warm-up batch.

Run it with two checkouts' sources in turn to compare commits in the same minutes:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_judge_backend.py
    HF_HUB_OFFLINE=1 PYTHONPATH=/path/to/other/checkout/src .venv/bin/python scripts/bench_judge_backend.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from localnova.backends import create_backend
from localnova.config import ModelConfig
from localnova.evaluate.judges import SCORE_PREFILL
from localnova.types import ChatRequest, GenerationParams

EVAL = Path(__file__).resolve().parents[1] / "data" / "demo" / "eval.jsonl"


def main() -> None:
    items = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()][:32]
    backend = create_backend(ModelConfig(name="judge", backend="transformers", model="smollm2-135m-instruct"))
    params = GenerationParams(max_new_tokens=2, top_logprobs=20)
    requests = [
        ChatRequest.from_messages(
            [
                {"role": "user", "content": f"Grade: {item['question']} truth {item['answer']} answer {item['answer']}"},
                {"role": "assistant", "content": SCORE_PREFILL},
            ],
            params,
        )
        for item in items
    ]
    backend.generate(requests[:16])  # warm-up
    started = time.perf_counter()
    for _ in range(2):
        for start in range(0, len(requests), 16):
            backend.generate(requests[start : start + 16])
    print(f"{2 * len(requests)} judge requests: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()

"""Time the logprob judge on the transformers backend both ways it can read a score, in one
process: one request per item (the score position, then "1" forced and the position after it)
against two (the score position, then a second request prefilled with "1" for each item where
"1" had probability). Both must give the same scores; the script says whether they do.

The items are the demo's questions, graded against their truth with three kinds of text (the
truth, an empty answer, another question's truth), as the judge's controls grade them.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_judge_backend.py --items 48
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

EVAL = Path(__file__).resolve().parents[1] / "data" / "demo" / "eval.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from localnova.backends import create_backend
    from localnova.config import GenerationConfig, JudgeConfig, ModelConfig
    from localnova.evaluate.judges.base import JudgeInput
    from localnova.evaluate.judges.llm import LLMJudge

    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [lambda n: rows[n]["answer"], lambda n: "", lambda n: rows[(n + 5) % len(rows)]["answer"]]
    items = [
        JudgeInput(
            "m",
            "arm",
            rows[n % len(rows)]["question_id"],
            "answer",
            rows[n % len(rows)]["question"],
            rows[n % len(rows)]["answer"],
            texts[n % 3](n % len(rows)),
        )
        for n in range(args.items)
    ]
    model = ModelConfig(
        name="judge", backend="transformers", model="smollm2-135m-instruct", generation=GenerationConfig(batch_size=args.batch_size)
    )
    judge = LLMJudge(JudgeConfig(name="judge", kind="llm", scoring="logprob", model=model))
    judge.backend = create_backend(model)
    judge.backend.generate([judge.request(items[0], 0)])  # load and warm up

    def timed(one_request: bool):
        judge.backend.can_force_first_token = lambda messages, text: one_request
        started = time.perf_counter()
        outcomes = judge.run(items, judge.backend.generate)
        return time.perf_counter() - started, [outcome.score for outcome in outcomes]

    print(f"{args.items} judgments, batch size {args.batch_size}, load average {os.getloadavg()[0]:.1f}")
    one_seconds, one_scores = timed(True)
    two_seconds, two_scores = timed(False)
    one_again, _ = timed(True)  # before and after, so that a change in load hits both ways
    one_seconds = min(one_seconds, one_again)
    differences = [abs(a - b) for a, b in zip(one_scores, two_scores, strict=True) if a is not None and b is not None]
    failures_differ = sum((a is None) != (b is None) for a, b in zip(one_scores, two_scores, strict=True))
    print(f"one request per item:  {one_seconds:.1f} s")
    print(f"two requests per item: {two_seconds:.1f} s")
    print(
        f"ratio: {two_seconds / one_seconds:.2f}x; scores differing: {sum(d > 0 for d in differences)} of {len(items)}, "
        f"by at most {max(differences):.4f} (scores are kept to 4 decimals); failures differing: {failures_differ}"
    )


if __name__ == "__main__":
    main()

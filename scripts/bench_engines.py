"""Benchmark: the demo's answer stage on vLLM's CPU build against the transformers backend's
refill decoder, in one process on one machine, with how many answers agree token for token.

Both engines answer the same requests, built as the study builds them (configs/demo.yaml's
`base` and `rag` arms on --questions questions, greedy, 48 new tokens): the transformers backend
as configs/demo.yaml runs it (float32, refill decoding, batch 32, `requests_per_call` requests
per call), and the vllm backend as configs/demo-vllm.yaml runs it (float32, eager, in this
process), given the same requests per call as the study's runner gives it. Each engine is
loaded (its load timed once) and warmed up, then the two are timed in turn, --repeats times,
ABAB, so a machine that gets busier or quieter mid-run cannot favour one; the medians are
reported with their ratio. `--contend N` times the same beside N busy processes (a shared
machine). Run it in .venv-engines (`make bench-engines`):

    .venv-engines/bin/python scripts/bench_engines.py [--questions 60] [--repeats 3] [--contend 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

BUSY_LOOP = "while True: pass"


def stage_requests(config, questions: int) -> dict[str, list]:
    """The demo's base and rag requests for its first `questions` questions, as the study builds them."""
    from localnova.evaluate.arms import generation_params
    from localnova.pipeline import prepare_inputs

    config = config.model_copy(update={"eval": config.eval.model_copy(update={"limit": questions})})
    inputs = prepare_inputs(config)
    params = generation_params(config.models[0], config.seed)
    return {arm: inputs.arms[arm].requests(inputs.items, params) for arm in ("base", "rag")}


def answer_stage(backend, requests: dict[str, list], batch_size: int) -> tuple[dict[str, list], float]:
    """Every arm's requests through `backend`, `requests_per_call` at a time; wall seconds."""
    per_call = backend.requests_per_call(batch_size)
    answers, started = {}, time.perf_counter()
    for arm, arm_requests in requests.items():
        answers[arm] = [
            r for start in range(0, len(arm_requests), per_call) for r in backend.generate(arm_requests[start : start + per_call])
        ]
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=60, help="demo questions per arm (the demo has 60)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each engine, interleaved")
    parser.add_argument("--contend", type=int, default=0, metavar="N", help="time beside N busy processes")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    import torch

    from localnova.backends import create_backend
    from localnova.config import load_config

    transformers_config = load_config(REPO / "configs" / "demo.yaml")
    vllm_config = load_config(REPO / "configs" / "demo-vllm.yaml")
    requests = stage_requests(transformers_config, args.questions)
    engines = {}
    for name, config in (("transformers_refill", transformers_config), ("vllm_cpu", vllm_config)):
        backend = create_backend(config.models[0])
        started = time.perf_counter()
        backend.load()
        load_s = time.perf_counter() - started
        backend.generate([requests["base"][0]])  # warm-up: first-call allocations are not what is timed
        engines[name] = {"backend": backend, "batch_size": config.models[0].generation.batch_size, "load_s": round(load_s, 1), "runs": []}
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.contend)]
    try:
        answers = {}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                answers[name], seconds = answer_stage(engine["backend"], requests, engine["batch_size"])
                engine["runs"].append(seconds)
    finally:
        for process in busy:
            process.kill()
    figures: dict = {
        "questions_per_arm": args.questions,
        "arms": list(requests),
        "repeats": args.repeats,
        "busy_processes": args.contend,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    for name, engine in engines.items():
        tokens = sum(result.output_tokens for arm_answers in answers[name].values() for result in arm_answers)
        median = statistics.median(engine["runs"])
        figures[name] = {
            "load_seconds": engine["load_s"],
            "stage_seconds": [round(seconds, 2) for seconds in engine["runs"]],
            "median_seconds": round(median, 2),
            "output_tokens": tokens,
            "tokens_per_s": round(tokens / median, 1),
        }
        engine["backend"].close()
    figures["vllm_over_refill_speed"] = round(figures["transformers_refill"]["median_seconds"] / figures["vllm_cpu"]["median_seconds"], 2)
    identical = {
        arm: sum(
            (a.text, a.output_tokens) == (b.text, b.output_tokens)
            for a, b in zip(answers["vllm_cpu"][arm], answers["transformers_refill"][arm], strict=True)
        )
        for arm in requests
    }
    figures["identical_answers"] = {arm: f"{count} of {len(requests[arm])}" for arm, count in identical.items()}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":  # vLLM's engine may start processes that import this file again
    main()

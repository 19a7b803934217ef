"""Benchmark: the demo's prompts through the transformers backend one at a time and batched.

Everything runs in one process on models loaded once, so the ratios compare like with like.
For the answers (the demo's `base` or `rag` prompts, greedy) it prints output tokens/s:
- one at a time: each request alone through the backend (the refill decoder with one row),
  and through transformers' own `generate` (the decoder's reference);
- batched with `decoding: generate` (a batch decodes until its longest row ends);
- batched with `decoding: refill` (finished rows leave, waiting prompts take their slots),
  given `requests_per_call` requests per call as the study's runner gives them;
with the speed-up against one at a time and how many greedy answers differ from it.
With `--judge N` it also times N logprob-judge requests of the demo's shape (prompt plus a
two-token reply with the top 20 log probabilities): one at a time, batched with `generate`,
and batched with `refill`, and the largest difference of a top log probability.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_generate.py [--questions 32] [--arm rag] [--judge 32]

With `--contend N` it times instead the demo's answer stage (the --arm arm, the demo's batch
size, refill decoding) on --questions questions, quiet and beside N busy processes, under the
libraries' own thread policy (LOCALNOVA_THREADS=off) and under localnova's (threads.py), each
in a fresh child process (the OpenMP runtime reads its policy once, at start), interleaved
--repeats times; it reports the four medians side by side with the fair-share expectation
(`--contend 0` makes both cases quiet: twice as many quiet runs to set the policies' costs apart):

    .venv/bin/python scripts/bench_generate.py --contend 2 --questions 24 --out contend.json
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
sys.path.insert(0, str(REPO / "src"))

import localnova  # noqa: E402  (first: it sets the OpenMP wait policy before torch loads)
from localnova.threads import POLICY_SWITCH  # noqa: E402

# The two policies --contend compares: the environment each child process starts with.
POLICIES = {"libraries_default": {POLICY_SWITCH: "off"}, "localnova": {}}
BUSY_LOOP = "while True: pass"  # one busy process, like `yes > /dev/null`


def timed_calls(backend, requests, per_call: int):
    results, started = [], time.perf_counter()
    for start in range(0, len(requests), per_call):
        results += backend.generate(requests[start : start + per_call])
    return results, time.perf_counter() - started


def figures_for(results, seconds: float, baseline=None) -> dict:
    tokens = sum(result.output_tokens for result in results)
    row = {"output_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
    if baseline is not None:
        base_results, base_seconds = baseline
        base_rate = sum(result.output_tokens for result in base_results) / base_seconds
        row["speedup_vs_one_at_a_time"] = round(row["tokens_per_s"] / base_rate, 2)
        row["answers_differing"] = sum(a.text != b.text for a, b in zip(base_results, results, strict=True))
    return row


def largest_logprob_difference(reference, results) -> float:
    largest = 0.0
    for a, b in zip(reference, results, strict=True):
        for step_a, step_b in zip(a.top_logprobs or [], b.top_logprobs or [], strict=True):
            for token, value in step_a.items():
                if token in step_b:
                    largest = max(largest, abs(value - step_b[token]))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--questions", type=int, default=32, help="how many demo questions (prompts) to time")
    parser.add_argument("--arm", choices=("base", "rag"), default="base")
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--judge", type=int, default=0, help="also time this many logprob-judge requests")
    parser.add_argument("--skip-reference", action="store_true", help="skip transformers' generate one at a time")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument(
        "--dump-prompts", help="write the timed prompts, chat template applied, as JSON here and stop (for scripts/bench_llamacpp.mjs)"
    )
    parser.add_argument("--contend", type=int, metavar="N", help="time the answer stage quiet and beside N busy processes, per policy")
    parser.add_argument("--repeats", type=int, default=2, help="--contend: runs of each of the four cases, interleaved")
    parser.add_argument("--answer-stage", action="store_true", help=argparse.SUPPRESS)  # one timed run, for --contend's children
    args = parser.parse_args()
    if args.answer_stage:
        print(json.dumps(time_answer_stage(args.config, args.questions, args.arm)), flush=True)
        return
    if args.contend is not None:
        contend(args)
        return

    import torch

    from localnova.backends import create_backend
    from localnova.config import load_config
    from localnova.data.eval_set import load_study_eval_set
    from localnova.evaluate.judges import SUBJECT_ANSWER, JudgeInput
    from localnova.evaluate.judges.llm import LLMJudge

    config = load_config(args.config)
    model = config.models[0]
    requests = demo_requests(config, args.questions, args.arm)

    def backend_for(batch_size: int, decoding: str):
        generation = model.generation.model_copy(update={"batch_size": batch_size})
        return create_backend(model.model_copy(update={"generation": generation, "options": {**model.options, "decoding": decoding}}))

    single = backend_for(1, "refill")
    single.generate(requests[:2])  # warm-up: first-call allocations are not what we measure
    if args.dump_prompts:
        texts = [single._prompt_text(request.message_dicts()) for request in requests]
        dump = {"max_new_tokens": requests[0].params.max_new_tokens, "prompts": texts}
        Path(args.dump_prompts).write_text(json.dumps(dump, indent=1) + "\n")
        return
    figures = Figures(args.out)
    figures.update({"model": model.model, "arm": args.arm, "prompts": len(requests), "threads": torch.get_num_threads()})
    baseline = timed_calls(single, requests, 1)
    figures["one_at_a_time"] = figures_for(*baseline)
    if not args.skip_reference:
        reference = backend_for(1, "generate")
        figures["one_at_a_time_generate"] = figures_for(*timed_calls(reference, requests, 1), baseline)
    for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
        for decoding in ("generate", "refill"):
            backend = backend_for(batch_size, decoding)
            per_call = backend.requests_per_call(batch_size)
            figures[f"batch_{batch_size}_{decoding}"] = {
                "requests_per_call": per_call,
                **figures_for(*timed_calls(backend, requests, per_call), baseline),
            }
            backend.close()

    if args.judge:
        judge_config = next(judge for judge in config.judges if judge.kind == "llm")
        judge = LLMJudge(judge_config, config.seed)
        items = load_study_eval_set(config.eval, args.judge)
        # the judge grades a truncated truth: answers of varied length, as in the study
        inputs = [
            JudgeInput(model.name, "base", i.question_id, SUBJECT_ANSWER, i.question, i.answer, i.answer[: 20 + 7 * (n % 9)])
            for n, i in enumerate(items)
        ]
        judge_requests = [judge.request(item, 0) for item in inputs]
        one = figures_for_judge(timed_calls(single, judge_requests, 1))
        figures["judge_one_at_a_time"] = one
        batch_size = judge_config.model.generation.batch_size
        for decoding in ("generate", "refill"):
            generation = judge_config.model.generation
            backend = create_backend(judge_config.model.model_copy(update={"generation": generation, "options": {"decoding": decoding}}))
            results, seconds = timed_calls(backend, judge_requests, backend.requests_per_call(batch_size))
            figures[f"judge_batch_{batch_size}_{decoding}"] = {
                **figures_for_judge((results, seconds)),
                "speedup_vs_one_at_a_time": round(one["seconds"] / seconds, 2),
                "largest_top_logprob_difference": largest_logprob_difference(one["results"], results),
            }
            backend.close()
    figures.save()


def demo_requests(config, questions: int, arm: str) -> list:
    """The demo's first `questions` prompts for `arm` (base, or rag with its retrieved passages),
    built as the study builds them."""
    from localnova.data.eval_set import load_study_eval_set
    from localnova.evaluate.arms import build_request, generation_params
    from localnova.pipeline import build_index

    items = load_study_eval_set(config.eval, questions)
    retrieved = [None] * len(items)
    if arm == "rag":
        with tempfile.TemporaryDirectory() as scratch:
            index, _ = build_index(config.model_copy(update={"output_dir": Path(scratch)}))
            retrieved = index.search([item.question for item in items], config.retrieval.top_k)
    params = generation_params(config.models[0], config.seed)
    return [build_request(item, context, params) for item, context in zip(items, retrieved, strict=True)]


def time_answer_stage(config_path: str, questions: int, arm: str) -> dict:
    """The demo's answer stage as the study runs it (`arm`, the config's batch size, refill
    decoding), the model loaded and warmed up first: seconds, CPU seconds, threads."""
    import resource

    import torch

    from localnova import threads
    from localnova.backends import create_backend
    from localnova.config import load_config

    config = load_config(config_path)
    model = config.models[0]
    requests = demo_requests(config, questions, arm)
    backend = create_backend(model)
    backend.generate(requests[:2])  # load and warm up
    per_call = backend.requests_per_call(model.generation.batch_size)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    _, seconds = timed_calls(backend, requests, per_call)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_before, 3),
        "torch_threads": torch.get_num_threads(),
        "thread_policy": threads.WAIT_POLICY,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def contend(args) -> None:
    """Quiet and contended runs of the answer stage under each policy, interleaved, each in a
    fresh process; then the medians side by side with the fair-share expectation."""
    import statistics
    import subprocess

    # Each child sets its own policy: what this process set for itself is not passed down.
    ours_to_unset = {POLICY_SWITCH} | ({"OMP_WAIT_POLICY"} if localnova.threads.WAIT_POLICY.startswith("passive (set by") else set())
    runs: dict[str, dict[str, list[dict]]] = {policy: {"quiet": [], "contended": []} for policy in POLICIES}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for policy, environment in POLICIES.items():
            for case in ("quiet", "contended"):
                busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.contend if case == "contended" else 0)]
                try:
                    env = {**{k: v for k, v in os.environ.items() if k not in ours_to_unset}, **environment}
                    command = [sys.executable, __file__, "--answer-stage", "--config", args.config]
                    command += ["--questions", str(args.questions), "--arm", args.arm]
                    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
                result = json.loads(finished.stdout.strip().splitlines()[-1])
                runs[policy][case].append(result)
                print(json.dumps({"policy": policy, "case": case, **result}), flush=True)
    cpus = len(os.sched_getaffinity(0))
    report: dict = {
        "questions": args.questions,
        "arm": args.arm,
        "cpus": cpus,
        "busy_processes": args.contend,
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "policies": {},
    }
    for policy, cases in runs.items():
        quiet = round(statistics.median(run["seconds"] for run in cases["quiet"]), 2)
        contended = round(statistics.median(run["seconds"] for run in cases["contended"]), 2)
        threads = cases["quiet"][0]["torch_threads"]
        report["policies"][policy] = {
            "omp_wait_policy": cases["quiet"][0].get("OMP_WAIT_POLICY"),
            "torch_threads": threads,
            "quiet_s": quiet,
            "contended_s": contended,
            "slowdown": round(contended / quiet, 2) if quiet else None,
            "fair_share_s": fair_share_seconds(quiet, threads, cpus, args.contend),
            "runs": cases,
        }
    default_quiet = report["policies"]["libraries_default"]["quiet_s"]
    ours = report["policies"]["localnova"]["quiet_s"]
    report["localnova_quiet_vs_libraries_default"] = round(ours / default_quiet, 3) if default_quiet else None
    print(contend_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def fair_share_seconds(quiet_s: float, threads: int, cpus: int, busy: int) -> list[float]:
    """What the contended run would take if the cores were shared fairly, as [low, high]: low
    when the scheduler shares by thread (our `threads` among threads + busy ones), high when it
    shares by process (1 of busy + 1); both take the quiet run to use min(threads, cpus) cores."""
    used = min(threads, cpus)
    per_thread = used / min(used, cpus * threads / (threads + busy))
    per_process = used / min(used, cpus / (busy + 1))
    return [round(quiet_s * per_thread, 1), round(quiet_s * per_process, 1)]


def contend_table(report: dict) -> str:
    lines = [
        f"answer stage ({report['arm']} arm), {report['questions']} questions, {report['cpus']} CPUs, "
        f"{report['busy_processes']} busy processes "
        f"(load average before {report['load_average_before'][0]}, after {report['load_average_after'][0]})",
        f"{'policy':<18} {'OMP_WAIT_POLICY':<16} {'threads':>7} {'quiet s':>8} {'contended s':>12} {'slowdown':>9} {'fair share s':>14}",
    ]
    for policy, row in report["policies"].items():
        low, high = row["fair_share_s"]
        lines.append(
            f"{policy:<18} {row['omp_wait_policy'] or '(unset)':<16} {row['torch_threads']:>7} {row['quiet_s']:>8} "
            f"{row['contended_s']:>12} {str(row['slowdown']) + 'x':>9} {f'{low}-{high}':>14}"
        )
    lines.append(f"localnova's quiet time / the libraries' default quiet time: {report['localnova_quiet_vs_libraries_default']}")
    return "\n".join(lines)


class Figures(dict):
    """The figures so far: each one is printed as it is measured and the JSON file rewritten, so
    a run stopped part-way (a busy shared machine) keeps what it measured."""

    def __init__(self, out: str | None):
        super().__init__()
        self.out = out

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        shown = {name: item for name, item in value.items() if name != "results"} if isinstance(value, dict) else value
        print(json.dumps({key: shown}), flush=True)
        self.save()

    def save(self) -> None:
        if self.out:
            clean = {
                key: {k: v for k, v in value.items() if k != "results"} if isinstance(value, dict) else value for key, value in self.items()
            }
            Path(self.out).write_text(json.dumps(clean, indent=2) + "\n")


def figures_for_judge(timed) -> dict:
    results, seconds = timed
    return {"requests": len(results), "seconds": round(seconds, 2), "requests_per_s": round(len(results) / seconds, 2), "results": results}


if __name__ == "__main__":
    sys.exit(main())

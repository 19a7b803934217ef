"""What the demo's latency probe costs, against the batched answers it sits beside.

Usage:
    HF_HUB_OFFLINE=1 PYTHONPATH=src python scripts/bench_latency_probe.py [--set eval.latency_probe.max_new_tokens=12]

Runs the probe with the demo config's settings (eval.latency_probe) on the bundled SmolLM2: its
sampled questions, every arm one request at a time, interleaved. The ft arms are answered by a
second copy of the base model (a merged LoRA adapter has the same shapes, so the same cost),
which makes this a measure of the probe's time, not of its result. The baseline, in the same
process: the same sampled questions' base and rag answers made the batched way the study makes
them (one batch per arm, the config's batch size and token limit), times two for the ft arms.
The load average is printed before and after: on a shared machine, say it beside the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from localnova.backends import create_backend
from localnova.config import load_config
from localnova.evaluate.arms import generation_params
from localnova.evaluate.latency_probe import ProbeArm, capped, probe_summary, run_probe, sample_questions
from localnova.pipeline import prepare_inputs
from localnova.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_config(args.config, [f"output_dir={tempfile.mkdtemp()}", *args.overrides])
    inputs = prepare_inputs(config)
    model, probe = config.models[0], config.eval.latency_probe
    params = generation_params(model, config.seed)
    sample = set(sample_questions([item.question_id for item in inputs.items], probe.questions, config.seed))
    base, ft = create_backend(model), create_backend(model)
    arms, batched = {}, {}
    for arm, backend in (("base", base), ("rag", base), ("ft", ft), ("ft_rag", ft)):
        requests = {
            item.question_id: request
            for item, request in zip(inputs.items, inputs.arms[arm].requests(inputs.items, params), strict=True)
            if item.question_id in sample
        }
        arms[arm] = ProbeArm(backend, {q: capped(request, probe.max_new_tokens) for q, request in requests.items()})
        batched[arm] = list(requests.values())
    print(f"load average before: {os.getloadavg()}")
    base.load()
    started = time.perf_counter()
    for arm in ("base", "rag"):
        base.generate(batched[arm])
    batched_s = 2 * (time.perf_counter() - started)  # ft arms: the same model's shapes again
    store = Store(Path(tempfile.mkdtemp()))
    store.start_run("bench-latency-probe", {}, {})
    started = time.perf_counter()
    rounds = run_probe(store, model.name, arms, probe, config.seed)
    probe_s = time.perf_counter() - started
    print(f"load average after: {os.getloadavg()}")
    print(f"probe: {rounds} rounds of {len(arms)} arms, {probe_s:.1f} s (a second model load and two untimed first calls included)")
    print(f"batched answers of the same questions, four arms: {batched_s:.1f} s; probe / batched = {probe_s / batched_s:.2f}")
    print("arm, requests, median ms, % vs base [95% CI]")
    for cell in probe_summary(store.probe_timings()):
        interval = f"[{cell.pct_vs_base_low:+.1f}, {cell.pct_vs_base_high:+.1f}]"
        print(f"{cell.arm}, {cell.n_requests}, {cell.median_ms:.0f}, {cell.pct_vs_base:+.1f} {interval}")


if __name__ == "__main__":
    main()

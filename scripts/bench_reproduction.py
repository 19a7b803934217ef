"""What the Reproduction section adds to a report: the report's content built with the post's
findings and without them, alternately, on one study folder, as a ratio.

    PYTHONPATH=src python scripts/bench_reproduction.py runs/demo [--repeats 5]

Times `render.build_sections` (every table and figure of the report, not the writing of the
files) with the bundled findings and with none, in alternation so that a busier minute falls
on both alike, and `reproduction.run_results` alone. Prints the medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from localnova.config import DEFAULT_FINDINGS
from localnova.findings import load_findings
from localnova.report.collect import collect_run
from localnova.report.render import build_sections
from localnova.report.reproduction import run_results
from localnova.report.summarize import summarize_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="a study folder (its latest run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run = collect_run(args.study)
    findings = load_findings(DEFAULT_FINDINGS)
    summary = summarize_run(run)
    run_results(run, summary, findings)  # warm: scipy's imports, numpy's first calls
    timings: dict[str, list[float]] = {"with findings": [], "without": [], "reproduction alone": []}
    for _ in range(args.repeats):
        for name, chosen in (("with findings", findings), ("without", None)):
            started = time.perf_counter()
            build_sections([run], chosen)
            timings[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        run_results(run, summary, findings)
        timings["reproduction alone"].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, value in medians.items():
        print(f"{name}: median {value * 1000:.0f} ms over {args.repeats}")
    print(f"ratio with / without: {medians['with findings'] / medians['without']:.2f}")


if __name__ == "__main__":
    main()

"""Interval Krippendorff's alpha: ours (linear memory) against the `krippendorff` package.

Usage:
    PYTHONPATH=src python scripts/bench_agreement.py                       # defaults below
    PYTHONPATH=src python scripts/bench_agreement.py --answers 10000 --judges 4 --package-answers 50,100,150

Scores are what a panel writes: half the judges give integers 0-10, half continuous scores
(a logprob judge's expected value, an embedding similarity), so the number of distinct values
V grows with the answers, which is what makes the package build units x V x V. A share of
judgments is missing, as when a judge fails.

Each size is timed (best of --repeat runs, wall clock) and its peak memory read with
tracemalloc (numpy reports its buffers to it), in one process, and the two implementations
are compared as ratios at the sizes the package can still do. Then ours alone runs at
--answers x --judges, the size the study must reach (target: under 5 s and under 200 MB).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from localnova.evaluate.agreement import interval_alpha


def panel_scores(answers: int, judges: int, seed: int = 0, missing_share: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 10, size=answers)
    scores = np.clip(truth + rng.normal(0, 1.5, size=(judges, answers)), 0, 10)
    scores[: judges // 2] = np.round(scores[: judges // 2])
    scores[rng.random(size=scores.shape) < missing_share] = np.nan
    return scores


def measure(compute: Callable[[np.ndarray], float], data: np.ndarray, repeat: int) -> dict[str, float]:
    """Best wall time over `repeat` runs and the peak traced memory of one run."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        value = compute(data)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    compute(data)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"alpha": float(value), "seconds": min(times), "peak_mib": peak_bytes / 2**20}


def package_alpha(data: np.ndarray) -> float:
    import krippendorff

    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=10_000, help="answers for the full-size run of ours")
    parser.add_argument("--judges", type=int, default=4)
    parser.add_argument("--package-answers", default="50,100,150", help="sizes both implementations run (the package's memory is cubic)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    figures: dict = {"python": platform.python_version(), "judges": args.judges, "compared": [], "full": None}
    columns = ("answers", 8), ("V", 6), ("package s", 10), ("ours s", 10), ("time x", 8), ("package MiB", 12), ("ours MiB", 9)
    print(" ".join(f"{name:>{width}}" for name, width in (*columns, ("memory x", 9), ("|diff|", 8))))
    for answers in (int(size) for size in args.package_answers.split(",") if size):
        data = panel_scores(answers, args.judges)
        distinct = int(np.unique(data[~np.isnan(data)]).size)
        theirs = measure(package_alpha, data, args.repeat)
        ours = measure(interval_alpha, data, args.repeat)
        row = {
            "answers": answers,
            "distinct_values": distinct,
            "package": theirs,
            "ours": ours,
            "time_ratio": theirs["seconds"] / ours["seconds"],
            "memory_ratio": theirs["peak_mib"] / ours["peak_mib"],
            "abs_difference": abs(theirs["alpha"] - ours["alpha"]),
        }
        figures["compared"].append(row)
        print(
            f"{answers:>8} {distinct:>6} {theirs['seconds']:>10.4f} {ours['seconds']:>10.5f} {row['time_ratio']:>8.0f} "
            f"{theirs['peak_mib']:>12.1f} {ours['peak_mib']:>9.3f} {row['memory_ratio']:>9.0f} {row['abs_difference']:>8.1e}"
        )

    data = panel_scores(args.answers, args.judges)
    full = measure(interval_alpha, data, args.repeat)
    figures["full"] = {"answers": args.answers, **full}
    verdict = "within" if full["seconds"] < 5 and full["peak_mib"] < 200 else "OUTSIDE"
    print(
        f"ours at {args.answers} answers x {args.judges} judges: {full['seconds']:.4f} s, peak {full['peak_mib']:.2f} MiB, "
        f"alpha {full['alpha']:.4f} ({verdict} the 5 s / 200 MB target)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if verdict != "within":
        sys.exit(1)


if __name__ == "__main__":
    main()

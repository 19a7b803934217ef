"""The sign-flip test's product, random signs x differences: a BLAS matrix-vector product (`@`)
against numpy's einsum, which does not go through BLAS, in one command.

Usage:
    PYTHONPATH=src python scripts/bench_sign_flip.py                 # 10,000 patterns x 60 questions
    PYTHONPATH=src python scripts/bench_sign_flip.py --questions 200 --repeat 20

OpenBLAS spreads a product over its threads; on a machine whose cores are busy with other work
the threads wait for each other, and one product of 10,000 x 60 took tens of milliseconds
instead of a tenth of one. The test's own timing comes last: `paired_tests` at 60 questions.
Reports the best of --repeat runs of each and their ratio, with the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from localnova.evaluate.statistics import paired_tests


def best_seconds(step, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--patterns", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    differences = rng.normal(size=args.questions)
    flipped = rng.random((args.patterns, args.questions)) < 0.5
    as_floats = flipped.astype(float)
    blas = best_seconds(lambda: as_floats @ differences, args.repeat)
    einsum = best_seconds(lambda: np.einsum("ij,j->i", flipped, differences), args.repeat)
    test = best_seconds(lambda: paired_tests(np.zeros(args.questions), differences, n_permutations=args.patterns), args.repeat)
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores; {args.patterns} patterns x {args.questions} questions")
    print(f"BLAS @: {1000 * blas:.3f} ms; einsum: {1000 * einsum:.3f} ms; @ / einsum = {blas / einsum:.1f}")
    print(f"paired_tests (Wilcoxon and sign-flip, {args.patterns} patterns): {1000 * test:.1f} ms")


if __name__ == "__main__":
    main()

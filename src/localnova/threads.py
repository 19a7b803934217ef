"""How the study's CPU threads wait between operations, so that a shared machine slows it by its
fair share and not by a multiple of it.

torch's intra-op threads (the answer models, the judges, the embedder) and faiss-cpu's (its own
copy of GNU OpenMP, under OpenBLAS) are OpenMP threads. By default a GNU OpenMP thread that has
done its part of an operation spins, up to 300,000 turns of a busy loop, waiting for the next
one. On an idle machine that saves a wake-up. Beside other busy processes the spinning threads
hold the cores those processes want, and every one of the many small operations of a decode
step waits for its slowest thread to get a core back: the demo's answers took 9.4 times their
quiet time beside two busy processes on 2 cores. With OMP_WAIT_POLICY=PASSIVE a waiting thread
sleeps at once, and the other processes' time is theirs (BENCHMARKS.md, issue 20, has what
scripts/bench_generate.py --contend measured for each policy, on its quiet and busy sides).

The OpenMP runtime reads the policy once, when its library loads (when torch or faiss is first
imported), so it is set in the environment before that: `localnova/__init__.py` calls
`set_wait_policy()`, which runs before any module of the package imports torch, and child
processes (accelerate launch, the benchmarks' children) inherit it. A policy the user chose
wins (OMP_WAIT_POLICY, GOMP_SPINCOUNT, or KMP_BLOCKTIME for Intel's OpenMP), and
LOCALNOVA_THREADS=off leaves the libraries' defaults. The number of threads is not changed:
one per core (torch's default) keeps the machine's per-thread share of the cores when it is
busy, and OMP_NUM_THREADS, MKL_NUM_THREADS or torch.set_num_threads stay the user's to set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

POLICY_SWITCH = "LOCALNOVA_THREADS"  # "off": leave OpenMP's defaults
# Any of these set by the user is their choice of how threads wait, and ours is not applied.
USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Libraries that load an OpenMP runtime when imported; after that the policy can no longer change.
OPENMP_LIBRARIES = ("torch", "faiss")
WAIT_POLICY = "not set yet"  # what set_wait_policy() found when the package was imported


def set_wait_policy(environ: MutableMapping[str, str] | None = None, loaded: set[str] | None = None) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE in the environment unless the user chose otherwise; say what
    holds, as one of: "passive (set by localnova)", "user's: OMP_WAIT_POLICY=...", "off
    (LOCALNOVA_THREADS=off)", "too late: torch was imported before localnova"."""
    environ = os.environ if environ is None else environ
    loaded = {name for name in OPENMP_LIBRARIES if name in sys.modules} if loaded is None else loaded
    if environ.get(POLICY_SWITCH, "").strip().lower() == "off":
        return f"off ({POLICY_SWITCH}=off)"
    chosen = [f"{name}={environ[name]}" for name in USER_WAIT_SETTINGS if name in environ]
    if chosen:
        return "user's: " + ", ".join(chosen)
    if loaded:
        return f"too late: {', '.join(sorted(loaded))} was imported before localnova"
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "passive (set by localnova)"


def describe() -> dict[str, str | int | None]:
    """The thread settings in force, for a run's record and the benchmarks."""
    record: dict[str, str | int | None] = {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    record["policy"] = WAIT_POLICY
    record["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "torch" in sys.modules:
        record["torch_threads"] = sys.modules["torch"].get_num_threads()
    return record

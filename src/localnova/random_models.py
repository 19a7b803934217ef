"""Models of a known shape with random weights, for checks and benchmarks that download nothing.

A *shape* is a model folder without its weights: config.json and the tokenizer files (for a
sentence-transformers model also modules.json and its module folders). It is small enough to
carry to an offline machine (SmolLM2-135M's is 3.5 MB against 538 MB of weights), and a model
built from it runs at the speed and in the memory of the trained one, writing meaningless text.

Every script that needs such a model builds it here (scripts/gpu_smoke.sh through
scripts/gpu_smoke_steps.py, scripts/gpu_refill_check.py, scripts/bench_gpu.py,
scripts/prepare_offline.py), so there is one builder to keep right.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.model_shapes import KNOWN_ARCHITECTURES

# A shape never holds these: the weights, and the files a model card or a training run left.
NOT_SHAPE_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.onnx", "*.msgpack", "*.h5", "README.md", ".gitattributes")
NOT_SHAPE_FOLDERS = ("onnx", "openvino", "checkpoints")
# transformers' model_type for each family in model_shapes.KNOWN_ARCHITECTURES (by name prefix)
MODEL_TYPES = {"smollm2": "llama", "llama": "llama", "qwen2.5": "qwen2", "mistral": "mistral"}


def _is_shape_file(path: Path, folder: Path) -> bool:
    relative = path.relative_to(folder)
    if any(part in NOT_SHAPE_FOLDERS for part in relative.parts[:-1]):
        return False
    return not any(path.match(pattern) for pattern in NOT_SHAPE_FILES)


def export_shape(model_dir: Path, target: Path) -> Path:
    """Copy a model folder's config, tokenizer and module files, never its weights, to `target`."""
    model_dir, target = Path(model_dir), Path(target)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json, not a model folder")
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and _is_shape_file(path, model_dir):
            destination = target / path.relative_to(model_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
    return target


def known_config(name: str) -> dict[str, Any]:
    """The config.json of a model in model_shapes.KNOWN_ARCHITECTURES (e.g. "qwen2.5-7b")."""
    if name not in KNOWN_ARCHITECTURES:
        raise UserError(f"no known architecture {name!r}; known: {', '.join(KNOWN_ARCHITECTURES)}")
    model_type = next((kind for prefix, kind in MODEL_TYPES.items() if name.startswith(prefix)), None)
    if model_type is None:
        raise UserError(f"known architecture {name!r} has no model type in random_models.MODEL_TYPES")
    return {"model_type": model_type, "max_position_embeddings": 4096, **KNOWN_ARCHITECTURES[name]}


def shape_from_known(name: str, tokenizer_dir: Path, target: Path) -> Path:
    """A shape folder for a known architecture, with another model's tokenizer files (the
    tokenizer's vocabulary must fit the architecture's: its ids index the embedding)."""
    config = known_config(name)
    export_shape(tokenizer_dir, target)
    tokenizer_size = _tokenizer_size(target)
    if tokenizer_size is not None and tokenizer_size > config["vocab_size"]:
        raise UserError(
            f"{tokenizer_dir}: its tokenizer has {tokenizer_size} tokens, more than {name}'s vocabulary ({config['vocab_size']})"
        )
    for name_only in ("generation_config.json",):  # the tokenizer's model's own generation defaults do not apply
        (target / name_only).unlink(missing_ok=True)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def _tokenizer_size(folder: Path) -> int | None:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        return None
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    ids = list(tokenizer.get("model", {}).get("vocab", {}).values()) if isinstance(tokenizer.get("model", {}).get("vocab"), dict) else []
    ids += [token["id"] for token in tokenizer.get("added_tokens", [])]
    return max(ids) + 1 if ids else None


def is_sentence_transformer(folder: Path) -> bool:
    return (Path(folder) / "modules.json").is_file()


def build_random(config, dtype: str = "float32", device: str = "cpu", seed: int = 0, causal_lm: bool = True):
    """A model of `config` (a transformers config object or a config.json dict) with random
    weights, built directly in `dtype` on `device` (no float32 copy of a 7B model on the host)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    if isinstance(config, dict):
        values = dict(config)
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model_class = AutoModelForCausalLM if causal_lm else AutoModel
            model = model_class.from_config(config, dtype=getattr(torch, dtype))
    finally:
        torch.set_default_dtype(previous)
    return model


def save_random_model(shape: Path, target: Path, dtype: str = "float32", device: str = "cpu", seed: int = 0) -> Path:
    """Build the model a shape folder describes with random weights and save it, with the
    shape's tokenizer and module files, as a model folder at `target` that every loader of the
    study reads (transformers, sentence-transformers, the trainer)."""
    from transformers import AutoConfig

    shape, target = Path(shape), Path(target)
    config = AutoConfig.from_pretrained(shape)
    model = build_random(config, dtype, device, seed, causal_lm=not is_sentence_transformer(shape))
    export_shape(shape, target)
    model.save_pretrained(target)
    del model
    return target


def parameter_count(folder: Path) -> int:
    """Parameters saved in a model folder's safetensors files (reads their headers only)."""
    total = 0
    for weights in sorted(Path(folder).glob("*.safetensors")):
        with open(weights, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for size in entry["shape"]:
                    count *= size
                total += count
    return total

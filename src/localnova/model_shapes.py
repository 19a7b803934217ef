"""The shape of a model (parameters, layers, heads, vocabulary) without loading or downloading it.

From the model's config.json when it is on disk (a converted bundled model, a local folder, the
Hugging Face cache), else from a table of known models (their published configs), else from the
size in the name (then without the layer shapes). The memory plan (plan.py) sizes models from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnova.config import ModelConfig
from localnova.models import BUNDLED_MODELS, cache_dir, hub_cached_file

# config.json fields of known models (from their published configs), lower-case name keys
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-3b": dict(
        hidden_size=2048,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        intermediate_size=11008,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "qwen2.5-14b": dict(
        hidden_size=5120,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
        intermediate_size=13824,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3.2-3b": dict(
        hidden_size=3072,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "llama-3.1-70b": dict(
        hidden_size=8192,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "mistral-7b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=32768,
        tie_word_embeddings=False,
    ),
}


@dataclass(frozen=True)
class ModelShape:
    params: int
    source: str  # where the shape came from, in words
    architecture: dict[str, Any] | None = None  # config.json fields; None when only the size is known

    def kv_bytes_per_token(self) -> float | None:
        arch = self.architecture
        if arch is None:
            return None
        head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
        kv_heads = arch.get("num_key_value_heads") or arch["num_attention_heads"]
        return 2 * arch["num_hidden_layers"] * kv_heads * head_dim * 2  # bf16 K and V

    def lora_params(self, rank: int) -> int | None:
        """Adapter parameters for LoRA on every linear layer of the decoder (all-linear)."""
        arch = self.architecture
        if arch is None:
            return None
        hidden, inner = arch["hidden_size"], arch["intermediate_size"]
        head_dim = arch.get("head_dim") or hidden // arch["num_attention_heads"]
        q_dim = arch["num_attention_heads"] * head_dim
        kv_dim = (arch.get("num_key_value_heads") or arch["num_attention_heads"]) * head_dim
        per_layer = (hidden + q_dim) * 2 + (hidden + kv_dim) * 2 + (hidden + inner) * 3  # q,o; k,v; gate,up,down
        return rank * per_layer * arch["num_hidden_layers"]


def params_from_architecture(arch: dict[str, Any]) -> int:
    """Parameters of a Llama-style decoder from its config.json fields (biases and norms are
    a rounding error and left out)."""
    hidden, inner, layers, vocab = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"], arch["vocab_size"]
    head_dim = arch.get("head_dim") or hidden // arch["num_attention_heads"]
    q_dim = arch["num_attention_heads"] * head_dim
    kv_dim = (arch.get("num_key_value_heads") or arch["num_attention_heads"]) * head_dim
    per_layer = 2 * hidden * q_dim + 2 * hidden * kv_dim + 3 * hidden * inner
    embeddings = vocab * hidden * (1 if arch.get("tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings


def _known_architecture(model_id: str) -> dict[str, Any] | None:
    name = model_id.lower().rsplit("/", 1)[-1].replace("meta-llama-", "llama-")
    for key in sorted(KNOWN_ARCHITECTURES, key=len, reverse=True):
        if name.startswith(key) or key in name:
            return KNOWN_ARCHITECTURES[key]
    return None


def _local_config_json(model: "ModelConfig") -> Path | None:
    """A config.json on this disk for the model, without converting or downloading anything."""
    if model.model in BUNDLED_MODELS:
        found = sorted((cache_dir() / "models").glob(f"{model.model}-*/config.json"))
        return found[0] if found else None
    local = Path(model.model).expanduser()
    if local.exists():
        return local / "config.json" if (local / "config.json").is_file() else None
    return hub_cached_file(model.model, "config.json", model.revision)


def model_shape(model: "ModelConfig") -> ModelShape | None:
    config_path = _local_config_json(model)
    if config_path is not None:
        arch = json.loads(config_path.read_text(encoding="utf-8"))
        arch = arch.get("text_config", arch)  # multimodal configs nest the language model
        try:
            return ModelShape(params_from_architecture(arch), f"config.json at {config_path}", arch)
        except (KeyError, TypeError, ZeroDivisionError):
            pass
    known = _known_architecture(model.model)
    if known is not None:
        return ModelShape(params_from_architecture(known), "table of known models", known)
    size = re.search(r"(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", model.model.lower().rsplit("/", 1)[-1])
    if size:
        params = float(size.group(1)) * (1e9 if size.group(2) == "b" else 1e6)
        return ModelShape(int(params), f"size in the name ({size.group(0)})")
    return None

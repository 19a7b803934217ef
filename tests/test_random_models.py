"""random_models.py: a shape is a model folder without its weights; a model built from it has
the shape's architecture and tokenizer, loads wherever the study loads models, and every script
builds such models here and nowhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localnova.errors import UserError
from localnova.models import resolve_model
from localnova.random_models import export_shape, known_config, parameter_count, save_random_model, shape_from_known

REPO = Path(__file__).resolve().parents[1]
TINY_LLAMA = dict(
    model_type="llama",
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    vocab_size=49152,
    tie_word_embeddings=True,
)


@pytest.fixture(scope="module")
def smollm2_shape(tmp_path_factory) -> Path:
    return export_shape(Path(resolve_model("smollm2-135m-instruct").path), tmp_path_factory.mktemp("shapes") / "smollm2")


def test_a_shape_has_the_config_tokenizer_and_modules_and_no_weights(tmp_path):
    minilm = Path(resolve_model("all-minilm-l6-v2").path)
    shape = export_shape(minilm, tmp_path / "minilm")
    copied = {path.relative_to(shape).as_posix() for path in shape.rglob("*") if path.is_file()}
    assert {"config.json", "tokenizer.json", "vocab.txt", "modules.json", "1_Pooling/config.json"} <= copied
    assert not [name for name in copied if name.endswith((".safetensors", ".bin")) or name == "README.md"]
    assert sum((shape / name).stat().st_size for name in copied) < 2_000_000  # 91 MB of weights stayed behind
    with pytest.raises(UserError, match="no config.json"):
        export_shape(tmp_path, tmp_path / "nothing")


def test_a_known_architecture_takes_another_models_tokenizer_when_its_ids_fit(smollm2_shape, tmp_path):
    shape = shape_from_known("qwen2.5-7b", smollm2_shape, tmp_path / "qwen7b")
    config = json.loads((shape / "config.json").read_text())
    # Qwen2.5-7B-Instruct's published config.json
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == ("qwen2", 3584, 28, 152064)
    assert (shape / "tokenizer.json").is_file() and not (shape / "generation_config.json").exists()
    with pytest.raises(UserError, match="49152 tokens, more than mistral-7b's vocabulary"):
        shape_from_known("mistral-7b", smollm2_shape, tmp_path / "mistral")  # 32,768 rows: SmolLM2's ids would not fit
    with pytest.raises(UserError, match="no known architecture"):
        known_config("gpt-5")


def test_a_random_model_loads_and_generates_through_the_studys_backend(smollm2_shape, tmp_path):
    import torch

    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.config import ModelConfig
    from localnova.types import ChatRequest, GenerationParams

    shape = tmp_path / "tiny"
    export_shape(smollm2_shape, shape)
    (shape / "config.json").write_text(json.dumps(TINY_LLAMA))
    folder = save_random_model(shape, tmp_path / "model")
    # by hand: embedding 49152x32 (tied head); per layer q 32x32, k and v 32x16 (2 of 4 heads' width),
    # o 32x32, gate/up/down 3 x 32x64, two norms of 32; and the final norm
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64 + 2 * 32
    assert parameter_count(folder) == 49152 * 32 + 2 * per_layer + 32
    backend = TransformersBackend(ModelConfig(name="tiny", model=str(folder), options={"device": "cpu"}))
    results = backend.generate([ChatRequest((("user", "hello?"),), GenerationParams(max_new_tokens=5))])
    assert results[0].output_tokens == 5 and isinstance(results[0].text, str)
    assert backend.model.dtype == torch.float32


def test_a_random_sentence_transformer_embeds_at_its_shapes_width(tmp_path):
    from localnova.embedder import Embedder

    shape = export_shape(Path(resolve_model("all-minilm-l6-v2").path), tmp_path / "shape")
    config = json.loads((shape / "config.json").read_text())
    config.update(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=96)
    (shape / "config.json").write_text(json.dumps(config))
    folder = save_random_model(shape, tmp_path / "model")
    vectors = Embedder(str(folder), device="cpu").encode(["one sentence", "another"])
    assert vectors.shape == (2, 48)


def test_every_script_builds_random_models_through_the_one_builder():
    """gpu_smoke.sh embedded one builder and gpu_refill_check.py had another; a third would drift."""
    builders = re.compile(r"from_config\(|AutoConfig\.for_model|LlamaForCausalLM\(|Qwen2ForCausalLM\(")
    offenders = [path.name for path in sorted((REPO / "scripts").iterdir()) if path.is_file() and builders.search(path.read_text())]
    assert offenders == []
    users = [p.name for p in (REPO / "scripts").iterdir() if p.is_file() and "localnova.random_models" in p.read_text()]
    assert {"bench_gpu.py", "gpu_refill_check.py", "gpu_smoke_steps.py", "prepare_offline.py"} <= set(users)

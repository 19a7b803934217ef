"""`localnova run CONFIG --plan`: every shipped config plans offline; the memory model is sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localnova.config import ModelConfig, load_config
from localnova.model_shapes import KNOWN_ARCHITECTURES, params_from_architecture
from localnova.plan import plan_study

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIGS = sorted(str(path.relative_to(REPO)) for path in (REPO / "configs").glob("local-gpu*.yaml"))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("config_path", GPU_CONFIGS + ["configs/demo.yaml"])
def test_every_config_plans_offline(config_path, empty_hub_cache, monkeypatch):
    monkeypatch.chdir(REPO)
    if not Path(config_path).exists():
        pytest.skip(f"{config_path} is not in this checkout")
    plan = plan_study(load_config(config_path), gpu_memory_gb=80)
    text = plan.render()
    assert plan.uses and "peak memory estimate" in text
    for use in plan.uses:
        if use.backend in ("vllm", "transformers"):
            assert use.memory is not None and use.memory.gb > 0, use
    if config_path in GPU_CONFIGS:
        assert set(plan.arms) == {"base", "rag", "ft", "ft_rag", "raft"}  # the post's four and RAFT (issue 29)
        assert "Qwen/Qwen2.5-7B-Instruct" in plan.downloads  # nothing is cached in the empty hub cache
        assert plan.qa_generation_calls > 0  # the 1,000 training pairs are generated
        assert plan.fits, text


def test_the_24gb_config_fits_24gb_and_the_big_one_does_not(empty_hub_cache, monkeypatch):
    monkeypatch.chdir(REPO)
    small = plan_study(load_config("configs/local-gpu-24gb.yaml"), gpu_memory_gb=24)
    assert small.peak_memory_gb <= 24 and small.fits
    assert all(use.fits for use in small.uses if use.memory)
    big = plan_study(load_config("configs/local-gpu.yaml"), gpu_memory_gb=24)
    assert not big.fits
    assert "DOES NOT FIT 24 GB" in big.render()


@pytest.mark.parametrize(
    "name, published_billions",
    [
        ("qwen2.5-7b", 7.62),
        ("llama-3.1-8b", 8.03),
        ("qwen2.5-1.5b", 1.54),
        ("llama-3.2-3b", 3.21),
        ("mistral-7b", 7.25),
        ("llama-3.1-70b", 70.6),
    ],
)
def test_parameter_counts_match_the_published_sizes(name, published_billions):
    assert params_from_architecture(KNOWN_ARCHITECTURES[name]) / 1e9 == pytest.approx(published_billions, rel=0.02)


def _study(tmp_path: Path, model: dict, **finetune) -> dict:
    rows = (json.dumps({"question_id": str(n), "question": "q", "answer": "a"}) + "\n" for n in range(5))
    (tmp_path / "eval.jsonl").write_text("".join(rows))
    return {
        "name": "t",
        "corpus": {"path": str(tmp_path)},
        "eval": {"path": str(tmp_path / "eval.jsonl"), "controls": True},
        "models": [model],
        "arms": ["base", "rag", "ft"],
        "judges": [{"name": "j", "kind": "llm", "model": {**model, "name": "j"}}, {"name": "f1", "kind": "token_f1"}],
        "finetune": {"train_path": str(tmp_path / "train.jsonl"), **finetune},
    }


def test_counts_follow_models_arms_questions_and_judges(tmp_path, empty_hub_cache):
    from localnova.config import validate_config

    plan = plan_study(validate_config(_study(tmp_path, {"name": "m", "backend": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct"})))
    assert plan.eval_questions == 5
    assert plan.generations == 1 * 3 * 5
    assert plan.judgments == 15 + 3 * 5  # every answer plus three controls per question
    assert plan.reference_scores == 15 + 15
    assert plan.qa_generation_calls == 0  # training pairs are given
    assert [use.role for use in plan.uses] == ["LoRA training", "answer model", "judge"]


def test_a_config_json_on_disk_wins_over_the_table(tmp_path, empty_hub_cache):
    from localnova.config import validate_config

    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    tiny = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, vocab_size=1000)
    (model_dir / "config.json").write_text(json.dumps(tiny))
    plan = plan_study(validate_config(_study(tmp_path, {"name": "m", "backend": "transformers", "model": str(model_dir)})))
    answer = next(use for use in plan.uses if use.role == "answer model")
    assert answer.params == params_from_architecture(tiny)
    assert "config.json" in answer.shape_source and answer.download_needed is False
    assert plan.downloads == []


def test_a_cached_hub_model_is_not_a_download(tmp_path, empty_hub_cache):
    from localnova.config import validate_config

    snapshot = empty_hub_cache / "models--Qwen--Qwen2.5-3B-Instruct" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(KNOWN_ARCHITECTURES["qwen2.5-3b"]))
    (empty_hub_cache / "models--Qwen--Qwen2.5-3B-Instruct" / "refs").mkdir()
    (empty_hub_cache / "models--Qwen--Qwen2.5-3B-Instruct" / "refs" / "main").write_text("a" * 40)
    plan = plan_study(validate_config(_study(tmp_path, {"name": "m", "backend": "vllm", "model": "Qwen/Qwen2.5-3B-Instruct"})))
    assert plan.downloads == []
    assert all("config.json" in use.shape_source for use in plan.uses)


def test_qlora_needs_less_memory_than_bf16_lora(tmp_path, empty_hub_cache):
    from localnova.config import validate_config

    model = {"name": "m", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"}
    bf16 = plan_study(validate_config(_study(tmp_path, model, batch_size=4, max_seq_length=1024)))
    qlora = plan_study(validate_config(_study(tmp_path, model, batch_size=4, max_seq_length=1024, quantization="4bit")))
    assert qlora.uses[0].memory.gb < bf16.uses[0].memory.gb / 2


def test_qlora_weights_keep_the_embeddings_and_head_in_fp32(tmp_path, empty_hub_cache):
    """Only the linear layers are 4-bit: Qwen2.5-7B's untied embeddings and head (2 x 152,064 x
    3,584 parameters) stay fp32, about 3.7 GB more than counting them at 4 bits."""
    import re

    from localnova.config import validate_config

    model = {"name": "m", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"}
    qlora = plan_study(validate_config(_study(tmp_path, model, quantization="4bit")))
    use = next(use for use in qlora.uses if use.role == "LoRA training")
    weights_gb = float(re.search(r"weights ([0-9.]+) \(4bit\)", use.memory.detail).group(1))
    embedding_params = 2 * 152_064 * 3_584
    expected_gb = (use.params - embedding_params) * 0.56 / 1e9 + embedding_params * 4 / 1e9
    assert abs(weights_gb - expected_gb) < 0.06 and expected_gb - use.params * 0.56 / 1e9 > 3.7


def test_servers_and_unknown_sizes_get_no_memory_estimate(tmp_path, empty_hub_cache):
    from localnova.model_shapes import model_shape
    from localnova.plan import where_from

    remote = ModelConfig(name="r", backend="openai", model="gpt-x", options={"base_url": "http://judge:8000/v1"})
    assert where_from(remote) == ("OpenAI-compatible server http://judge:8000/v1 (model gpt-x)", None)
    assert model_shape(ModelConfig(name="x", model="acme/mystery-model")) is None
    by_name = model_shape(ModelConfig(name="x", model="acme/Foo-13B-Chat"))
    assert by_name.params == 13_000_000_000 and by_name.kv_bytes_per_token() is None


def test_weights_dtype_comes_from_the_one_dtype_table_for_a_gpu():
    from localnova.errors import UserError
    from localnova.plan import _weights_dtype

    def dtype(**options) -> str:
        return _weights_dtype(ModelConfig(name="m", backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", options=options))

    assert dtype() == "bf16" and dtype(dtype="auto") == "bf16"  # a GPU with bf16 is what the plan sizes for
    assert (dtype(dtype="float32"), dtype(dtype="half"), dtype(dtype="bfloat16")) == ("fp32", "fp16", "bf16")
    assert dtype(quantization="awq") == "4bit"
    with pytest.raises(UserError, match="options.dtype"):
        dtype(dtype="int3")


def test_a_gated_judge_is_flagged_by_the_plan_and_stops_the_run_before_anything(tmp_path, fake_hub, capsys):
    """The plan says in one line what to do about a gated model; `run` stops on it with one
    line and exit code 2, before any model loads or trains and before the study folder exists."""
    from localnova.cli import main

    answers, _ = fake_hub
    answers["meta-llama/Llama-3.1-8B-Instruct"] = "gated"
    config_path = tmp_path / "gated.yaml"
    config_path.write_text(f"""name: gated
output_dir: {tmp_path / "runs"}
corpus: {{path: {REPO / "data" / "demo" / "corpus"}}}
eval: {{path: {REPO / "data" / "demo" / "eval.jsonl"}}}
models:
  - {{name: smol, model: smollm2-135m-instruct}}
arms: [base, ft]
judges:
  - {{name: llama, kind: llm, model: {{name: llama, backend: transformers, model: meta-llama/Llama-3.1-8B-Instruct}}}}
""")
    plan = plan_study(load_config(config_path))
    access = [note for note in plan.notes if note.startswith("ACCESS")]
    assert len(access) == 1 and "meta-llama/Llama-3.1-8B-Instruct is gated" in access[0] and "HF_TOKEN" in access[0]
    assert main(["run", str(config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gated" in err[0] and "HF_TOKEN" in err[0]
    assert not (tmp_path / "runs").exists()


def test_the_70b_judge_on_48gb_gpus_is_told_to_split_over_two(empty_hub_cache, monkeypatch):
    """By hand from the plan's own terms: 70.55B parameters at 0.56 bytes is 39.5 GB of weights,
    plus 19.1 GB of KV for 32 sequences of 1,824 tokens (the prompt and 200 new tokens) at 327,680
    bytes a token (2 x 80 layers x 8 KV heads x 128 x 2 bytes), plus 1.5 runtime: 60.1 GB, over 48.
    Split over 2 GPUs the weights and KV halve: 29.3 + 1.5 = 30.8 GB each, and vllm's minimum
    (weights and one 8192-token sequence) 22.6 GB is within 0.85 x 48 = 40.8."""
    monkeypatch.chdir(REPO)
    config = load_config("configs/local-gpu-80gb.yaml")
    judge = next(j for j in config.judges if j.name == "llama-3-1-70b")
    assert judge.model.options["tensor_parallel_size"] == 1  # one 80 GB GPU holds it, and the config says so
    on_80 = plan_study(config, gpu_memory_gb=80)
    assert on_80.fits and not [note for note in on_80.notes if "tensor_parallel_size" in note]
    on_48 = plan_study(config, gpu_memory_gb=48)
    advice = [note for note in on_48.notes if "llama-3-1-70b" in note]
    assert advice == [
        "judge llama-3-1-70b does not fit one 48 GB GPU; set its options.tensor_parallel_size: 2 "
        "to split it over 2 GPUs of one node (~30.8 GB each)."
    ]
    split = load_config("configs/local-gpu-80gb.yaml", ["judges.0.model.options.tensor_parallel_size=2"])
    plan = plan_study(split, gpu_memory_gb=48)
    text = plan.render()
    assert "runs on 2 GPUs of one node" in text and "split over 2 GPUs" in text
    assert next(use for use in plan.uses if use.name == "llama-3-1-70b").fits

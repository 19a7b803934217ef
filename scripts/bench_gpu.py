"""GPU benchmark of the local path, on any CUDA machine, in under ten minutes, no downloads.

Models are built from their configs with random weights (a Llama-3.2-1B shape and a
Qwen2.5-7B shape), which run at the same speed as trained weights of the same shape.

Parts (each that cannot run says why; the rest still runs):
  train   LoRA training tokens/s and MFU, 1B and 7B shapes.
          FLOPs per token = 4*N + 6*N_lora + 12*L*s*d. The frozen base does a forward (2N)
          and, to carry gradients down to the adapters below, the activation half of the
          backward (2N), but never the weight-gradient half (the other 2N of full
          fine-tuning's 6N); adapters train in full (6 N_lora); attention scores and their
          backward add 12*L*s*d (PaLM's accounting). N counts the matmul weights (the
          embedding lookup is no matmul; a tied output head is). The 6N figure that some
          LoRA reports quote is given too, labelled, because it overstates the work by ~1.5x.
  decode  transformers decode tokens/s at batch 1 against the memory-bandwidth bound
          (parameter bytes read per token), eager and with a static cache + torch.compile,
          and batched throughput.
  vllm    our VLLMBackend at batch 1 and batched, and against `vllm bench throughput` on the
          same model and the same prompt/output lengths (its --random-* lengths, exactly).
  faiss   faiss-gpu against faiss-cpu exact search on 1M vectors (and that they agree).

  python scripts/bench_gpu.py --out bench_gpu.json            # everything that can run
  python scripts/bench_gpu.py --parts train,decode --out x.json
  python scripts/bench_gpu.py --dry-run                       # what would run, and why not
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from localnova.model_shapes import KNOWN_ARCHITECTURES, params_from_architecture  # noqa: E402  (light: no torch)

PARTS = ("train", "decode", "vllm", "faiss")
SHAPES = {"1b": ("llama", "llama-3.2-1b"), "7b": ("qwen2", "qwen2.5-7b")}

# name fragment -> (dense bf16 FLOP/s without sparsity, memory bandwidth bytes/s), from the
# vendors' data sheets; the first fragment found in torch's device name wins
GPU_PEAKS = [
    ("H200", 989e12, 4.8e12),
    ("H100 NVL", 835e12, 3.9e12),
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100", 989e12, 3.35e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("GH200", 989e12, 4.0e12),
    ("A100-SXM4-80GB", 312e12, 2.039e12),
    ("A100", 312e12, 1.555e12),
    ("L40S", 362e12, 0.864e12),
    ("L4", 121e12, 0.3e12),
    ("A10", 125e12, 0.6e12),
    ("RTX 4090", 165e12, 1.008e12),
    ("RTX 3090", 71e12, 0.936e12),
]


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def device_info() -> dict[str, Any]:
    """The GPU and its peaks, or why there is none."""
    if not has("torch"):
        return {"cuda": False, "reason": "torch is not installed"}
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "reason": f"no CUDA device (torch {torch.__version__})"}
    name = torch.cuda.get_device_name(0)
    info: dict[str, Any] = {
        "cuda": True,
        "name": name,
        "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "peak_bf16_flops": None,
        "bandwidth_bytes_s": None,
    }
    for fragment, flops, bandwidth in GPU_PEAKS:
        if fragment in name:
            info.update(peak_bf16_flops=flops, bandwidth_bytes_s=bandwidth, peak_source=f"data sheet for {fragment}")
            break
    return info


def part_blockers(part: str, device: dict[str, Any]) -> str | None:
    """Why a part cannot run here, or None."""
    if not device["cuda"]:
        return device["reason"]
    needs = {"train": ["transformers", "peft"], "decode": ["transformers"], "vllm": ["vllm"], "faiss": ["faiss"]}[part]
    missing = [package for package in needs if not has(package)]
    if missing:
        return f"not installed: {', '.join(missing)}"
    if part == "faiss":
        import faiss

        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
            return "faiss is the CPU build (pip install faiss-gpu-cu12 for the GPU one)"
    return None


def build_model(shape: str, vocab_size: int | None = None):
    """A causal LM of a known shape with random weights, bf16, on the GPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    family, known = SHAPES[shape]
    arch = dict(KNOWN_ARCHITECTURES[known])
    if vocab_size is not None:
        arch["vocab_size"] = vocab_size
    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if family == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_class(**arch, max_position_embeddings=4096, attn_implementation="sdpa", dtype="bfloat16")
    torch.manual_seed(0)
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: no fp32 copy of a 7B model
    try:
        with torch.device("cuda"):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous_dtype)
    return model, arch


def matmul_params(arch: dict[str, Any]) -> int:
    """Weights that take part in a matmul per token: all but the input embedding lookup
    (a tied head is a matmul, so it stays)."""
    embedding = arch["vocab_size"] * arch["hidden_size"]
    total = params_from_architecture(arch)
    return total if arch.get("tie_word_embeddings") else total - embedding


def timed(step: Callable[[], Any], warmup: int, repeats: int) -> float:
    """Seconds per call after warm-up, with the GPU synchronised around the timing."""
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def bench_train(device: dict[str, Any], quick: bool) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    results = {}
    for shape, (batch, seq_len) in {"1b": (8, 1024), "7b": (4, 1024)}.items():
        if quick:
            batch, seq_len = 2, 256
        model, arch = build_model(shape)
        model.config.use_cache = False
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
        lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # LoRA weights train in fp32 (the trainer's master copy); the base stays bf16
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
        tokens = torch.randint(0, arch["vocab_size"], (batch, seq_len), device="cuda")

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = timed(step, warmup=2, repeats=3 if quick else 8)
        tokens_per_s = batch * seq_len / seconds
        n = matmul_params(arch)
        head_dim = arch["hidden_size"] // arch["num_attention_heads"]
        attention = 12 * arch["num_hidden_layers"] * seq_len * arch["num_attention_heads"] * head_dim
        flops_per_token = 4 * n + 6 * lora_params + attention
        peak = device["peak_bf16_flops"]
        results[shape] = {
            "shape": SHAPES[shape][1],
            "params": params_from_architecture(arch),
            "matmul_params": n,
            "lora_params": lora_params,
            "batch": batch,
            "seq_len": seq_len,
            "step_s": round(seconds, 4),
            "tokens_per_s": round(tokens_per_s),
            "flops_per_token": flops_per_token,
            "achieved_tflops": round(tokens_per_s * flops_per_token / 1e12, 1),
            "mfu": round(tokens_per_s * flops_per_token / peak, 4) if peak else None,
            "mfu_6n_convention": round(tokens_per_s * (6 * n + attention) / peak, 4) if peak else None,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1),
        }
        print(f"  train {shape}: {results[shape]['tokens_per_s']} tokens/s, MFU {results[shape]['mfu']}", flush=True)
        del model, optimizer
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if not device["peak_bf16_flops"]:
        results["note"] = f"unknown peak for {device['name']}: MFU not computed"
    return results


def bench_decode(device: dict[str, Any], quick: bool) -> dict[str, Any]:
    import torch

    new_tokens = 32 if quick else 128
    prompt_len = 128
    results = {}
    for shape in ("1b", "7b"):
        model, arch = build_model(shape)
        model.eval()
        model.generation_config.eos_token_id = None  # random weights: never stop early
        model.generation_config.pad_token_id = 0
        bytes_per_token = matmul_params(arch) * 2  # bf16 weights read once per decoded token
        bound = device["bandwidth_bytes_s"] / bytes_per_token if device["bandwidth_bytes_s"] else None
        entry: dict[str, Any] = {
            "shape": SHAPES[shape][1],
            "weight_bytes_per_token": bytes_per_token,
            "bandwidth_bound_tokens_per_s": round(bound, 1) if bound else None,
        }

        def run(batch: int, **options) -> float:
            prompt = torch.randint(1, arch["vocab_size"], (batch, prompt_len), device="cuda")
            with torch.inference_mode():

                def generate() -> None:
                    model.generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                        **options,
                    )

                seconds = timed(generate, warmup=1, repeats=2)
            return batch * new_tokens / seconds

        entry["batch1_eager_tokens_per_s"] = round(run(1), 1)
        try:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
            entry["batch1_static_compiled_tokens_per_s"] = round(run(1, cache_implementation="static"), 1)
        except Exception as error:  # noqa: BLE001 - compile support varies by version; report it
            entry["batch1_static_compiled_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        best = max(entry.get("batch1_static_compiled_tokens_per_s", 0), entry["batch1_eager_tokens_per_s"])
        entry["batch1_fraction_of_bound"] = round(best / bound, 3) if bound else None
        torch._dynamo.reset()
        del model.forward  # back to the eager forward for the batched run
        entry["batch32_tokens_per_s"] = round(run(32), 1)
        results[shape] = entry
        print(
            f"  decode {shape}: batch 1 {best:.0f} tokens/s ({entry['batch1_fraction_of_bound']} of bound), "
            f"batch 32 {entry['batch32_tokens_per_s']:.0f}",
            flush=True,
        )
        del model
        torch.cuda.empty_cache()
    return results


def _vllm_model_dir(folder: Path) -> Path:
    """The 1B shape with random weights and the bundled SmolLM2 tokenizer (its vocabulary),
    saved where vllm and `vllm bench` can load it."""
    from transformers import AutoTokenizer

    from localnova.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct").path)
    model, _ = build_model("1b", vocab_size=len(tokenizer))
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def bench_vllm(device: dict[str, Any], quick: bool) -> dict[str, Any]:
    import torch

    from localnova.backends.vllm_backend import VLLMBackend
    from localnova.config import ModelConfig
    from localnova.types import ChatRequest, GenerationParams

    num_prompts, output_len = (32, 32) if quick else (256, 128)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as folder:
        model_dir = _vllm_model_dir(Path(folder))
        torch.cuda.empty_cache()
        backend = VLLMBackend(ModelConfig(name="bench", backend="vllm", model=str(model_dir), options={"gpu_memory_utilization": 0.6}))
        words = "the quick brown fox jumps over the lazy dog " * 24  # ~220 tokens with the template
        params = GenerationParams(max_new_tokens=output_len)
        requests = [ChatRequest.from_messages([{"role": "user", "content": f"{n} {words}"}], params) for n in range(num_prompts)]
        backend.generate(requests[:4])  # warm-up
        started = time.perf_counter()
        single = backend.generate(requests[:1])
        results["batch1_tokens_per_s"] = round(single[0].output_tokens / (time.perf_counter() - started), 1)
        started = time.perf_counter()
        answers = backend.generate(requests)
        seconds = time.perf_counter() - started
        input_tokens = sum(a.input_tokens for a in answers)
        output_tokens = sum(a.output_tokens for a in answers)
        results["ours"] = {
            "requests": num_prompts,
            "requests_per_s": round(num_prompts / seconds, 2),
            "output_tokens_per_s": round(output_tokens / seconds, 1),
            "total_tokens_per_s": round((input_tokens + output_tokens) / seconds, 1),
            "mean_input_tokens": input_tokens // num_prompts,
            "mean_output_tokens": output_tokens // num_prompts,
        }
        backend.close()
        del backend
        torch.cuda.empty_cache()
        results["vllm_bench"] = _vllm_bench_throughput(model_dir, num_prompts, input_tokens // num_prompts, output_len)
        reference = results["vllm_bench"].get("requests_per_second")
        if reference:
            results["ours_fraction_of_vllm_bench"] = round(results["ours"]["requests_per_s"] / reference, 3)
    print(f"  vllm: {json.dumps(results)[:300]}", flush=True)
    return results


def vllm_bench_command(executable: str, model_dir: Path, num_prompts: int, input_len: int, output_len: int, out: Path) -> list[str]:
    """`vllm bench throughput` on the random dataset with our prompt and output lengths.

    In vllm 0.33 the random dataset reads --random-input-len/--random-output-len (defaults 1024
    and 128) and ignores --input-len/--output-len, so those would have benchmarked 1024-token
    prompts against our ~220-token ones. --random-range-ratio 0 makes every prompt and output
    exactly that long instead of spread around it.
    """
    return [
        executable,
        "bench",
        "throughput",
        "--model",
        str(model_dir),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_len),
        "--random-output-len",
        str(output_len),
        "--random-range-ratio",
        "0",
        "--num-prompts",
        str(num_prompts),
        "--gpu-memory-utilization",
        "0.6",
        "--output-json",
        str(out),
    ]


def _vllm_bench_throughput(model_dir: Path, num_prompts: int, input_len: int, output_len: int) -> dict[str, Any]:
    executable = shutil.which("vllm")
    if executable is None:
        return {"status": "skipped", "reason": "the `vllm` command is not on PATH"}
    out = model_dir / "vllm_bench.json"
    command = vllm_bench_command(executable, model_dir, num_prompts, input_len, output_len, out)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=400)
    if finished.returncode != 0 or not out.exists():
        return {"status": "failed", "command": " ".join(command), "stderr_tail": finished.stderr[-1500:]}
    return {"status": "ok", "command": " ".join(command), **json.loads(out.read_text())}


def bench_faiss(device: dict[str, Any], quick: bool) -> dict[str, Any]:
    import faiss
    import numpy as np

    count, dim, queries, k = (200_000 if quick else 1_000_000), 384, 10_000, 10
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    faiss.normalize_L2(vectors)
    query_vectors = vectors[rng.choice(count, queries, replace=False)] + 0.01 * rng.standard_normal((queries, dim), dtype=np.float32)
    faiss.normalize_L2(query_vectors)
    cpu_index = faiss.IndexFlatIP(dim)
    cpu_index.add(vectors)
    started = time.perf_counter()
    _, cpu_ids = cpu_index.search(query_vectors, k)
    cpu_s = time.perf_counter() - started
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
    gpu_index.search(query_vectors[:100], k)  # warm-up
    started = time.perf_counter()
    _, gpu_ids = gpu_index.search(query_vectors, k)
    gpu_s = time.perf_counter() - started
    agreement = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(cpu_ids, gpu_ids)]))
    result = {
        "vectors": count,
        "dim": dim,
        "queries": queries,
        "k": k,
        "cpu_threads": faiss.omp_get_max_threads(),
        "cpu_queries_per_s": round(queries / cpu_s),
        "gpu_queries_per_s": round(queries / gpu_s),
        "speedup": round(cpu_s / gpu_s, 1),
        "top_k_agreement": round(agreement, 4),
    }
    print(f"  faiss: {result}", flush=True)
    return result


RUNNERS = {"train": bench_train, "decode": bench_decode, "vllm": bench_vllm, "faiss": bench_faiss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_gpu.json", help="where to write the JSON results")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not figures to report")
    parser.add_argument("--dry-run", action="store_true", help="say what would run and why a part cannot, run nothing")
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}")
    device = device_info()
    report: dict[str, Any] = {
        "device": device,
        "host": platform.node(),
        "python": platform.python_version(),
        "quick": args.quick,
        "parts": {},
    }
    print(f"device: {device.get('name') or device['reason']}", flush=True)
    for part in parts:
        blocker = part_blockers(part, device)
        if blocker is not None:
            report["parts"][part] = {"status": "skipped", "reason": blocker}
            print(f"{part}: skipped: {blocker}", flush=True)
            continue
        if args.dry_run:
            report["parts"][part] = {"status": "would run"}
            print(f"{part}: would run", flush=True)
            continue
        print(f"{part}: running", flush=True)
        started = time.perf_counter()
        try:
            report["parts"][part] = {"status": "ok", **RUNNERS[part](device, args.quick)}
        except Exception as error:  # noqa: BLE001 - one part failing must not stop the others
            report["parts"][part] = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-3000:],
            }
            print(f"{part}: failed: {type(error).__name__}: {error}", flush=True)
        report["parts"][part]["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

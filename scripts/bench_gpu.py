"""GPU benchmark of the local path, on any CUDA machine, in under ten minutes, no downloads.

Models are built from their configs with random weights (a Llama-3.2-1B shape and a
Qwen2.5-7B shape), which run at the same speed as trained weights of the same shape.

Parts (each that cannot run says why; the rest still runs):
  train   LoRA training tokens/s and MFU, 1B and 7B shapes; on the 7B shape today's path and the
          speed settings side by side (TRAIN_VARIANTS: Liger kernels, padding-free rows), MFU
          over the rows' real tokens.
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
SHAPES = {"1b": "llama-3.2-1b", "7b": "qwen2.5-7b"}

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
    """A causal LM of a known shape with random weights, bf16, on the GPU (localnova.random_models,
    the builder every script shares)."""
    from localnova.random_models import build_random, known_config

    config = known_config(SHAPES[shape])
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    model = build_random({**config, "attn_implementation": "sdpa"}, dtype="bfloat16", device="cuda")
    arch = {key: value for key, value in config.items() if key in KNOWN_ARCHITECTURES[SHAPES[shape]]}
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


# The training variants, timed side by side in one run on the same shapes and rows. Every variant
# without Liger runs first: Liger patches module-level functions of the model's family.
#   today                      a fixed batch of full-length rows, transformers' own kernels
#   varlen_padded              rows of mixed length (128 to seq_len tokens), batched as the study's
#                              trainer batches them (grouped by length) and padded to the longest
#   liger                      today's batch with Liger's kernels (finetune.liger_kernels: the
#                              Trainer's use_liger_kernel; fused linear cross-entropy, RMSNorm, RoPE, SwiGLU)
#   varlen_padding_free_liger  the mixed rows laid end to end per batch (finetune.padding_free), with Liger
TRAIN_VARIANTS = ("today", "varlen_padded", "liger", "varlen_padding_free_liger")
# The 1B shape runs today's path only (the figure of earlier runs); the 7B shape runs every variant.
TRAIN_SHAPES = {"1b": ((8, 1024), ("today",)), "7b": ((4, 1024), TRAIN_VARIANTS)}


def train_flops(lengths: list[int], matmul: int, lora_params: int, arch: dict[str, Any]) -> int:
    """Useful training FLOPs for rows of these lengths (padding does none): per token
    4*N + 6*N_lora, and attention 12*L*s*d per token of a row of s tokens (the module docstring)."""
    width = arch["num_attention_heads"] * (arch["hidden_size"] // arch["num_attention_heads"])
    return sum((4 * matmul + 6 * lora_params) * s + 12 * arch["num_hidden_layers"] * width * s * s for s in lengths)


def mixed_lengths(count: int, seq_len: int, batch: int) -> list[list[int]]:
    """Row lengths drawn uniformly from 128..seq_len (seeded), batched as transformers'
    LengthGroupedSampler batches them: sorted longest first within a group, then cut in batches."""
    import random

    rng = random.Random(0)
    lengths = sorted((rng.randint(min(128, seq_len), seq_len) for _ in range(count)), reverse=True)
    return [lengths[start : start + batch] for start in range(0, count, batch)]


def train_batches(variant: str, batch: int, seq_len: int, steps: int, vocab: int, device: str = "cuda") -> list[tuple[dict, list[int]]]:
    """(model inputs, the rows' lengths) for each timed step of a variant. The padding-free
    batches have the layout of TRL's collator with padding_free (tests/test_bench_gpu.py)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    if variant in ("today", "liger"):
        tokens = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)
        return [({"input_ids": tokens, "labels": tokens}, [seq_len] * batch)] * steps
    batches = []
    for lengths in mixed_lengths(steps * batch, seq_len, batch):
        rows = [torch.randint(1, vocab, (length,), generator=generator) for length in lengths]
        if variant == "varlen_padded":
            longest = max(lengths)
            input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
            labels = torch.full((len(rows), longest), -100)
            mask = torch.zeros(len(rows), longest, dtype=torch.long)
            for index, row in enumerate(rows):
                input_ids[index, : len(row)], labels[index, : len(row)], mask[index, : len(row)] = row, row, 1
            inputs = {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
        else:  # padding-free: one row of the rows end to end, each with its own positions (TRL's collator)
            input_ids = torch.cat(rows)[None]
            positions = torch.cat([torch.arange(len(row)) for row in rows])[None]
            labels = input_ids.clone()
            labels[positions == 0] = -100  # no row learns to predict the next row's first token
            inputs = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
        batches.append(({key: value.to(device) for key, value in inputs.items()}, lengths))
    return batches


def bench_train(device: dict[str, Any], quick: bool) -> dict[str, Any]:
    import torch

    results: dict[str, Any] = {}
    for shape, ((batch, seq_len), variants) in TRAIN_SHAPES.items():
        if quick:
            batch, seq_len = 2, 256
        results[shape] = {}
        for variant in variants:
            if "liger" in variant and not has("liger_kernel"):
                results[shape][variant] = {"status": "skipped", "reason": "not installed: liger-kernel"}
                continue
            results[shape][variant] = _train_variant(shape, variant, batch, seq_len, quick, device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        today, best = (
            results[shape].get("today", {}),
            max((row for row in results[shape].values() if row.get("mfu") is not None), key=lambda row: row["mfu"], default=None),
        )
        if today.get("mfu") and best:
            results[shape]["best_mfu_over_today"] = round(best["mfu"] / today["mfu"], 3)
    if not device["peak_bf16_flops"]:
        results["note"] = f"unknown peak for {device['name']}: MFU not computed"
    return results


def _train_variant(shape: str, variant: str, batch: int, seq_len: int, quick: bool, device: dict[str, Any]) -> dict[str, Any]:
    """One training variant: LoRA r=16 on every linear layer, fused AdamW; tokens/s and MFU
    over the rows' real tokens."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, arch = build_model(shape)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    if "liger" in variant:
        from transformers.integrations.liger import apply_liger_kernel

        apply_liger_kernel(model, None)  # what the Trainer's use_liger_kernel does
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # LoRA weights train in fp32 (the trainer's master copy); the base stays bf16
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    warmup, repeats = 2, (3 if quick else 8)
    batches = train_batches(variant, batch, seq_len, warmup + repeats, arch["vocab_size"])

    def step(inputs: dict) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for inputs, _ in batches[:warmup]:
        step(inputs)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for inputs, _ in batches[warmup:]:
        step(inputs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    lengths = [length for _, row_lengths in batches[warmup:] for length in row_lengths]
    tokens = sum(lengths)
    computed = sum(inputs["input_ids"].numel() for inputs, _ in batches[warmup:])
    n = matmul_params(arch)
    flops = train_flops(lengths, n, lora_params, arch)
    peak = device["peak_bf16_flops"]
    width = arch["num_attention_heads"] * (arch["hidden_size"] // arch["num_attention_heads"])
    row = {
        "shape": SHAPES[shape],
        "variant": variant,
        "params": params_from_architecture(arch),
        "matmul_params": n,
        "lora_params": lora_params,
        "batch": batch,
        "seq_len": seq_len,
        "rows": len(lengths),
        "tokens": tokens,
        "padding_fraction": round(1 - tokens / computed, 4),
        "step_s": round(seconds / repeats, 4),
        "tokens_per_s": round(tokens / seconds),
        "achieved_tflops": round(flops / seconds / 1e12, 1),
        "mfu": round(flops / seconds / peak, 4) if peak else None,
        "mfu_6n_convention": round(sum(6 * n * s + 12 * arch["num_hidden_layers"] * width * s * s for s in lengths) / seconds / peak, 4)
        if peak
        else None,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1),
    }
    print(f"  train {shape} {variant}: {row['tokens_per_s']} tokens/s, MFU {row['mfu']}, peak {row['peak_memory_gb']} GB", flush=True)
    del model, optimizer, batches
    return row


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
            "shape": SHAPES[shape],
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
    agreement = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(cpu_ids, gpu_ids, strict=True)]))
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

"""scripts/bench_gpu.py: on a machine without CUDA it runs nothing, says why for every part
and still writes its JSON; with CUDA (marked gpu) a quick pass of every part that can run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localnova import optional

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.mark.skipif(optional.cuda_available(), reason="this machine has CUDA: the GPU test below runs instead")
def test_without_cuda_every_part_says_why_and_the_json_is_written(tmp_path):
    out = tmp_path / "bench.json"
    finished = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(out.read_text())
    assert report["device"]["cuda"] is False
    assert set(report["parts"]) == {"train", "decode", "vllm", "faiss"}
    for part, result in report["parts"].items():
        assert result["status"] == "skipped" and "CUDA" in result["reason"]
        assert f"{part}: skipped: " in finished.stdout


def test_dry_run_runs_nothing_and_unknown_parts_are_refused(tmp_path):
    out = tmp_path / "bench.json"
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--parts", "faiss,decode", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert set(json.loads(out.read_text())["parts"]) == {"faiss", "decode"}
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "nope", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "unknown part" in refused.stderr


def load_bench():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return bench_gpu


def test_flop_accounting_counts_the_matmul_weights():
    bench_gpu = load_bench()
    from localnova.model_shapes import KNOWN_ARCHITECTURES, params_from_architecture

    qwen7b = KNOWN_ARCHITECTURES["qwen2.5-7b"]  # untied: the input embedding is a lookup, not a matmul
    assert bench_gpu.matmul_params(qwen7b) == params_from_architecture(qwen7b) - qwen7b["vocab_size"] * qwen7b["hidden_size"]
    llama1b = KNOWN_ARCHITECTURES["llama-3.2-1b"]  # tied: the shared matrix is the output head's matmul
    assert bench_gpu.matmul_params(llama1b) == params_from_architecture(llama1b)


def test_vllm_bench_gets_our_prompt_and_output_lengths_exactly(tmp_path):
    # vllm 0.33's random dataset reads only the --random-* lengths (defaults 1024 in, 128 out):
    # --input-len/--output-len would have compared its 1024-token prompts with our ~220-token ones.
    command = load_bench().vllm_bench_command("vllm", tmp_path / "model", 256, 219, 128, tmp_path / "out.json")

    def value(flag: str) -> str:
        assert command.count(flag) == 1, flag
        return command[command.index(flag) + 1]

    assert command[:3] == ["vllm", "bench", "throughput"]
    assert value("--dataset-name") == "random"
    assert (value("--random-input-len"), value("--random-output-len"), value("--random-range-ratio")) == ("219", "128", "0")
    assert value("--num-prompts") == "256" and value("--model") == str(tmp_path / "model")
    assert value("--output-json") == str(tmp_path / "out.json")
    assert "--input-len" not in command and "--output-len" not in command


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not optional.cuda_available(), reason="needs a CUDA GPU")
def test_quick_pass_on_a_gpu(tmp_path):
    out = tmp_path / "bench.json"
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--parts", "train,decode", "--out", str(out)], capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stderr
    report = json.loads(out.read_text())
    assert report["parts"]["train"]["status"] == "ok", report["parts"]["train"]
    assert report["parts"]["train"]["1b"]["tokens_per_s"] > 0
    assert report["parts"]["decode"]["status"] == "ok", report["parts"]["decode"]


def test_useful_flops_of_full_rows_are_todays_per_token_count():
    """A batch of full rows gives exactly the per-token count the MFU figures of earlier runs used:
    tokens x (4N + 6N_lora + 12*L*s*d)."""
    bench_gpu = load_bench()
    from localnova.model_shapes import KNOWN_ARCHITECTURES

    arch = KNOWN_ARCHITECTURES["qwen2.5-7b"]
    n, lora, s = bench_gpu.matmul_params(arch), 40_370_176, 1024
    per_token = 4 * n + 6 * lora + 12 * arch["num_hidden_layers"] * s * arch["hidden_size"]
    assert bench_gpu.train_flops([s] * 4, n, lora, arch) == 4 * s * per_token
    # a row of 128 tokens costs 128 tokens of matmuls and attention over 128 positions, not 1024
    short = bench_gpu.train_flops([128], n, lora, arch)
    assert short == 128 * (4 * n + 6 * lora + 12 * arch["num_hidden_layers"] * 128 * arch["hidden_size"])


def test_mixed_rows_are_batched_by_length_as_the_trainer_batches_them():
    bench_gpu = load_bench()
    batches = bench_gpu.mixed_lengths(32, 1024, 4)
    lengths = [length for batch in batches for length in batch]
    assert len(batches) == 8 and all(len(batch) == 4 for batch in batches)
    assert lengths == sorted(lengths, reverse=True) and 128 <= min(lengths) and max(lengths) <= 1024


def test_padding_free_batches_are_what_trls_collator_makes():
    """The bench's padding-free variant must time what finetune.padding_free trains on: the
    rows end to end, positions restarting per row, no label across a row boundary."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    bench_gpu = load_bench()
    (inputs, lengths), *_ = bench_gpu.train_batches("varlen_padding_free_liger", 4, 300, 1, vocab=1000, device="cpu")
    starts = [0, *torch.tensor(lengths).cumsum(0)[:-1].tolist()]
    rows = [{"input_ids": inputs["input_ids"][0, a : a + n].tolist()} for a, n in zip(starts, lengths, strict=True)]
    expected = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    for key in ("input_ids", "position_ids", "labels"):
        assert torch.equal(inputs[key], expected[key]), key
    (padded, padded_lengths), *_ = bench_gpu.train_batches("varlen_padded", 4, 300, 1, vocab=1000, device="cpu")
    assert padded_lengths == lengths and padded["attention_mask"].sum().item() == sum(lengths)

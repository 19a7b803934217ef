"""Several ranks over gloo, launched as a user launches them on a cluster, set against one rank.

Each run is `python -m localnova.finetune.launch` on a small random Llama (SmolLM2's shape, a
few layers), the demo's training pairs, 3 optimizer steps of the same global batch: one rank
with a batch of 4, or two ranks with 2 each. Data parallelism splits each global batch between
the ranks and averages their gradients, so the losses must match one rank's within the
rounding of a different summation order. A matching loss proves nothing alone (two unconnected
copies each training on everything match too), so every test also asserts the world size, the
backend and what accelerate wrapped the model in, from what the run wrote beside its adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import REPO, free_port

pytestmark = pytest.mark.engines

STEPS, GLOBAL_BATCH = 3, 4
# Losses of one rank and of two, step by step: the same numbers up to float32 summation order
# (ENGINES-ON-CPU.md saw 1e-6; identical with one thread per process, as every run here has).
LOSS_TOLERANCE = 1e-4
# Each rank alone on one thread: two ranks on two cores, and the same arithmetic in every run.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study config for launch.py: a SmolLM2-shaped Llama with random weights (2 layers of
    64), the demo's eval set and 32 of its training pairs."""
    from localnova.models import resolve_model
    from localnova.random_models import export_shape, save_random_model

    folder = tmp_path_factory.mktemp("ranks")
    shape = export_shape(Path(resolve_model("smollm2-135m-instruct").path), folder / "shape")
    config = json.loads((shape / "config.json").read_text())
    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}
    (shape / "config.json").write_text(json.dumps({**config, **small}))
    model = save_random_model(shape, folder / "model")
    path = folder / "study.yaml"
    path.write_text(
        "name: ranks\n"
        f"output_dir: {folder / 'runs'}\n"
        f"corpus: {{path: {REPO / 'data' / 'demo' / 'corpus'}}}\n"
        f"eval: {{path: {REPO / 'data' / 'demo' / 'eval.jsonl'}}}\n"
        f"models: [{{name: tiny, model: {model}}}]\n"
        "finetune:\n"
        f"  train_path: {REPO / 'data' / 'demo' / 'train.jsonl'}\n"
        "  max_train_pairs: 32\n  epochs: 1\n  learning_rate: 0.001\n  max_seq_length: 128\n"
        "  lora: {r: 8, alpha: 16, dropout: 0.0}\n"
    )
    return path


def _launch_arguments(study: Path, out: Path) -> list[str]:
    return ["-m", "localnova.finetune.launch", "--config", str(study), "--out", str(out), "--max-steps", str(STEPS)]


def _run(command: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _trained(out: Path) -> dict:
    return json.loads((out / "localnova_adapter.json").read_text(encoding="utf-8"))


def _losses(saved: dict) -> list[float]:
    return [point["loss"] for point in saved["loss_curve"]]


@pytest.fixture(scope="module")
def one_rank(study, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one") / "adapter"
    command = [sys.executable, *_launch_arguments(study, out), "--set", f"finetune.batch_size={GLOBAL_BATCH}"]
    _run(command, out.parent)
    saved = _trained(out)
    assert saved["world_size"] == 1 and len(saved["loss_curve"]) == STEPS
    return saved


def _compare(name: str, saved: dict, one_rank: dict) -> None:
    gaps = [abs(a - b) for a, b in zip(_losses(saved), _losses(one_rank), strict=True)]
    print(f"{name}: losses {_losses(saved)} vs one rank {_losses(one_rank)}; largest gap {max(gaps):.2e}")
    assert max(gaps) <= LOSS_TOLERANCE


def test_ddp_through_accelerate_with_the_shipped_config_matches_one_rank(study, one_rank, tmp_path):
    """configs/accelerate/ddp.yaml as docs/gpu.md launches it, with 2 processes on this CPU: the
    Trainer (use_cpu) joins them over gloo."""
    out = tmp_path / "adapter"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml")]
    command += ["--num_processes", "2", "--main_process_port", str(free_port())]
    _run(command + _launch_arguments(study, out) + ["--set", "finetune.batch_size=2"], tmp_path)
    saved = _trained(out)
    assert saved["world_size"] == 2 and saved["distributed_backend"] == "gloo"
    assert saved["distributed_type"] == "MULTI_CPU" and saved["wrapped_as"] == "DistributedDataParallel"
    _compare("accelerate launch, ddp.yaml, 2 processes", saved, one_rank)


def test_the_fsdp_config_on_a_cpu_trains_data_parallel_and_says_so(study, one_rank, tmp_path):
    """configs/accelerate/fsdp.yaml with 2 processes on this CPU. accelerate shards with FSDP
    only on an accelerator: on a CPU the same launch trains data-parallel (MULTI_CPU, DDP), and
    the adapter's record says so rather than claiming FSDP. Its rank-0-only loading
    (fsdp_cpu_ram_efficient_loading) must not leave rank 1 without weights when nothing
    broadcasts them: the losses match one rank's."""
    out = tmp_path / "adapter"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / "fsdp.yaml")]
    command += ["--num_processes", "2", "--main_process_port", str(free_port())]
    _run(command + _launch_arguments(study, out) + ["--set", "finetune.batch_size=2"], tmp_path)
    saved = _trained(out)
    assert saved["world_size"] == 2 and saved["distributed_type"] == "MULTI_CPU" and saved["wrapped_as"] == "DistributedDataParallel"
    _compare("accelerate launch, fsdp.yaml, 2 processes on a CPU", saved, one_rank)


def test_two_nodes_on_localhost_with_torchrun_match_one_rank(study, one_rank, tmp_path):
    """Two `torchrun --nnodes 2` "nodes" of one process each on this machine, as a user starts
    one per node of a cluster (static rendezvous at node 0's address)."""
    out = tmp_path / "adapter"
    port = free_port()
    nodes = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank)]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
        command += [*_launch_arguments(study, out), "--set", "finetune.batch_size=2"]
        nodes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for node in nodes:
        stdout, stderr = node.communicate(timeout=900)
        assert node.returncode == 0, f"{stdout[-2000:]}\n{stderr[-4000:]}"
    saved = _trained(out)
    assert saved["world_size"] == 2 and saved["distributed_backend"] == "gloo" and saved["wrapped_as"] == "DistributedDataParallel"
    _compare("torchrun --nnodes 2 on localhost", saved, one_rank)

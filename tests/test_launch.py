"""finetune/launch.py and configs/accelerate/: each rank embeds on its own GPU, FSDP's efficient
loading starts the process group before the model loads, and the accelerate configs take the
process count from the command line, checked against the installed accelerate's own parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localnova.errors import UserError
from localnova.finetune import launch

REPO = Path(__file__).resolve().parents[1]
DDP = REPO / "configs" / "accelerate" / "ddp.yaml"
FSDP = REPO / "configs" / "accelerate" / "fsdp.yaml"


@pytest.fixture
def four_gpus(monkeypatch):
    """A node with four CUDA devices, as far as launch.py can tell."""
    import torch

    monkeypatch.setattr(launch, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_without_cuda_the_embedder_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(launch, "cuda_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert launch.embedder_device() == "cpu"


@pytest.mark.parametrize("local_rank, device", [(None, "cuda:0"), ("0", "cuda:0"), ("3", "cuda:3")])
def test_each_rank_embeds_on_its_own_gpu(four_gpus, monkeypatch, local_rank, device):
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert launch.embedder_device() == device


def test_a_rank_without_a_gpu_of_its_own_says_how_to_launch(four_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(UserError, match=r"LOCAL_RANK=4 .* 4 CUDA device.*--num_processes 4"):
        launch.embedder_device()


def test_finetune_from_config_hands_the_rank_device_to_the_embedder(four_gpus, monkeypatch, tmp_path):
    from localnova.config import validate_config

    (tmp_path / "eval.jsonl").write_text(json.dumps({"question_id": "q1", "question": "q?", "answer": "a."}) + "\n")
    config = validate_config(
        {
            "name": "t",
            "output_dir": str(tmp_path / "runs"),
            "corpus": {"path": str(tmp_path)},
            "eval": {"path": str(tmp_path / "eval.jsonl")},
            "models": [{"name": "m", "model": "smollm2-135m-instruct"}],
        }
    )
    devices = []

    class FakeEmbedder:
        def __init__(self, model_name, revision=None, device=None):
            devices.append(device)

    monkeypatch.setattr(launch, "Embedder", FakeEmbedder)
    monkeypatch.setattr(launch, "training_records", lambda config, eval_items, embedder: ([{"messages": []}], None, None))
    monkeypatch.setattr(launch, "resolve_model", lambda name, revision=None: name)
    monkeypatch.setattr(launch, "find_or_train_adapter", lambda *args, **kwargs: "trained")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert launch.finetune_from_config(config) == "trained"
    assert devices == ["cuda:2"]


def _launch_env(config_file: Path, *flags: str) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG --num_processes 2 ...` gives each
    rank, from the installed accelerate's own parser, validation and env builder."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    parsed = launch_command_parser().parse_args(["--config_file", str(config_file), "--num_processes", "2", *flags, "train.py"])
    args, _, _ = _validate_launch_command(parsed)
    assert args.num_processes == 2  # the command line's count, never a number from the file
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("config_file", [DDP, FSDP], ids=["ddp", "fsdp"])
def test_accelerate_configs_take_the_process_count_from_the_command_line(config_file):
    import yaml
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert "num_processes" not in yaml.safe_load(config_file.read_text())  # a fixed count crashes a smaller node
    parsed = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    with pytest.raises(ValueError, match="--num_processes"):
        _validate_launch_command(parsed)


def test_fsdp_config_keys_are_ones_accelerate_knows():
    import yaml
    from accelerate.commands.launch import launch_command_parser

    known = {option.lstrip("-") for action in launch_command_parser()._actions for option in action.option_strings}
    fsdp_config = yaml.safe_load(FSDP.read_text())["fsdp_config"]
    assert set(fsdp_config) <= known  # a misspelt key would be dropped without a word
    assert fsdp_config["fsdp_cpu_ram_efficient_loading"] is True and fsdp_config["fsdp_sync_module_states"] is True
    assert "fsdp_activation_checkpointing" in fsdp_config


def test_fsdp_launch_loads_weights_once_and_checkpointing_can_be_turned_off():
    env = _launch_env(FSDP)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true" and env["FSDP_SYNC_MODULE_STATES"] == "true"
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "true"
    assert _launch_env(FSDP, "--fsdp_activation_checkpointing", "false")["FSDP_ACTIVATION_CHECKPOINTING"] == "false"
    assert "ACCELERATE_USE_FSDP" not in _launch_env(DDP)


def test_efficient_loading_starts_the_process_group_before_the_model_loads(monkeypatch):
    import accelerate

    calls = []
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: calls.append(kwargs))
    for key in ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(launch, "cuda_available", lambda: True)  # FSDP shards on an accelerator only
    assert launch.start_process_group_for_fsdp_loading() is False  # DDP or one process: the Trainer starts it
    for key, value in _launch_env(FSDP).items():
        if "FSDP" in key:
            monkeypatch.setenv(key, value)
    assert launch.start_process_group_for_fsdp_loading() is True
    assert calls == [{"timeout": launch.PROCESS_GROUP_TIMEOUT}]
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    assert launch.start_process_group_for_fsdp_loading() is False
    assert len(calls) == 1
    # Without CUDA accelerate trains the FSDP config data-parallel and nothing sends rank 0's
    # weights to the others: every rank reads the checkpoint (tests/engines/test_engine_ranks.py
    # saw two ranks drift 0.014 from one when rank 0 alone loaded).
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    monkeypatch.setattr(launch, "cuda_available", lambda: False)
    assert launch.start_process_group_for_fsdp_loading() is False and len(calls) == 1
